"""A tiny environment registered from a user module, for tests of ``--env-module``.

``EsfastTest/Reach-v0``: the observation is a target point in [-1, 1]^2 (fixed per episode by the
reset seed); the action is a point in [-1, 1]^2; the reward is minus the squared distance. Ten
steps per episode, so a perfect policy scores 0. Its option ``dims`` (2) sets the dimension of the
points, for tests of ``env_kwargs``.

``EsfastTest/SlowReach-v0``: the same task with each step taking 20 ms of wall time (sleeping, not
computing), so that distributed tests can stop a process in the middle of a generation.

``EsfastTest/LongEpisode-v0``: the same task in one step of 3 s, so that a pair of episodes lasts
longer than the liveness of a silent peer (5 s).

``EsfastTest/VariableReach-v0``: the same task in episodes of varying length: one ends after 2 to
30 steps (drawn from the reset seed), or as soon as the action comes within 0.3 of the target, so
that lengths depend on the policy too (for tests of ``config.timesteps_per_batch``).

``EsfastTest/Overflow-v0``: the same task; from the sixth episode of an environment on, it is seen
through observations of 1e200 times the target, whose squares overflow float64, so the
observation statistics of a run in one process become non-finite in its second generation
(of four pair episodes and one evaluation episode).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np


class ReachEnv(gym.Env):
    def __init__(self, dims: int = 2) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(dims,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(dims,), dtype=np.float32)
        self.target = np.zeros(dims, dtype=np.float32)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-1, 1, size=self.target.shape).astype(np.float32)
        self.steps = 0
        return self.target.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        reward = -float(np.sum((np.asarray(action) - self.target) ** 2))
        return self.target.copy(), reward, False, self.steps >= 10, {}


class SlowReachEnv(ReachEnv):
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        time.sleep(0.02)
        return super().step(action)


class LongEpisodeEnv(ReachEnv):
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        time.sleep(3.0)
        observation, reward, _, _, info = super().step(action)
        return observation, reward, False, True, info


class VariableReachEnv(ReachEnv):
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        observation, info = super().reset(seed=seed, options=options)
        self.limit = int(self.np_random.integers(2, 31))
        return observation, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        observation, reward, _, _, info = super().step(action)
        return observation, reward, reward > -0.09, self.steps >= self.limit, info


class OverflowEnv(ReachEnv):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.episodes = 0

    def _scale(self) -> float:
        return 1e200 if self.episodes > 5 else 1.0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self.episodes += 1
        observation, info = super().reset(seed=seed, options=options)
        return observation.astype(np.float64) * self._scale(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = super().step(action)
        return observation.astype(np.float64) * self._scale(), reward, terminated, truncated, info


if "EsfastTest/Reach-v0" not in gym.registry:
    gym.register("EsfastTest/Reach-v0", entry_point=ReachEnv)
    gym.register("EsfastTest/SlowReach-v0", entry_point=SlowReachEnv)
    gym.register("EsfastTest/LongEpisode-v0", entry_point=LongEpisodeEnv)
    gym.register("EsfastTest/Overflow-v0", entry_point=OverflowEnv)
    gym.register("EsfastTest/VariableReach-v0", entry_point=VariableReachEnv)
