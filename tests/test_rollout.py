"""Environments and episodes: seeds, limits, observation sums, custom modules, bad ids."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from esfast.config import PolicySettings
from esfast.envs import make_env
from esfast.envs.rollout import run_episode
from esfast.errors import EnvError
from esfast.policies import MLPPolicy


@pytest.fixture
def cartpole():
    env = make_env("CartPole-v1")
    yield env
    env.close()


def test_episode_depends_only_on_seed(cartpole) -> None:
    policy = MLPPolicy(cartpole.observation_space, cartpole.action_space, PolicySettings(hidden_dims=(4,)))
    theta = policy.initial_theta(np.random.default_rng(0)) * 10
    actor = policy.actor(theta, np.zeros(4, np.float32), np.ones(4, np.float32))
    first = run_episode(cartpole, actor, seed=11)
    run_episode(cartpole, actor, seed=12)
    again = run_episode(cartpole, actor, seed=11)
    assert (first.ret, first.length) == (again.ret, again.length)
    assert first.length == first.ret  # CartPole pays 1 per step


def test_timestep_limit_and_observation_sums(cartpole) -> None:
    policy = MLPPolicy(cartpole.observation_space, cartpole.action_space, PolicySettings(hidden_dims=(4,)))
    theta = np.zeros(policy.num_params, np.float32)
    actor = policy.actor(theta, np.zeros(4, np.float32), np.ones(4, np.float32))
    episode = run_episode(cartpole, actor, seed=3, timestep_limit=5, record_obs=True)
    assert episode.length == 5 and episode.obs_count == 5
    observations = [cartpole.reset(seed=3)[0]]
    for _ in range(4):
        observations.append(cartpole.step(0)[0])
    stacked = np.array(observations, dtype=np.float64)
    np.testing.assert_allclose(episode.obs_sum, stacked.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(episode.obs_sumsq, np.square(stacked).sum(axis=0), rtol=1e-12)


def test_action_noise_is_seeded() -> None:
    env = make_env("Pendulum-v1")
    policy = MLPPolicy(env.observation_space, env.action_space, PolicySettings(hidden_dims=(4,)))
    actor = policy.actor(policy.initial_theta(np.random.default_rng(0)), np.zeros(3, np.float32), np.ones(3, np.float32))
    a = run_episode(env, actor, seed=5, action_noise_std=0.5, timestep_limit=50)
    b = run_episode(env, actor, seed=5, action_noise_std=0.5, timestep_limit=50)
    c = run_episode(env, actor, seed=5, timestep_limit=50)
    assert a.ret == b.ret and a.ret != c.ret
    env.close()


def test_custom_environment_module() -> None:
    env = make_env("EsfastTest/Reach-v0", "custom_envs")
    assert env.observation_space.shape == (2,)
    env.close()


def test_env_kwargs_reach_the_environment_and_an_option_it_does_not_take_is_one_line() -> None:
    env = make_env("EsfastTest/Reach-v0", "custom_envs", env_kwargs={"dims": 5})
    assert env.observation_space.shape == env.action_space.shape == (5,)
    env.close()
    env = make_env("Ant-v5", env_kwargs={"include_cfrc_ext_in_observation": False})
    assert env.observation_space.shape == (27,)  # 105 with the contact forces
    env.close()
    with pytest.raises(EnvError) as info:
        make_env("EsfastTest/Reach-v0", "custom_envs", env_kwargs={"dimz": 5})
    message = str(info.value)
    assert message.startswith("cannot make environment 'EsfastTest/Reach-v0' with env_kwargs {'dimz': 5}: ") and "dimz" in message
    assert "\n" not in message


def test_bad_environments() -> None:
    with pytest.raises(EnvError, match="cannot make environment 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(EnvError, match="cannot import env_module 'no_such_module_xyz'"):
        make_env("CartPole-v1", "no_such_module_xyz")


def reference_episode(env, actor, seed: int, timestep_limit: int | None, noise_std: float) -> tuple[float, int]:
    """run_episode's contract, written plainly: every step through all of env's wrappers, the
    action noise drawn one step at a time from the episode seed's generator."""
    observation, _ = env.reset(seed=seed)
    rng = np.random.Generator(np.random.PCG64(seed))
    total, length = 0.0, 0
    while True:
        noise = rng.standard_normal(actor.policy.act_dim, dtype=np.float32) * np.float32(noise_std) if noise_std > 0 else None
        observation, reward, terminated, truncated, _ = env.step(actor(observation, noise))
        total += float(reward)
        length += 1
        if terminated or truncated or length == timestep_limit:
            return total, length


@pytest.mark.parametrize(
    ("env_id", "make_kwargs", "timestep_limit", "noise_std"),
    [
        ("Pendulum-v1", {}, None, 0.3),  # never terminates: TimeLimit's 200 steps end it
        ("Pendulum-v1", {"max_episode_steps": 37}, None, 0.3),
        ("Pendulum-v1", {}, 300, 0.0),  # the environment's limit is the shorter
        ("Pendulum-v1", {}, 21, 0.1),
        ("CartPole-v1", {}, None, 0.0),
        ("CartPole-v1", {"max_episode_steps": 9}, None, 0.0),
        ("Humanoid-v5", {}, None, 0.1),  # lean steps (esfast.envs.mujoco_steps) once the checker has checked
        ("Humanoid-v5", {"terminate_when_unhealthy": False, "max_episode_steps": 60}, None, 0.1),
    ],
)
def test_episode_equals_plain_loop(env_id, make_kwargs, timestep_limit, noise_std) -> None:
    env = make_env(env_id, **make_kwargs)
    policy = MLPPolicy(env.observation_space, env.action_space, PolicySettings(hidden_dims=(8,)))
    actor = policy.actor(
        policy.initial_theta(np.random.default_rng(1)) * 30, np.zeros(policy.obs_dim, np.float32), np.ones(policy.obs_dim, np.float32)
    )
    for seed in (0, 1, 2):
        episode = run_episode(env, actor, seed=seed, timestep_limit=timestep_limit, action_noise_std=noise_std)
        assert (episode.ret, episode.length) == reference_episode(env, actor, seed, timestep_limit, noise_std)
    env.close()


def test_other_wrappers_are_stepped() -> None:
    import gymnasium as gym

    env = gym.wrappers.TransformReward(make_env("Pendulum-v1", max_episode_steps=50), lambda r: 2 * r + 1)
    policy = MLPPolicy(env.observation_space, env.action_space, PolicySettings(hidden_dims=(4,)))
    actor = policy.actor(policy.initial_theta(np.random.default_rng(2)), np.zeros(3, np.float32), np.ones(3, np.float32))
    episode = run_episode(env, actor, seed=4)
    assert (episode.ret, episode.length) == reference_episode(env, actor, 4, None, 0.0)
    assert episode.length == 50  # the TimeLimit inside the outer wrapper still ends the episode
    env.close()


def test_long_episode_noise_blocks() -> None:
    # Noise blocks of 16, 32, ... 256 steps: past several block boundaries the draws still follow
    # the per-step sequence.
    env = make_env("Pendulum-v1", max_episode_steps=700)
    policy = MLPPolicy(env.observation_space, env.action_space, PolicySettings(hidden_dims=(4,)))
    actor = policy.actor(policy.initial_theta(np.random.default_rng(3)), np.zeros(3, np.float32), np.ones(3, np.float32))
    episode = run_episode(env, actor, seed=8, action_noise_std=0.5)
    assert (episode.ret, episode.length) == reference_episode(env, actor, 8, None, 0.5)
    assert episode.length == 700
    env.close()


def test_stepper_peels_only_bookkeeping_wrappers() -> None:
    import gymnasium as gym

    from esfast.envs.rollout import _stepper

    env = make_env("CartPole-v1", max_episode_steps=40)
    env.reset(seed=0)
    step, limit = _stepper(env)
    assert limit == 40 and step.__self__ is env.env.env  # the checker has not checked yet
    env.step(0)
    env.step(0)
    step, limit = _stepper(env)
    assert limit == 40 and step.__self__ is env.unwrapped
    outer = gym.wrappers.ClipReward(env, -0.5, 0.5)
    step, limit = _stepper(outer)
    assert limit is None and step.__self__ is outer
    env.close()


def test_mujoco_warnings_go_to_logging_not_to_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="esfast.envs"):
        make_env("HalfCheetah-v5").close()  # gymnasium's model uses a deprecated MuJoCo attribute
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert "MuJoCo: compiler attribute 'settotalmass' is deprecated" in caplog.text
