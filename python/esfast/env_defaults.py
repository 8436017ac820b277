"""What to run on an environment named without a config: its shipped config, or defaults for its kind.

``esfast train --env ID`` (and ``esfast-master --env ID``, ``esfast.train(env_id=ID)``) without a
config runs :func:`config_for_env`:

1. ID is the environment of a shipped config (``configs/``): that config, said in one line on the
   console (``esfast train --env CartPole-v1`` is ``esfast train cartpole``);
2. otherwise the defaults for ID's kind (:func:`kind_defaults`), read from the environment's
   spaces and time limit (:func:`env_kind`), the run named after the environment (:func:`run_name`),
   also said in one line.

A config named together with an environment (``esfast train halfcheetah --env Hopper-v5``) is that
config with ``env_id`` replaced; nothing here is used then.

The kinds, and what sets them apart (docs/configs.md gives each value's source):

- ``atari``: an ``ALE/`` id: the paper's Atari settings, those of the shipped Atari configs;
- ``discrete``: flat observations and ``Discrete`` actions (argmax over the outputs): σ 0.1 and an
  Adam step of 0.03, measured on CartPole-v1 and Acrobot-v1;
- ``low-dimensional box``: ``Box`` actions and at most :data:`LOW_DIM_OBS` observations: actions in
  :data:`ACTION_BINS` bins per dimension (when bounded), σ 0.05, step 0.03, measured on Pendulum-v1,
  MountainCarContinuous-v0 and InvertedPendulum-v5;
- ``box``: ``Box`` actions, more observations: the paper's MuJoCo settings (σ 0.02, step 0.01,
  continuous actions), those of the shipped MuJoCo configs.

Every kind but Atari has the paper's 64x64 tanh network, a population of about
:data:`STEPS_PER_GENERATION` steps of full-length episodes (shorter episodes, more pairs), a budget
of :data:`GENERATIONS` generations of full-length episodes (in timesteps: more generations when
episodes end early) and :data:`EVAL_EPISODES` evaluation episodes a generation; an
environment without a time limit gets a cutoff of :data:`CUTOFF_WITHOUT_LIMIT` steps.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from esfast.config import Config, config_from_dict, resolve_config, shipped_config_for_env
from esfast.envs import make_env
from esfast.errors import PolicyError

__all__ = [
    "ACTION_BINS",
    "CUTOFF_WITHOUT_LIMIT",
    "EVAL_EPISODES",
    "GENERATIONS",
    "KINDS",
    "LOW_DIM_OBS",
    "STEPS_PER_GENERATION",
    "EnvKind",
    "config_for_env",
    "env_kind",
    "kind_defaults",
    "population_pairs",
    "run_name",
]

logger = logging.getLogger(__name__)

ATARI, DISCRETE, LOW_DIM_BOX, BOX = "atari", "discrete", "low-dimensional box", "box"
KINDS = (ATARI, DISCRETE, LOW_DIM_BOX, BOX)
ATARI_NAMESPACE = "ALE/"

LOW_DIM_OBS = 4  # Box tasks with at most this many observations get the low-dimensional settings
ACTION_BINS = 9  # per action dimension, for low-dimensional Box tasks with bounded actions
STEPS_PER_GENERATION = 40_000  # episodes a generation x the episode's time limit, about
MIN_PAIRS, MAX_PAIRS = 20, 100
GENERATIONS = 100  # the budget: this many generations' worth of full-length episodes, in timesteps
EVAL_EPISODES = 5
CUTOFF_WITHOUT_LIMIT = 1000  # steps, for an environment whose episodes have no time limit

# Per kind of flat-observation task: (σ, Adam step, calc_obstat_prob).
_MLP_SETTINGS: dict[str, tuple[float, float, float]] = {
    DISCRETE: (0.1, 0.03, 1.0),
    LOW_DIM_BOX: (0.05, 0.03, 1.0),
    BOX: (0.02, 0.01, 0.01),
}

# The paper's Atari settings, as the shipped Atari configs have them (a test compares the two).
_ATARI_SECTIONS: dict[str, Any] = {
    "config": {
        "calc_obstat_prob": 0.0,
        "episodes_per_batch": 40,
        "eval_prob": 0.003,
        "l2coeff": 0.005,
        "noise_stdev": 0.005,
        "snapshot_freq": 20,
        "return_proc_mode": "centered_rank",
        "episode_cutoff_mode": 5000,
    },
    "optimizer": {"type": "adam", "args": {"stepsize": 0.01}},
    "policy": {"type": "AtariPolicy", "args": {"ac_noise_std": 0.0, "connection_type": "ff", "hidden_dims": [256], "nonlin_type": "relu"}},
    "atari": {},  # the standard preprocessing: AtariSettings' defaults
    "run": {"seed": 0, "timesteps": 10_000_000, "noise_table_size": 250_000_000, "eval_episodes": 1},
}


@dataclass(frozen=True)
class EnvKind:
    """What the defaults depend on: the kind of task, its sizes and its time limit.

    Attributes:
        name: one of :data:`KINDS`.
        obs_dim: the length of the (flat) observation; None for Atari.
        actions: the number of discrete actions, or of action dimensions; None for Atari.
        bounded: whether every dimension of a ``Box`` action space has finite bounds.
        max_episode_steps: the environment's time limit (None: none, or Atari).
    """

    name: str
    obs_dim: int | None = None
    actions: int | None = None
    bounded: bool = False
    max_episode_steps: int | None = None

    def describe(self) -> str:
        """E.g. ``discrete actions (4 observations, 2 actions, episodes of up to 500 steps)``."""
        if self.name == ATARI:
            return "an Atari game"
        plural = "" if self.actions == 1 else "s"
        if self.name == DISCRETE:
            what, actions = "discrete actions", f"{self.actions} action{plural}"
        else:
            what = "Box actions on few observations" if self.name == LOW_DIM_BOX else "Box actions"
            actions = f"{self.actions} action dimension{plural}"
        limit = f"episodes of up to {self.max_episode_steps} steps" if self.max_episode_steps is not None else "no time limit"
        return f"{what} ({self.obs_dim} observations, {actions}, {limit})"


def run_name(env_id: str) -> str:
    """The ``exp_prefix`` of a run named after its environment: ``CartPole-v1`` -> ``cartpole-v1``.

    Lower case; each run of characters other than letters, digits, ``.``, ``_`` and ``-`` (the
    ``/`` of a namespace) becomes one ``-``.
    """
    name = re.sub(r"[^a-z0-9._-]+", "-", env_id.lower()).strip("-.")
    return name[:200] or "run"


def population_pairs(max_episode_steps: int) -> int:
    """Antithetic pairs a generation: about :data:`STEPS_PER_GENERATION` steps of full-length
    episodes, within [:data:`MIN_PAIRS`, :data:`MAX_PAIRS`] (500-step episodes: 40 pairs)."""
    return min(MAX_PAIRS, max(MIN_PAIRS, round(STEPS_PER_GENERATION / (2 * max_episode_steps))))


def env_kind(env_id: str, env_module: str | None = None) -> EnvKind:
    """The kind of ``env_id``, read from its spaces and time limit (the environment is made and
    closed here, after importing ``env_module``; an ``ALE/`` id is Atari without making it).

    Raises:
        EnvError: the environment cannot be made.
        PolicyError: spaces no esfast policy takes (one line).
    """
    if env_id.startswith(ATARI_NAMESPACE):
        return EnvKind(ATARI)
    env = make_env(env_id, env_module)
    try:
        observation_space, action_space = env.observation_space, env.action_space
        limit = env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        raise PolicyError(
            f"no defaults for {env_id}: esfast's MLP policy needs a flat Box observation space, got {observation_space} (write a config)"
        )
    obs_dim = int(observation_space.shape[0])
    if isinstance(action_space, gym.spaces.Discrete):
        return EnvKind(DISCRETE, obs_dim, int(action_space.n), False, limit)
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        bounded = bool(np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all())
        return EnvKind(LOW_DIM_BOX if obs_dim <= LOW_DIM_OBS else BOX, obs_dim, int(action_space.shape[0]), bounded, limit)
    raise PolicyError(f"no defaults for {env_id}: esfast's policies take Discrete or flat Box actions, got {action_space}")


def kind_defaults(env_id: str, kind: EnvKind, env_module: str | None = None) -> Config:
    """The config esfast runs on ``env_id`` without one: the defaults of its kind (see the module).

    Raises:
        ConfigError: an ``env_id`` or ``env_module`` that is not a valid name.
    """
    named = {"env_id": env_id, "env_module": env_module, "exp_prefix": run_name(env_id)}
    if kind.name == ATARI:
        return config_from_dict({**named, **_ATARI_SECTIONS})
    sigma, stepsize, obstat_prob = _MLP_SETTINGS[kind.name]
    binned = kind.name == LOW_DIM_BOX and kind.bounded
    steps = kind.max_episode_steps if kind.max_episode_steps is not None else CUTOFF_WITHOUT_LIMIT
    episodes = 2 * population_pairs(steps)
    return config_from_dict(
        {
            **named,
            "config": {
                "noise_stdev": sigma,
                "episodes_per_batch": episodes,
                "calc_obstat_prob": obstat_prob,
                "l2coeff": 0.005,
                "snapshot_freq": 20,
                "return_proc_mode": "centered_rank",
                "episode_cutoff_mode": "env_default" if kind.max_episode_steps is not None else CUTOFF_WITHOUT_LIMIT,
            },
            "optimizer": {"type": "adam", "args": {"stepsize": stepsize}},
            "policy": {
                "type": "MLPPolicy",
                "args": {
                    "hidden_dims": [64, 64],
                    "nonlin_type": "tanh",
                    "ac_bins": f"uniform:{ACTION_BINS}" if binned else "continuous:",
                    "ac_noise_std": 0.0 if binned else 0.01,  # binned actions take no action noise
                },
            },
            # GENERATIONS generations of full-length episodes; more generations when episodes end early.
            "run": {"seed": 0, "timesteps": GENERATIONS * episodes * steps, "eval_episodes": EVAL_EPISODES},
        }
    )


def _summary(config: Config) -> str:
    """The settings the console line names: network, population, σ, step and budget."""
    run = config.run
    budget = f"{run.generations} generations" if run.generations is not None else f"{run.timesteps:,} timesteps"
    bins = f", actions in {config.policy.ac_bins.partition(':')[2]} bins" if config.policy.ac_bins.startswith("uniform:") else ""
    network = "x".join(map(str, config.policy.hidden_dims))
    return (
        f"{config.policy.type} {network} {config.policy.nonlin_type}{bins}, {config.pop_pairs} pairs, σ {config.es.noise_stdev:g},"
        f" Adam step {config.optimizer.stepsize:g}, {budget}"
    )


def config_for_env(env_id: str, env_module: str | None = None) -> Config:
    """The config of ``esfast train --env ID`` without a config: the shipped one for ``env_id``,
    else the defaults of its kind; either way said in one line (INFO, logger ``esfast.env_defaults``).

    ``env_id`` is checked and an old gym MuJoCo id mapped first, as in any config.

    Raises:
        ConfigError: an ``env_id`` or ``env_module`` that is not a valid name.
        EnvError: the environment cannot be made (kind defaults only: they need its spaces).
        PolicyError: spaces no esfast policy takes.
    """
    checked = config_from_dict({"env_id": env_id, "env_module": env_module})  # the id's checks, and the 2017 ids mapped
    env_id = checked.env_id
    name = shipped_config_for_env(env_id)
    if name is not None:
        config = resolve_config(name)
        logger.info("esfast: %s has a shipped config, %s: using it (esfast train %s; docs/configs.md)", env_id, name, name)
        return config if env_module is None else dataclasses.replace(config, env_module=env_module)
    kind = env_kind(env_id, env_module)
    config = kind_defaults(env_id, kind, env_module)
    logger.info("esfast: no shipped config for %s: the defaults for %s: %s (docs/configs.md)", env_id, kind.describe(), _summary(config))
    return config
