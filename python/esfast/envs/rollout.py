"""Episodes: one policy, one environment, one seed.

An episode's randomness comes from its seed alone: the environment is reset with it and the
action noise is drawn from a generator seeded with it, so an episode gives the same result in
whichever process runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit
from numpy.typing import NDArray

from esfast.envs.mujoco_steps import lean_step
from esfast.policies.protocol import Actor

__all__ = ["Episode", "run_episode"]


# Action noise is drawn in blocks of steps, 16 for an episode's first steps, doubling up to 256:
# one call per block instead of one per step, and little waste in short episodes. The draws are
# sequential, so the noise of a step does not depend on the block sizes.
NOISE_FIRST_BLOCK_STEPS = 16
NOISE_BLOCK_STEPS = 256


@dataclass
class Episode:
    """What one episode gave: return, length and (if recorded) observation sums."""

    ret: float
    length: int
    obs_sum: NDArray[np.float64] | None = None
    obs_sumsq: NDArray[np.float64] | None = None

    @property
    def obs_count(self) -> int:
        return self.length if self.obs_sum is not None else 0


def _checks_done(checker: PassiveEnvChecker) -> bool:
    """Whether a ``PassiveEnvChecker`` has made its one-time step checks (it then only passes steps on).

    gymnasium 1.0-1.3 have one flag for them, ``checked_step``; 1.4 adds ``checked_data_reuse``,
    set at the second step. A checker without ``checked_step`` is never peeled.
    """
    return getattr(checker, "checked_step", False) is True and getattr(checker, "checked_data_reuse", True) is True


def _stepper(env: gym.Env) -> tuple[Callable[[Any], tuple[Any, ...]], int | None]:
    """The innermost ``step`` that behaves like ``env.step``, and the step limit it leaves to us.

    Peels, from the outside in, gymnasium's bookkeeping wrappers that ``gymnasium.make`` adds and
    that change nothing in a step once the environment has been reset: ``TimeLimit`` (its
    ``max_episode_steps`` is returned, for the caller to enforce), ``OrderEnforcing``, and
    ``PassiveEnvChecker`` once it has made its one-time checks. Any other wrapper (or a subclass
    of these) is stepped as it is, with everything inside it.
    When all of them are peeled, an environment with a lean step (:mod:`esfast.envs.mujoco_steps`,
    gymnasium's Humanoid) is stepped with that. Call it after each reset.
    """
    max_steps: int | None = None
    inner: Any = env  # wrappers' attributes (_max_episode_steps, env) are not on gym.Env
    while True:
        kind = type(inner)
        if kind is TimeLimit:
            limit = inner._max_episode_steps
            max_steps = limit if max_steps is None else min(max_steps, limit)
        elif kind is OrderEnforcing:
            pass
        elif kind is PassiveEnvChecker and _checks_done(inner):
            pass
        else:
            return lean_step(inner) or inner.step, max_steps
        inner = inner.env


def run_episode(
    env: gym.Env,
    actor: Actor,
    *,
    seed: int,
    timestep_limit: int | None = None,
    action_noise_std: float = 0.0,
    record_obs: bool = False,
) -> Episode:
    """Runs one episode until it terminates, is truncated or reaches ``timestep_limit`` steps.

    The result is that of ``env.reset(seed=seed)`` followed by ``env.step`` until terminated or
    truncated; the steps skip gymnasium's bookkeeping wrappers (see ``_stepper``), whose time
    limit is enforced here instead.

    Args:
        env: the environment (reset here with ``seed``).
        actor: maps observations to actions.
        seed: episode seed; also seeds the action noise.
        timestep_limit: extra cap on the length (None: the environment's own).
        action_noise_std: std of Gaussian noise added to continuous actions (0: none).
        record_obs: whether to return the sums of the observations seen (for normalization).
    """
    observation, _ = env.reset(seed=seed)
    step, max_steps = _stepper(env)
    limit = timestep_limit if timestep_limit is not None else -1
    env_limit = max_steps if max_steps is not None else -1  # TimeLimit's truncation, >= 1
    noise_rng = np.random.Generator(np.random.PCG64(seed)) if action_noise_std > 0 else None
    shape = env.action_space.shape
    act_dim = int(shape[0]) if noise_rng is not None and shape else 0  # noise applies to Box actions only
    noise_std = np.float32(action_noise_std)
    noise_block = np.empty((0, act_dim), dtype=np.float32)
    recorded: list[NDArray[Any]] = []
    total = 0.0
    length = 0
    row = 0
    while True:
        if record_obs:
            recorded.append(observation)
        noise = None
        if noise_rng is not None:
            if row == len(noise_block):  # the next block of steps' noise, in one call
                rows = min(max(2 * len(noise_block), NOISE_FIRST_BLOCK_STEPS), NOISE_BLOCK_STEPS)
                noise_block = noise_rng.standard_normal((rows, act_dim), dtype=np.float32)
                noise_block *= noise_std
                row = 0
            noise = noise_block[row]
            row += 1
        observation, reward, terminated, truncated, _ = step(actor(observation, noise))
        total += float(reward)
        length += 1
        if terminated or truncated or length == limit or length == env_limit:
            break
    if not record_obs:
        return Episode(total, length)
    stacked = np.asarray(recorded, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # huge observations: the trainer stops on non-finite statistics
        return Episode(total, length, stacked.sum(axis=0), np.square(stacked).sum(axis=0))
