"""The compiled policy forward pass (esfast.core.MLPForward, cpp/src/mlp.cpp) against numpy.

The reference repeats the kernel's float32 operations one by one, in the kernel's order (each
output sums its products over the inputs in increasing order, then adds the bias; numpy rounds
every ufunc result, so nothing is fused), and uses the kernel's own tanh: exact equality is a
fair expectation. tanh_approx itself is checked against float64 tanh with a stated tolerance.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from esfast.core import MLPForward, tanh_approx

F32 = np.float32


def reference_dense(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    acc = np.zeros(w.shape[1], F32)
    for i in range(w.shape[0]):
        acc = acc + x[i] * w[i]
    return acc + b


def reference_forward(theta, sizes, activation, obs, mean, inv_std, clip) -> tuple[np.ndarray, np.ndarray]:
    """(normalized observation, last layer's outputs)."""
    x = (obs - mean.astype(obs.dtype)).astype(F32) * inv_std
    x = np.maximum(np.minimum(x, F32(clip)), F32(-clip))
    normalized, start = x, 0
    for index, (n, m) in enumerate(itertools.pairwise(sizes)):
        w = theta[start : start + n * m].reshape(n, m)
        b = theta[start + n * m : start + n * m + m]
        start += n * m + m
        x = reference_dense(x, w, b)
        if index < len(sizes) - 2:
            x = {"tanh": tanh_approx, "relu": lambda v: np.maximum(v, F32(0)), "identity": lambda v: v}[activation](x)
    return normalized, x


def make(sizes, activation="tanh", seed=0, **bounds):
    rng = np.random.default_rng(seed)
    num = sum(n * m + m for n, m in itertools.pairwise(sizes))
    theta = (rng.standard_normal(num) * 0.5).astype(F32)
    mean = rng.standard_normal(sizes[0]).astype(F32)
    inv_std = rng.uniform(0.2, 3.0, sizes[0]).astype(F32)
    normalized = np.empty(sizes[0], F32)
    forward = MLPForward(
        theta, sizes, hidden_activation=activation, obs_mean=mean, obs_inv_std=inv_std, obs_clip=5.0, normalized=normalized, **bounds
    )
    return forward, theta, mean, inv_std, normalized, rng


# Output widths cover every column block of the kernel: 64, 32, 16, 8 and single columns.
@pytest.mark.parametrize("sizes", [(3, 1), (5, 7), (6, 8, 17), (11, 64, 64, 6), (20, 130, 121, 9), (348, 256, 256, 17)])
@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_forward_equals_reference_exactly(sizes, activation) -> None:
    forward, theta, mean, inv_std, normalized, rng = make(sizes, activation)
    for dtype in (np.float64, np.float32):
        obs = (rng.standard_normal(sizes[0]) * 4).astype(dtype)
        out = forward(obs)
        expected_x, expected = reference_forward(theta, sizes, activation, obs, mean, inv_std, 5.0)
        assert out.dtype == F32 and out.shape == (sizes[-1],)
        np.testing.assert_array_equal(normalized, expected_x)
        np.testing.assert_array_equal(out, expected)


def test_other_observation_dtypes_are_converted() -> None:
    forward, theta, mean, inv_std, _, _ = make((4, 3))
    ints = np.array([1, -7, 2, 30])
    np.testing.assert_array_equal(forward(ints), reference_forward(theta, (4, 3), "tanh", ints.astype(np.float64), mean, inv_std, 5.0)[1])
    strided = np.arange(8.0)[::2]
    np.testing.assert_array_equal(forward(strided), forward(np.ascontiguousarray(strided)))
    np.testing.assert_array_equal(forward([1.0, 2.0, 3.0, 4.0]), forward(np.array([1.0, 2.0, 3.0, 4.0])))


def test_theta_and_statistics_are_read_in_place() -> None:
    forward, theta, mean, inv_std, _, rng = make((5, 8, 3))
    obs = rng.standard_normal(5)
    before = forward(obs)
    theta *= 2
    mean += 1
    after = forward(obs)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, reference_forward(theta, (5, 8, 3), "tanh", obs, mean, inv_std, 5.0)[1])


def test_squash_noise_and_clip() -> None:
    mid = np.array([0.0, 1.0, 0.0, 0.0], F32)
    half = np.array([2.0, 0.5, 1.0, 1.0], F32)
    bounded = np.array([True, True, False, True])
    low = np.array([-2.0, 0.5, -np.inf, -1.0], F32)
    high = np.array([2.0, 1.5, np.inf, 1.0], F32)
    bounds = dict(action_mid=mid, action_half=half, action_bounded=bounded, action_low=low, action_high=high)
    forward, theta, mean, inv_std, _, rng = make((6, 10, 4), **bounds)
    for _ in range(20):
        obs = rng.standard_normal(6) * 3
        noise = (rng.standard_normal(4) * 2).astype(F32)
        y = reference_forward(theta, (6, 10, 4), "tanh", obs, mean, inv_std, 5.0)[1]
        squashed = np.where(bounded, tanh_approx(y), y) * half + mid
        np.testing.assert_array_equal(forward(obs), squashed)
        noisy = np.maximum(np.minimum(squashed + noise, high), low)
        np.testing.assert_array_equal(forward(obs, noise), noisy)


def test_tanh_approx_accuracy() -> None:
    x = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=F32), np.geomspace(1e-30, 1e-2, 1000, dtype=F32)])
    x = np.concatenate([x, -x])
    t = tanh_approx(x)
    assert np.abs(t.astype(np.float64) - np.tanh(x.astype(np.float64))).max() < 1e-6
    np.testing.assert_array_equal(t, -tanh_approx(-x))  # odd
    assert np.abs(t).max() <= 1
    special = tanh_approx(np.array([np.nan, np.inf, -np.inf, 30.0, 1e-5, -0.0], F32))
    assert np.isnan(special[0])
    np.testing.assert_array_equal(special[1:], np.array([1.0, -1.0, 1.0, 1e-5, -0.0], F32))


def test_simd_and_scalar_columns_agree() -> None:
    # Columns 0..63 go through the 8-wide accumulators, the last one through the scalar loop;
    # with identical weights and inputs they must give identical values.
    sizes = (37, 65)
    forward, theta, _, _, _, rng = make(sizes, "identity")
    w = theta[: 37 * 65].reshape(37, 65)
    w[:] = w[:, :1]
    theta[37 * 65 :] = 0.25
    out = forward(rng.standard_normal(37))
    assert np.all(out == out[0])


def test_bad_arguments() -> None:
    theta = np.zeros(5 * 2 + 2, F32)
    ok = dict(hidden_activation="tanh", obs_mean=np.zeros(5, F32), obs_inv_std=np.ones(5, F32), obs_clip=5.0, normalized=np.empty(5, F32))
    with pytest.raises(ValueError, match="theta must have shape \\(12,\\)"):
        MLPForward(np.zeros(11, F32), (5, 2), **ok)
    with pytest.raises(TypeError, match="theta must have dtype float32, got float64"):
        MLPForward(theta.astype(np.float64), (5, 2), **ok)
    with pytest.raises(ValueError, match="sizes must be a sequence of at least 2"):
        MLPForward(theta, (5,), **ok)
    with pytest.raises(ValueError, match="hidden_activation must be 'tanh', 'relu' or 'identity', got 'elu'"):
        MLPForward(theta, (5, 2), **{**ok, "hidden_activation": "elu"})
    with pytest.raises(ValueError, match="obs_clip must be positive"):
        MLPForward(theta, (5, 2), **{**ok, "obs_clip": 0.0})
    with pytest.raises(ValueError, match="obs_mean must have shape \\(5,\\)"):
        MLPForward(theta, (5, 2), **{**ok, "obs_mean": np.zeros(4, F32)})
    with pytest.raises(ValueError, match="give all or none"):
        MLPForward(theta, (5, 2), **ok, action_mid=np.zeros(2, F32))
    forward = MLPForward(theta, (5, 2), **ok)
    with pytest.raises(ValueError, match="observation must have shape \\(5,\\), got \\(4,\\)"):
        forward(np.zeros(4))
    with pytest.raises(TypeError, match="observation must hold real numbers"):
        forward(np.array(["a"] * 5))
    with pytest.raises(ValueError, match="noise needs the action bounds"):
        forward(np.zeros(5), np.zeros(2, F32))


def test_unpickled_arrays_are_accepted() -> None:
    import pickle

    forward, theta, mean, inv_std, _normalized, rng = make((5, 4, 3))
    again = MLPForward(
        pickle.loads(pickle.dumps(theta)),
        (5, 4, 3),
        hidden_activation="tanh",
        obs_mean=mean,
        obs_inv_std=inv_std,
        obs_clip=5.0,
        normalized=np.empty(5, F32),
    )
    obs = pickle.loads(pickle.dumps(rng.standard_normal(5)))
    np.testing.assert_array_equal(again(obs), forward(obs))
