"""The environment probe: a fingerprint that is the same wherever the environment simulates the same, and the step limit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from esfast.envs import make_env
from esfast.envs.probe import FINGERPRINT_STEPS, _action, fingerprint, probe_environment, step_limit


def test_the_fingerprint_is_a_function_of_the_environment() -> None:
    first = probe_environment("CartPole-v1")
    assert first == probe_environment("CartPole-v1") and first.step_limit == 500 and len(first.fingerprint) == 32
    env = make_env("CartPole-v1")
    try:
        env.reset(seed=1)
        for _ in range(5):
            env.step(env.action_space.sample())
        assert fingerprint(env) == first.fingerprint  # whatever the environment did before
    finally:
        env.close()
    assert probe_environment("Pendulum-v1").fingerprint != first.fingerprint


def test_other_rewards_give_another_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    import custom_envs

    honest = probe_environment("EsfastTest/Reach-v0", "custom_envs")
    assert honest.step_limit is None  # registered without max_episode_steps: the environment ends itself
    step = custom_envs.ReachEnv.step

    def shifted(self: custom_envs.ReachEnv, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = step(self, action)
        return observation, reward + 1e-12, terminated, truncated, info

    monkeypatch.setattr(custom_envs.ReachEnv, "step", shifted)
    assert probe_environment("EsfastTest/Reach-v0", "custom_envs").fingerprint != honest.fingerprint


def test_the_step_limit_is_the_smallest_outer_time_limit() -> None:
    env = gym.wrappers.TimeLimit(make_env("CartPole-v1"), max_episode_steps=50)
    try:
        assert step_limit(env) == 50
        assert step_limit(gym.wrappers.TimeLimit(gym.wrappers.ClipAction(make_env("Pendulum-v1")), 7)) == 7
        assert step_limit(gym.wrappers.ClipAction(make_env("Pendulum-v1"))) is None  # behind another wrapper: not counted
    finally:
        env.close()


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Discrete(3, start=-1),
        gym.spaces.Box(-2.0, 3.0, shape=(2, 3), dtype=np.float32),
        gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64),
        gym.spaces.Box(0, 9, shape=(5,), dtype=np.int64),
        gym.spaces.MultiDiscrete([2, 5, 7]),
    ],
)
def test_the_probes_actions_are_fixed_and_in_the_space(space: gym.Space) -> None:
    actions = [_action(space, step) for step in range(FINGERPRINT_STEPS)]
    assert all(space.contains(a) for a in actions)
    assert all(np.array_equal(a, _action(space, step)) for step, a in enumerate(actions))
    assert len({np.asarray(a).tobytes() for a in actions}) > 1
