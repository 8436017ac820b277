"""What a run's environment does on this machine, measured the same way on every machine.

A worker host whose gymnasium, MuJoCo or ALE simulates differently from the master's gives other
results for the same task, and the determinism promise breaks without a word. So the master and
every host run one fixed episode (a fixed reset seed, fixed actions, at most
``FINGERPRINT_STEPS`` steps) in a fresh environment and hash everything it gives: the spaces,
every observation, reward and termination flag. Equal fingerprints do not prove that every
episode agrees (audits check that); different ones prove that the hosts differ.

The same probe gives the episode length limit of the environment's own ``TimeLimit``, which the
master uses to bound the lengths a host reports.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from esfast.config import AtariSettings
from esfast.envs import make_env

__all__ = ["FINGERPRINT_SEED", "FINGERPRINT_STEPS", "EnvironmentProbe", "fingerprint", "probe_environment", "step_limit"]

FINGERPRINT_SEED = 20170310  # the reset seed of the probe's episode
FINGERPRINT_STEPS = 64  # steps of the probe's episode at most (fewer if it ends first)
DIGEST_CHARACTERS = 32  # a SHA-256 prefix, in hex


class EnvironmentProbe(NamedTuple):
    """The fingerprint of an environment and the step limit of its own ``TimeLimit`` (None: none)."""

    fingerprint: str
    step_limit: int | None


def probe_environment(
    env_id: str, env_module: str | None = None, *, atari: AtariSettings | None = None, env_kwargs: Mapping[str, Any] | None = None
) -> EnvironmentProbe:
    """Makes a fresh environment of the run (with the config's ``env_kwargs``), probes it and closes it.

    Raises:
        EnvError: the environment cannot be made here.
    """
    env = make_env(env_id, env_module, atari=atari, env_kwargs=env_kwargs)
    try:
        return EnvironmentProbe(fingerprint(env), step_limit(env))
    finally:
        env.close()


def step_limit(env: gym.Env[Any, Any]) -> int | None:
    """The smallest ``max_episode_steps`` of the ``TimeLimit`` wrappers on the outside of ``env``
    (through the bookkeeping wrappers ``gymnasium.make`` adds, which do not change a step), or None.

    An episode that :func:`esfast.envs.rollout.run_episode` runs is never longer.
    """
    limit: int | None = None
    inner: Any = env
    while isinstance(inner, (TimeLimit, OrderEnforcing, PassiveEnvChecker)):
        if isinstance(inner, TimeLimit):
            steps = int(inner._max_episode_steps)
            limit = steps if limit is None else min(limit, steps)
        inner = inner.env
    return limit


def fingerprint(env: gym.Env[Any, Any]) -> str:
    """A digest of the spaces and of one fixed episode of ``env`` (which is reset and stepped)."""
    digest = hashlib.sha256()
    digest.update(repr(env.observation_space).encode())
    digest.update(repr(env.action_space).encode())
    observation, _ = env.reset(seed=FINGERPRINT_SEED)
    env.action_space.seed(FINGERPRINT_SEED)
    _add(digest, observation)
    for step in range(FINGERPRINT_STEPS):
        observation, reward, terminated, truncated, _ = env.step(_action(env.action_space, step))
        _add(digest, observation)
        digest.update(np.float64(reward).tobytes())
        digest.update(bytes([bool(terminated), bool(truncated)]))
        if terminated or truncated:
            break
    return digest.hexdigest()[:DIGEST_CHARACTERS]


def _add(digest: Any, value: Any) -> None:
    """Adds an observation: arrays by dtype, shape and bytes; dicts and tuples item by item."""
    if isinstance(value, dict):
        for key in sorted(value):
            digest.update(repr(key).encode())
            _add(digest, value[key])
    elif isinstance(value, tuple):
        for item in value:
            _add(digest, item)
    else:
        array = np.ascontiguousarray(np.asarray(value))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())


def _fraction(step: int, index: int) -> float:
    """A fixed number in [0, 1] for each step and action element, the same on every machine."""
    return ((7 * step + 3 * index) % 11) / 10


def _action(space: gym.Space[Any], step: int) -> Any:
    """The probe's action at ``step``: fixed values across boxes and discrete spaces; other spaces
    sample from their generator, seeded at the reset."""
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(space.start + (7 * step + 3) % int(space.n))
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0).astype(np.float64)
        high = np.where(np.isfinite(space.high), space.high, 1.0).astype(np.float64)
        fractions = np.array([_fraction(step, i) for i in range(math.prod(space.shape))], dtype=np.float64).reshape(space.shape)
        return (low + (high - low) * fractions).astype(space.dtype)
    if isinstance(space, gym.spaces.MultiDiscrete):
        fractions = np.array([_fraction(step, i) for i in range(space.nvec.size)]).reshape(space.nvec.shape)
        return (space.start + np.minimum((fractions * space.nvec).astype(np.int64), space.nvec - 1)).astype(space.dtype)
    return space.sample()
