"""Environments and episodes: seeds, limits, observation sums, custom modules, bad ids."""

from __future__ import annotations

import numpy as np
import pytest

from esfast.config import PolicySettings
from esfast.policies import MLPPolicy
from esfast.rollout import EnvError, make_env, run_episode


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


def test_bad_environments() -> None:
    with pytest.raises(EnvError, match="cannot make environment 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(EnvError, match="cannot import env_module 'no_such_module_xyz'"):
        make_env("CartPole-v1", "no_such_module_xyz")
