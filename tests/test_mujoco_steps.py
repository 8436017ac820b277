"""Lean MuJoCo steps: bit for bit what ``env.step`` returns, and only where they apply."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from esfast.envs import make_env, mujoco_steps
from esfast.envs.mujoco_steps import lean_step
from esfast.envs.rollout import _stepper


def compare_with_env_step(episodes: int, steps: int, scale: float, **options: object) -> int:
    """Plays the same seeds and actions through Humanoid-v5's ``env.step`` and its lean step.

    The lean step is made directly, whatever the installed gymnasium: these tests are what
    ``VERIFIED_GYMNASIUM`` records a release as having passed. Returns the steps compared.
    """
    plain, lean = make_env("Humanoid-v5", **options), make_env("Humanoid-v5", **options)
    compared = 0
    for seed in range(episodes):
        actions = np.random.default_rng(seed).uniform(-scale, scale, (steps, plain.action_space.shape[0]))
        first, _ = plain.reset(seed=seed)
        again, _ = lean.reset(seed=seed)
        np.testing.assert_array_equal(first, again)
        step = mujoco_steps._humanoid_v5(lean.unwrapped)
        for action in actions:
            expected = plain.step(action)
            observation, reward, terminated, truncated, info = step(action)
            assert observation.dtype == expected[0].dtype
            np.testing.assert_array_equal(observation, expected[0])
            assert type(reward) is type(expected[1]) and reward == expected[1]
            assert (terminated, truncated, info) == (expected[2], False, {})
            compared += 1
            if terminated:
                break
    plain.close()
    lean.close()
    return compared


def test_humanoid_default_options() -> None:
    # Random torques at several scales: the humanoid falls (terminated) after 20-60 steps.
    assert compare_with_env_step(episodes=6, steps=400, scale=0.4) > 100
    assert compare_with_env_step(episodes=3, steps=400, scale=0.02) > 60


@pytest.mark.parametrize(
    "options",
    [
        {
            "forward_reward_weight": 2.0,
            "ctrl_cost_weight": 0.3,
            "contact_cost_weight": 1e-3,
            "contact_cost_range": (0.0, 0.5),
            "healthy_reward": 3.0,
            "healthy_z_range": (0.8, 2.5),
            "frame_skip": 3,
            "exclude_current_positions_from_observation": False,
            "include_cinert_in_observation": False,
            "include_cfrc_ext_in_observation": False,
        },
        {
            "reset_noise_scale": 0.1,
            "include_cvel_in_observation": False,
            "include_qfrc_actuator_in_observation": False,
            "include_cfrc_ext_in_observation": 1,  # not ``True``: gymnasium leaves the part out
            "disable_env_checker": True,  # ... but not out of its observation space
            "contact_cost_weight": 1e-3,
            "contact_cost_range": (1, 2),  # int bounds, both reached
        },
        {"contact_cost_weight": 1e-3, "contact_cost_range": (None, 0.5)},  # np.clip's open bound
    ],
)
def test_humanoid_other_options(options: dict[str, object]) -> None:
    # Each option the step's results depend on, away from its default; no termination, so the
    # episodes run on through falls and floor contacts.
    assert compare_with_env_step(episodes=2, steps=150, scale=0.4, terminate_when_unhealthy=False, **options) == 300


def test_applies_only_under_verified_gymnasium(monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env("Humanoid-v5").unwrapped
    env.reset(seed=0)
    installed = tuple(int(part) for part in gym.__version__.split(".")[:2])
    assert (lean_step(env) is not None) == (installed in mujoco_steps.VERIFIED_GYMNASIUM)
    for version in ("0.29.1", "1.99.0", "2.0.0", "1.5.0rc1", "nightly"):
        monkeypatch.setattr(gym, "__version__", version)
        assert lean_step(env) is None
    monkeypatch.setattr(gym, "__version__", "1.4.0.post1")
    assert lean_step(env) is not None
    env.close()


def test_applies_only_to_listed_classes_without_rendering() -> None:
    class Variant(HumanoidEnv):
        pass

    cartpole = gym.make("CartPole-v1").unwrapped
    variant = Variant()
    drawn = gym.make("Humanoid-v5", render_mode="rgb_array").unwrapped
    for env in (cartpole, variant, drawn):
        env.reset(seed=0)
        assert lean_step(env) is None
        env.close()


def test_rollouts_use_it_and_it_checks_actions() -> None:
    env = make_env("Humanoid-v5")
    env.reset(seed=0)
    env.step(np.zeros(17))  # the checker's one-time checks; then all wrappers can be peeled
    env.step(np.zeros(17))
    env.reset(seed=1)
    step, limit = _stepper(env)
    assert limit == 1000 and getattr(step, "__self__", None) is None  # the lean step, a plain function
    with pytest.raises(ValueError, match=r"Expected \(17,\), found \(3,\)"):
        step(np.zeros(3))
    env.close()
