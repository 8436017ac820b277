"""A gymnasium environment whose steps sleep: episodes that take wall time but almost no CPU.

Importing this module registers ``EsfastBench/Sleep-v0`` (``bench_scaling.py`` passes the module
as the run's ``env_module``, so worker processes import it too). Every episode lasts exactly
``EPISODE_STEPS`` steps of ``STEP_SECONDS`` each; both are read from the environment variables
``ESFAST_SLEEP_STEP_SECONDS`` and ``ESFAST_SLEEP_EPISODE_STEPS`` when the module is imported, so
a benchmark sets them once for itself and every worker it starts.
"""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "EsfastBench/Sleep-v0"
STEP_SECONDS = float(os.environ.get("ESFAST_SLEEP_STEP_SECONDS", "0.01"))
EPISODE_STEPS = int(os.environ.get("ESFAST_SLEEP_EPISODE_STEPS", "5"))
OBS_DIM = 4


class SleepEnv(gym.Env[np.ndarray, np.ndarray]):
    """Observations are the step count in every coordinate; the reward is the first action."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self, step_seconds: float = STEP_SECONDS, episode_steps: int = EPISODE_STEPS) -> None:
        self.step_seconds = step_seconds
        self.episode_steps = episode_steps
        self.steps = 0

    def _observation(self) -> np.ndarray:
        return np.full(OBS_DIM, self.steps, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.steps = 0
        return self._observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        time.sleep(self.step_seconds)
        self.steps += 1
        return self._observation(), float(np.asarray(action).reshape(-1)[0]), self.steps >= self.episode_steps, False, {}


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=SleepEnv)
