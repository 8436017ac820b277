"""centered_ranks and normalized against numpy references."""

from __future__ import annotations

import numpy as np
import numpy_reference as ref
import pytest

from esfast import core


@pytest.mark.parametrize("shape", [(1,), (2,), (10,), (7, 2), (3, 4, 5), (5000, 2)])
def test_centered_ranks_match_reference(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).standard_normal(shape)
    got = core.centered_ranks(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got, ref.centered_ranks(x))


def test_centered_ranks_range_and_sum() -> None:
    got = core.centered_ranks(np.arange(11.0)[::-1])
    assert got.max() == 0.5 and got.min() == -0.5
    np.testing.assert_array_equal(got, (np.arange(11.0)[::-1] / 10 - 0.5).astype(np.float32))
    assert abs(float(got.sum())) < 1e-6


def test_ties_get_average_ranks_in_any_order() -> None:
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    got = core.centered_ranks(x)
    # Sorted: 1 1 2 3 3 3 -> ranks 0.5 0.5 2 4 4 4
    expected = np.array([4, 0.5, 4, 2, 4, 0.5]) / 5 - 0.5
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    permutation = np.random.default_rng(0).permutation(x.size)
    np.testing.assert_array_equal(core.centered_ranks(x[permutation]), got[permutation])
    np.testing.assert_array_equal(core.centered_ranks(np.array([-0.0, 0.0])), np.zeros(2, np.float32))


def test_many_ties_match_reference() -> None:
    x = np.random.default_rng(2).integers(0, 20, size=(1000, 2))
    np.testing.assert_array_equal(core.centered_ranks(x), ref.centered_ranks(x))


def test_centered_ranks_accepts_lists_ints_and_infinities() -> None:
    np.testing.assert_array_equal(core.centered_ranks([1, 3, 2]), np.array([-0.5, 0.5, 0.0], np.float32))
    np.testing.assert_array_equal(core.centered_ranks([np.inf, -np.inf, 0.0]), np.array([0.5, -0.5, 0.0], np.float32))
    assert core.centered_ranks(np.zeros(0)).shape == (0,)


def test_normalized_matches_numpy() -> None:
    x = np.random.default_rng(3).standard_normal((300, 2)) * 50 + 7
    got = core.normalized(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, (x - x.mean()) / x.std(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.1, -3e7, 1e300])
def test_normalized_constant_is_zero(value: float) -> None:
    np.testing.assert_array_equal(core.normalized(np.full(5, value)), np.zeros(5, np.float32))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: core.centered_ranks([1.0, np.nan]), ValueError, r"x must not contain NaN \(at flat index 1\)"),
        (lambda: core.centered_ranks(["a", "b"]), TypeError, "x must hold real numbers"),
        (lambda: core.centered_ranks([1 + 2j]), TypeError, "x must hold real numbers"),
        (lambda: core.centered_ranks(object()), TypeError, "x must hold real numbers"),
        (lambda: core.normalized([1.0, np.inf]), ValueError, "x must be finite"),
        (lambda: core.normalized([True, False]), TypeError, "x must hold real numbers"),
    ],
)
def test_bad_returns(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()
