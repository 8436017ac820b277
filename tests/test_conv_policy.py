"""The Atari network with virtual batch normalization (esfast.policies.conv over the C++ kernel),
against a plain float64 numpy reference and against a float32 replica of the kernel's arithmetic."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import numpy_reference as ref
import pytest

from esfast.config import PolicySettings
from esfast.errors import PolicyError
from esfast.policies.conv import VBN_EPS, ConvPolicy

SETTINGS = PolicySettings(type="AtariPolicy", hidden_dims=(256,), nonlin_type="relu", ac_noise_std=0.0)
OBS_SHAPE = (4, 84, 84)
ACTIONS = 6


def spaces(shape: tuple[int, ...] = OBS_SHAPE, actions: int = ACTIONS) -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    return gym.spaces.Box(0, 255, shape, np.uint8), gym.spaces.Discrete(actions)


def frames(count: int, seed: int, shape: tuple[int, ...] = OBS_SHAPE) -> np.ndarray:
    """Pixels with some structure (a smooth background plus noise), so that statistics vary by channel."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, shape[1])[:, None] * np.linspace(0, 1, shape[2])[None, :]
    base = 200 * rows[None, None] * rng.uniform(0.2, 1.0, (count, shape[0], 1, 1))
    return np.clip(base + rng.integers(0, 56, (count, *shape)), 0, 255).astype(np.uint8)


def make_policy(batch_size: int = 16, hidden: tuple[int, ...] = (256,)) -> ConvPolicy:
    settings = PolicySettings(type="AtariPolicy", hidden_dims=hidden, nonlin_type="relu")
    return ConvPolicy(*spaces(), settings, frames(batch_size, seed=1))


def random_theta(policy: ConvPolicy, seed: int) -> np.ndarray:
    """Initial parameters with the VBN gains and shifts and the output bias made non-trivial."""
    rng = np.random.default_rng(seed)
    theta = policy.initial_theta(rng)
    for conv in policy.convs:
        theta[conv.gamma] = rng.uniform(0.5, 2.0, conv.filters)
        theta[conv.beta] = rng.normal(0, 0.5, conv.filters)
    for dense in policy.dense:
        if dense.gamma is not None:
            theta[dense.gamma] = rng.uniform(0.5, 2.0, dense.outputs)
        theta[dense.beta] = rng.normal(0, 0.5, dense.outputs)
    last = policy.dense[-1]
    theta[last.weight] *= 100  # outputs of order 1, so that argmax is not decided by rounding
    return theta


def reference(theta: np.ndarray, batch: np.ndarray, observations: np.ndarray, hidden: tuple[int, ...] = (256,)):
    """Statistics on ``batch`` (float64 batch norm at every hidden layer) and logits of ``observations`` under them."""
    return ref.conv_network_reference(theta, batch, observations, hidden, ACTIONS)


def clear_argmax(logits: np.ndarray, tolerance: float) -> bool:
    """Whether the largest logit beats the second by more than ``tolerance``."""
    top = np.sort(logits)[-2:]
    return bool(top[1] - top[0] > tolerance)


# ---- tests


def test_parameter_count_follows_the_documented_layout() -> None:
    policy = make_policy()
    conv1 = 16 * 4 * 8 * 8 + 2 * 16
    conv2 = 32 * 16 * 4 * 4 + 2 * 32
    fc = 32 * 9 * 9 * 256 + 2 * 256
    out = 256 * ACTIONS + ACTIONS
    assert policy.num_params == conv1 + conv2 + fc + out == 677_990
    assert policy.act_dim == ACTIONS and policy.obs_shape == OBS_SHAPE


def test_initial_theta() -> None:
    policy = make_policy()
    theta = policy.initial_theta(np.random.default_rng(0))
    assert theta.dtype == np.float32 and theta.shape == (policy.num_params,)
    first = theta[policy.convs[0].weight].reshape(16, -1)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert np.all(theta[policy.convs[1].gamma] == 1) and np.all(theta[policy.convs[1].beta] == 0)
    last = policy.dense[-1]
    np.testing.assert_allclose(np.linalg.norm(theta[last.weight].reshape(256, ACTIONS), axis=0), 0.01, rtol=1e-5)
    np.testing.assert_array_equal(theta, policy.initial_theta(np.random.default_rng(0)))


@pytest.mark.parametrize("hidden", [(256,), (32, 16)])
def test_vbn_statistics_equal_the_numpy_reference(hidden: tuple[int, ...]) -> None:
    batch = frames(16, seed=1)
    policy = ConvPolicy(*spaces(), PolicySettings(type="AtariPolicy", hidden_dims=hidden, nonlin_type="relu"), batch)
    theta = random_theta(policy, seed=2)
    actor = policy.actor(theta)
    expected, _ = reference(theta, batch, batch[:1], hidden)
    assert len(actor.statistics) == 2 + len(hidden)
    for (mean, var), (ref_mean, ref_var) in zip(actor.statistics, expected):
        # float32 matmuls against float64: a relative tolerance on the layer's scale
        scale = np.sqrt(ref_var.max()) + np.abs(ref_mean).max()
        np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=2e-5 * scale)
        np.testing.assert_allclose(var, ref_var, rtol=1e-4, atol=1e-5 * scale**2)


def test_logits_equal_the_reference_with_frozen_statistics() -> None:
    batch = frames(16, seed=1)
    policy = ConvPolicy(*spaces(), SETTINGS, batch)
    theta = random_theta(policy, seed=3)
    actor = policy.actor(theta)
    observations = frames(5, seed=9)
    _, expected = reference(theta, batch, observations)
    for observation, ref_logits in zip(observations, expected):
        logits = actor.logits(observation)
        assert logits.dtype == np.float32
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
        assert actor(observation) == int(np.argmax(ref_logits))


def test_small_observations_that_still_fit() -> None:
    """The smallest input (20x20: conv1 leaves 4x4, conv2 1x1) and a non-multiple-of-stride size."""
    for shape in ((2, 20, 20), (1, 45, 31)):
        batch = frames(6, seed=4, shape=shape)
        policy = ConvPolicy(*spaces(shape), SETTINGS, batch)
        theta = random_theta(policy, seed=5)
        actor = policy.actor(theta)
        expected_stats, expected_logits = reference(theta, batch, batch[:2])
        for (mean, _), (ref_mean, ref_var) in zip(actor.statistics, expected_stats):
            np.testing.assert_allclose(mean, ref_mean, atol=2e-5 * (np.sqrt(ref_var.max()) + np.abs(ref_mean).max()))
        np.testing.assert_allclose(actor.logits(batch[1]), expected_logits[1], rtol=1e-4, atol=1e-4 * np.abs(expected_logits).max())


@pytest.mark.parametrize(
    ("shape", "hidden"),
    [((4, 84, 84), (256,)), ((4, 84, 84), (64, 32)), ((2, 36, 44), (256,)), ((3, 84, 84), (48, 16, 8)), ((1, 45, 31), (32,))],
)
def test_statistics_and_logits_equal_the_kernels_arithmetic_exactly(shape: tuple[int, ...], hidden: tuple[int, ...]) -> None:
    """The float32 replica in numpy_reference repeats the kernel's operations in its documented
    order, the first dense layer with every input (the kernel skips the zeros): equal bits."""
    batch = frames(8, seed=21, shape=shape)
    policy = ConvPolicy(*spaces(shape), PolicySettings(type="AtariPolicy", hidden_dims=hidden, nonlin_type="relu"), batch)
    theta = random_theta(policy, seed=22)
    actor = policy.actor(theta)
    observations = frames(4, seed=23, shape=shape)
    mean, var, logits, dense_inputs = ref.conv_network_exact(theta, batch, observations, hidden, ACTIONS)
    assert 0.2 < np.mean(dense_inputs == 0) < 0.8  # the kernel has zeros to skip, and values to sum
    np.testing.assert_array_equal(np.concatenate([m for m, _ in actor.statistics]), mean)
    np.testing.assert_array_equal(np.concatenate([v for _, v in actor.statistics]), var)
    for observation, expected in zip(observations, logits):
        np.testing.assert_array_equal(actor.logits(observation), expected)
        assert actor(observation) == int(np.argmax(expected))
    assert len({float(x) for x in logits.ravel()}) > ACTIONS  # not a constant network
    assert VBN_EPS == ref.VBN_EPS


@pytest.mark.parametrize(("shape", "hidden"), [((2, 36, 44), (256,)), ((3, 84, 84), (64, 32)), ((1, 84, 84), (256,))])
def test_other_shapes_and_channels_against_the_float64_reference(shape: tuple[int, ...], hidden: tuple[int, ...]) -> None:
    batch = frames(12, seed=31, shape=shape)
    policy = ConvPolicy(*spaces(shape), PolicySettings(type="AtariPolicy", hidden_dims=hidden, nonlin_type="relu"), batch)
    theta = random_theta(policy, seed=32)
    actor = policy.actor(theta)
    observations = frames(6, seed=33, shape=shape)
    expected_stats, expected_logits = ref.conv_network_reference(theta, batch, observations, hidden, ACTIONS)
    assert len(actor.statistics) == 2 + len(hidden)
    for (mean, var), (ref_mean, ref_var) in zip(actor.statistics, expected_stats):
        assert mean.dtype == var.dtype == np.float64 and mean.shape == var.shape == ref_mean.shape
        scale = np.sqrt(ref_var.max()) + np.abs(ref_mean).max()
        np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=2e-5 * scale)
        np.testing.assert_allclose(var, ref_var, rtol=1e-4, atol=1e-5 * scale**2)
    for observation, ref_logits in zip(observations, expected_logits):
        tolerance = 1e-4 * np.abs(ref_logits).max()
        np.testing.assert_allclose(actor.logits(observation), ref_logits, rtol=1e-4, atol=tolerance)
        if clear_argmax(ref_logits, 10 * tolerance):
            assert actor(observation) == int(np.argmax(ref_logits))


def test_same_inputs_give_identical_bits() -> None:
    policy = make_policy()
    theta = random_theta(policy, seed=41)
    actor, twin = policy.actor(theta), policy.actor(theta.copy())
    first = [(m.copy(), v.copy()) for m, v in actor.statistics]
    actor.refresh()
    for (mean, var), (again_mean, again_var), (twin_mean, twin_var) in zip(first, actor.statistics, twin.statistics):
        np.testing.assert_array_equal(mean, again_mean)
        np.testing.assert_array_equal(var, again_var)
        np.testing.assert_array_equal(mean, twin_mean)
        np.testing.assert_array_equal(var, twin_var)
    for observation in frames(4, seed=42):
        logits = actor.logits(observation)
        np.testing.assert_array_equal(actor.logits(observation), logits)
        np.testing.assert_array_equal(twin.logits(observation), logits)


def test_theta_is_read_at_refresh_only() -> None:
    policy = make_policy()
    buffer = random_theta(policy, seed=43)
    actor = policy.actor(buffer)
    observation = frames(1, seed=44)[0]
    before = actor.logits(observation)
    buffer[:] = random_theta(policy, seed=45)
    np.testing.assert_array_equal(actor.logits(observation), before)  # the folded weights are a snapshot
    actor.refresh()
    assert not np.array_equal(actor.logits(observation), before)


def test_a_strided_theta_is_read_at_each_refresh() -> None:
    policy = make_policy()
    storage = np.zeros((policy.num_params, 2), np.float32)
    strided = storage[:, 0]
    strided[:] = random_theta(policy, seed=50)
    actor = policy.actor(strided)
    observation = frames(1, seed=51)[0]
    np.testing.assert_array_equal(actor.logits(observation), policy.actor(strided.copy()).logits(observation))
    strided[:] = random_theta(policy, seed=52)
    actor.refresh()
    np.testing.assert_array_equal(actor.logits(observation), policy.actor(strided.copy()).logits(observation))


def test_observation_is_checked() -> None:
    policy = make_policy()
    actor = policy.actor(random_theta(policy, seed=46))
    observation = frames(1, seed=47)[0]
    with pytest.raises(TypeError, match="observation must have dtype uint8, got float32"):
        actor(observation.astype(np.float32))
    with pytest.raises(ValueError, match=r"observation must have shape \(4, 84, 84\), got \(4, 84, 83\)"):
        actor(observation[:, :, :83])
    with pytest.raises(ValueError, match=r"observation must have shape \(4, 84, 84\), got \(1, 4, 84, 84\)"):
        actor.logits(observation[None])
    with pytest.raises(TypeError, match="observation must be a numpy array of dtype uint8, got list"):
        actor(observation.tolist())
    transposed = np.ascontiguousarray(observation.transpose(0, 2, 1)).transpose(0, 2, 1)  # same values, not C-contiguous
    assert not transposed.flags.c_contiguous
    np.testing.assert_array_equal(actor.logits(transposed), actor.logits(observation))


def test_a_nan_logit_is_the_argmax_as_in_numpy() -> None:
    policy = make_policy()
    theta = random_theta(policy, seed=48)
    theta[policy.dense[-1].beta.start + 3] = np.nan
    actor = policy.actor(theta)
    logits = actor.logits(frames(1, seed=49)[0])
    assert np.isnan(logits[3]) and actor(frames(1, seed=49)[0]) == int(np.argmax(logits)) == 3


def test_action_is_deterministic_for_fixed_theta() -> None:
    policy = make_policy()
    theta = random_theta(policy, seed=6)
    observations = frames(20, seed=7)
    first = [policy.actor(theta)(o) for o in observations]
    second_actor = policy.actor(theta.copy())
    assert [second_actor(o) for o in observations] == first
    assert [second_actor(o) for o in observations] == first  # no state carried between calls
    assert all(isinstance(a, int) and 0 <= a < ACTIONS for a in first)
    assert len(set(first)) > 1  # the check is not vacuous


def test_refresh_follows_theta_written_in_place() -> None:
    policy = make_policy()
    buffer = random_theta(policy, seed=8)
    actor = policy.actor(buffer)  # a view of buffer, as workers hold one per θ buffer
    other = random_theta(policy, seed=9)
    buffer[:] = other
    actor.refresh()
    fresh = policy.actor(other)
    for (mean, var), (fresh_mean, fresh_var) in zip(actor.statistics, fresh.statistics):
        np.testing.assert_array_equal(mean, fresh_mean)
        np.testing.assert_array_equal(var, fresh_var)
    observation = frames(1, seed=10)[0]
    np.testing.assert_array_equal(actor.logits(observation), fresh.logits(observation))


def test_noise_argument_is_accepted_and_ignored() -> None:
    policy = make_policy()
    actor = policy.actor(random_theta(policy, seed=11))
    observation = frames(1, seed=12)[0]
    assert actor(observation, np.ones(ACTIONS, np.float32)) == actor(observation)


@pytest.mark.parametrize(
    ("observation_space", "message"),
    [
        (gym.spaces.Box(0, 255, (84, 84), np.uint8), "needs a (channels, height, width) Box observation space"),
        (gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), "observation shape (84, 84, 4) does not fit the Atari network"),
        (gym.spaces.Box(0, 255, (4, 16, 16), np.uint8), "observation shape (4, 16, 16) does not fit the Atari network"),
        (gym.spaces.Box(0, 1, (4, 84, 84), np.float32), "needs uint8 observations"),
        (gym.spaces.Box(-1, 1, (8,), np.float32), "needs a (channels, height, width) Box observation space"),
    ],
)
def test_observation_space_that_does_not_fit_is_one_line(observation_space: gym.Space, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        ConvPolicy(observation_space, gym.spaces.Discrete(6), SETTINGS, frames(2, seed=0))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_other_bad_input_is_one_line() -> None:
    observation_space, action_space = spaces()
    cases = [
        (lambda: ConvPolicy(observation_space, gym.spaces.Box(-1, 1, (3,)), SETTINGS, frames(2, 0)), "needs a Discrete action space"),
        (
            lambda: ConvPolicy(observation_space, action_space, SETTINGS, frames(2, 0, (4, 42, 42))),
            "reference batch must be uint8 of shape (N >= 2, 4, 84, 84)",
        ),
        (lambda: ConvPolicy(observation_space, action_space, SETTINGS, frames(2, 0).astype(np.float32)), "reference batch must be uint8"),
        (lambda: ConvPolicy(observation_space, action_space, SETTINGS, frames(1, 0)), "got uint8 (1, 4, 84, 84)"),
        (lambda: ConvPolicy(observation_space, action_space, PolicySettings(nonlin_type="tanh"), frames(2, 0)), "uses relu"),
        (lambda: make_policy().actor(np.zeros(10, np.float32)), "parameter vector must be float32 of shape (677990,)"),
        (lambda: make_policy().actor(np.zeros(677_990, np.float64)), "got float64 (677990,)"),
    ]
    for make, message in cases:
        with pytest.raises(PolicyError) as info:
            make()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_an_unpickled_parameter_vector_works() -> None:
    """A θ that went through pickle (its own dtype object) is accepted, with the same action."""
    import pickle

    policy = make_policy()
    theta = random_theta(policy, seed=3)
    observation = frames(1, seed=4)[0]
    assert policy.actor(pickle.loads(pickle.dumps(theta)))(observation) == policy.actor(theta)(observation)


def test_a_network_the_kernel_cannot_build_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="the Atari network cannot be built"):
        make_policy(hidden=(2**21,))
