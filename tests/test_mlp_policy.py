"""MLPPolicy and ObStat against plain numpy computations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from esfast.config import PolicySettings
from esfast.errors import PolicyError
from esfast.policies import MLPPolicy, ObStat

BOX_OBS = gym.spaces.Box(-np.inf, np.inf, shape=(5,), dtype=np.float32)


def reference_forward(policy: MLPPolicy, theta: np.ndarray, obs: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    x = np.clip((obs.astype(np.float32) - mean) / std, -5, 5)
    for index, layer in enumerate(policy.layers):
        w = theta[layer.weight].reshape(layer.inputs, layer.outputs)
        x = x @ w + theta[layer.bias]
        if index < len(policy.layers) - 1:
            x = np.tanh(x)
    return x


def test_parameter_count_and_init() -> None:
    policy = MLPPolicy(BOX_OBS, gym.spaces.Box(-2, 2, shape=(3,), dtype=np.float32), PolicySettings(hidden_dims=(8, 4)))
    assert policy.num_params == 5 * 8 + 8 + 8 * 4 + 4 + 4 * 3 + 3
    theta = policy.initial_theta(np.random.default_rng(0))
    np.testing.assert_array_equal(theta, policy.initial_theta(np.random.default_rng(0)))
    last = policy.layers[-1]
    columns = theta[last.weight].reshape(last.inputs, last.outputs)
    np.testing.assert_allclose(np.linalg.norm(columns, axis=0), 0.01, rtol=1e-5)
    assert not theta[last.bias].any()


def test_continuous_actions_in_bounds_match_reference() -> None:
    action_space = gym.spaces.Box(np.array([-2.0, 0.0, -1.0], np.float32), np.array([2.0, 1.0, 3.0], np.float32))
    policy = MLPPolicy(BOX_OBS, action_space, PolicySettings(hidden_dims=(8, 8)))
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(policy.num_params).astype(np.float32)
    mean, std = rng.standard_normal(5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32)
    actor = policy.actor(theta, mean, std)
    for _ in range(20):
        obs = rng.standard_normal(5) * 10
        action = actor(obs)
        expected = (action_space.low + action_space.high) / 2 + (action_space.high - action_space.low) / 2 * np.tanh(
            reference_forward(policy, theta, obs, mean, std)
        )
        np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)
        assert action_space.contains(action.astype(np.float32))


def test_action_noise_stays_in_bounds() -> None:
    space = gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32)
    policy = MLPPolicy(BOX_OBS, space, PolicySettings(hidden_dims=(4,)))
    actor = policy.actor(np.full(policy.num_params, 3, np.float32), np.zeros(5, np.float32), np.ones(5, np.float32))
    action = actor(np.ones(5), noise=np.array([10.0, -10.0], np.float32))
    np.testing.assert_array_equal(action, [1.0, -1.0])


def test_discrete_is_argmax() -> None:
    policy = MLPPolicy(BOX_OBS, gym.spaces.Discrete(4), PolicySettings(hidden_dims=(6,)))
    rng = np.random.default_rng(2)
    theta = rng.standard_normal(policy.num_params).astype(np.float32)
    actor = policy.actor(theta, np.zeros(5, np.float32), np.ones(5, np.float32))
    for _ in range(10):
        obs = rng.standard_normal(5)
        assert actor(obs) == int(np.argmax(reference_forward(policy, theta, obs, np.zeros(5, np.float32), np.ones(5, np.float32))))


@pytest.mark.parametrize(("bins", "values"), [("uniform:5", [-1, -0.5, 0, 0.5, 1]), ("custom:-1,0.2,1", [-1, 0.2, 1])])
def test_binned_actions(bins: str, values: list[float]) -> None:
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
    policy = MLPPolicy(BOX_OBS, space, PolicySettings(hidden_dims=(6,), ac_bins=bins))
    assert policy.layers[-1].outputs == 2 * len(values)
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(policy.num_params).astype(np.float32)
    actor = policy.actor(theta, np.zeros(5, np.float32), np.ones(5, np.float32))
    for _ in range(10):
        obs = rng.standard_normal(5)
        logits = reference_forward(policy, theta, obs, np.zeros(5, np.float32), np.ones(5, np.float32)).reshape(2, -1)
        choice = logits.argmax(axis=1)
        expected = [0 + 2 * values[choice[0]], 5 + 5 * values[choice[1]]]
        np.testing.assert_allclose(actor(obs), expected, rtol=1e-6)


def test_observations_are_clipped() -> None:
    policy = MLPPolicy(BOX_OBS, gym.spaces.Discrete(2), PolicySettings(hidden_dims=(3,)))
    actor = policy.actor(np.zeros(policy.num_params, np.float32), np.zeros(5, np.float32), np.ones(5, np.float32))
    actor(np.array([100.0, -100.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(actor.obs, [5.0, -5.0, 1.0, 2.0, 3.0])


def test_obstat_merges_exactly() -> None:
    rng = np.random.default_rng(4)
    chunks = [rng.standard_normal((n, 3)) * 4 + 2 for n in (5, 17, 40)]
    merged = ObStat((3,), eps=0.0)
    for chunk in chunks:
        merged.increment(chunk.sum(axis=0), np.square(chunk).sum(axis=0), len(chunk))
    data = np.concatenate(chunks)
    np.testing.assert_allclose(merged.mean, data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(merged.std, data.std(axis=0), rtol=1e-5)
    fresh = ObStat((3,))
    np.testing.assert_array_equal(fresh.mean, np.zeros(3))
    np.testing.assert_allclose(fresh.std, np.ones(3))
    floored = ObStat((1,), eps=0.0)
    floored.increment(np.array([3.0]), np.array([9.0]), 1)
    np.testing.assert_allclose(floored.std, [0.1], rtol=1e-6)


def test_errors() -> None:
    with pytest.raises(PolicyError, match="flat Box observation space"):
        MLPPolicy(gym.spaces.Box(0, 1, shape=(4, 4), dtype=np.float32), gym.spaces.Discrete(2), PolicySettings())
    with pytest.raises(PolicyError, match="Box and Discrete action spaces"):
        MLPPolicy(BOX_OBS, gym.spaces.MultiBinary(3), PolicySettings())
    with pytest.raises(PolicyError, match="finite bounds"):
        MLPPolicy(BOX_OBS, gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32), PolicySettings(ac_bins="uniform:3"))
    policy = MLPPolicy(BOX_OBS, gym.spaces.Discrete(2), PolicySettings(hidden_dims=(3,)))
    with pytest.raises(PolicyError, match="parameter vector has shape"):
        policy.actor(np.zeros(3, np.float32), np.zeros(5, np.float32), np.ones(5, np.float32))


@pytest.mark.parametrize(
    ("action_space", "settings"),
    [
        (
            gym.spaces.Box(np.array([-2.0, 0.0, -np.inf], np.float32), np.array([2.0, 1.0, np.inf], np.float32)),
            PolicySettings(hidden_dims=(16, 16)),
        ),
        (gym.spaces.Box(-1, 1, shape=(3,), dtype=np.float32), PolicySettings(hidden_dims=(70, 9), nonlin_type="relu")),
        (gym.spaces.Discrete(4), PolicySettings(hidden_dims=(8,))),
        (gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32), PolicySettings(hidden_dims=(8,), ac_bins="uniform:7")),
    ],
)
def test_compiled_actor_matches_numpy_actor(action_space, settings) -> None:
    # The compiled forward pass sums in another order than BLAS and uses its own tanh: the
    # actions agree to float rounding (argmax choices are compared on well-separated logits).
    policy = MLPPolicy(BOX_OBS, action_space, settings)
    rng = np.random.default_rng(5)
    theta = rng.standard_normal(policy.num_params).astype(np.float32)
    mean, std = rng.standard_normal(5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32)
    compiled, plain = policy.actor(theta, mean, std), policy.actor(theta, mean, std, compiled=False)
    assert compiled.forward is not None and plain.forward is None
    continuous = isinstance(action_space, gym.spaces.Box) and settings.ac_bins == "continuous:"
    for _ in range(20):
        obs = rng.standard_normal(5) * 3
        noise = (rng.standard_normal(3) * 0.3).astype(np.float32) if continuous else None
        a, b = compiled(obs, noise), plain(obs, noise)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(compiled.obs, plain.obs)


def test_numpy_actor_for_other_nonlinearities_and_theta_layouts() -> None:
    space = gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32)
    elu = MLPPolicy(BOX_OBS, space, PolicySettings(hidden_dims=(4,), nonlin_type="elu"))
    assert elu.actor(np.zeros(elu.num_params, np.float32), np.zeros(5, np.float32), np.ones(5, np.float32)).forward is None
    tanh = MLPPolicy(BOX_OBS, space, PolicySettings(hidden_dims=(4,)))
    theta = np.random.default_rng(6).standard_normal(2 * tanh.num_params).astype(np.float32)
    strided = tanh.actor(theta[::2], np.zeros(5, np.float32), np.ones(5, np.float32))
    compiled = tanh.actor(theta[::2].copy(), np.zeros(5, np.float32), np.ones(5, np.float32))
    assert strided.forward is None and compiled.forward is not None
    np.testing.assert_allclose(strided(np.ones(5)), compiled(np.ones(5)), rtol=1e-5, atol=1e-6)
    with pytest.raises(PolicyError, match="dtype float64, this policy needs float32"):
        tanh.actor(theta[::2].astype(np.float64), np.zeros(5, np.float32), np.ones(5, np.float32))


def test_actor_reads_theta_in_place() -> None:
    policy = MLPPolicy(BOX_OBS, gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32), PolicySettings(hidden_dims=(4,)))
    theta = np.random.default_rng(7).standard_normal(policy.num_params).astype(np.float32)
    actor = policy.actor(theta, np.zeros(5, np.float32), np.ones(5, np.float32))
    before = actor(np.ones(5))
    theta[:] = np.random.default_rng(8).standard_normal(policy.num_params)
    np.testing.assert_array_equal(
        actor(np.ones(5)), policy.actor(theta.copy(), np.zeros(5, np.float32), np.ones(5, np.float32))(np.ones(5))
    )
    assert not np.array_equal(before, actor(np.ones(5)))
