"""sample_offsets, perturb and perturb_pair against numpy references."""

from __future__ import annotations

import numpy as np
import numpy_reference as ref
import pytest

from esfast import core


@pytest.fixture(scope="module")
def table() -> core.NoiseTable:
    return core.NoiseTable(100_000, 5, threads=2)


@pytest.mark.parametrize(("seed", "count", "dim", "size"), [(0, 50, 10, 1000), (7, 20, 1, 1), (2**64 - 1, 30, 99, 100), (3, 25, 1, 2**40)])
def test_offsets_match_reference(seed: int, count: int, dim: int, size: int) -> None:
    offsets = core.sample_offsets(seed, count, dim, size)
    assert offsets.dtype == np.int64 and offsets.shape == (count,)
    np.testing.assert_array_equal(offsets, ref.sample_offsets(seed, count, dim, size))


def test_offsets_golden() -> None:
    assert core.sample_offsets(7, 6, 1000, 250_000_000).tolist() == [
        42933675,
        212458815,
        165434729,
        118414135,
        166225930,
        63659768,
    ]


def test_offsets_range_prefix_and_uniformity() -> None:
    offsets = core.sample_offsets(1, 200_000, 91, 100)  # 10 possible values
    assert offsets.min() == 0 and offsets.max() == 9
    counts = np.bincount(offsets, minlength=10)
    expected = 20_000
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 40  # 9 degrees of freedom; p < 1e-5 above this
    np.testing.assert_array_equal(core.sample_offsets(1, 50, 91, 100), offsets[:50])
    assert not np.array_equal(core.sample_offsets(2, 50, 91, 100), offsets[:50])
    assert core.sample_offsets(1, 0, 5, 10).shape == (0,)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 5, 0, 10), ValueError, "dim must be in"),
        ((0, 5, 11, 10), ValueError, "dim must be in"),
        ((0, -1, 5, 10), ValueError, "count must be in"),
        ((0, 5, 5, 0), ValueError, "table_size must be in"),
        ((0.5, 5, 5, 10), TypeError, "seed must be an int"),
    ],
)
def test_offsets_bad_arguments(args: tuple, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        core.sample_offsets(*args)


@pytest.mark.parametrize("dim", [1, 7, 1000, 300_000])
def test_perturb_matches_numpy(dim: int) -> None:
    size = dim + 1000
    table = core.NoiseTable(size, 1)
    theta = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    sigma = 0.02
    eps = table.get(123, dim)
    expected_plus = theta + np.float32(sigma) * eps
    expected_minus = theta - np.float32(sigma) * eps
    np.testing.assert_array_equal(core.perturb(theta, table, 123, sigma), expected_plus)
    plus, minus = core.perturb_pair(theta, table, 123, sigma)
    np.testing.assert_array_equal(plus, expected_plus)
    np.testing.assert_array_equal(minus, expected_minus)
    np.testing.assert_array_equal(core.perturb(theta, table, 123, -sigma), expected_minus)


def test_perturb_into_out_and_in_place(table: core.NoiseTable) -> None:
    theta = np.ones(100, np.float32)
    out = np.empty(100, np.float32)
    result = core.perturb(theta, table, 7, 0.5, out=out)
    assert result is out
    expected = theta + np.float32(0.5) * table.get(7, 100)
    np.testing.assert_array_equal(out, expected)
    core.perturb(theta, table, 7, 0.5, out=theta)
    np.testing.assert_array_equal(theta, expected)
    plus, minus = np.empty(100, np.float32), np.empty(100, np.float32)
    got = core.perturb_pair(theta, table, 0, 1.0, out_plus=plus, out_minus=minus)
    assert got[0] is plus and got[1] is minus


def test_perturb_pair_is_antithetic(table: core.NoiseTable) -> None:
    theta = np.zeros(500, np.float32)
    plus, minus = core.perturb_pair(theta, table, 99, 0.1)
    np.testing.assert_array_equal(plus, -minus)


def test_perturb_bad_arguments(table: core.NoiseTable) -> None:
    theta = np.zeros(10, np.float32)
    cases = [
        (lambda: core.perturb(theta.astype(np.float64), table, 0, 1.0), TypeError, "theta must have dtype float32"),
        (lambda: core.perturb([0.0] * 10, table, 0, 1.0), TypeError, "theta must be a numpy array"),
        (lambda: core.perturb(np.zeros((2, 5), np.float32), table, 0, 1.0), ValueError, "theta must have shape"),
        (lambda: core.perturb(np.zeros(20, np.float32)[::2], table, 0, 1.0), ValueError, "C-contiguous"),
        (lambda: core.perturb(np.zeros(0, np.float32), table, 0, 1.0), ValueError, "theta must not be empty"),
        (lambda: core.perturb(theta, table, len(table) - 9, 1.0), ValueError, "offset must be in"),
        (lambda: core.perturb(theta, table, -1, 1.0), ValueError, "offset must be in"),
        (lambda: core.perturb(theta, table, 0, float("nan")), ValueError, "sigma must be finite"),
        (lambda: core.perturb(theta, table, 0, float("inf")), ValueError, "sigma must be finite"),
        (lambda: core.perturb(theta, table, 0, "x"), TypeError, "sigma must be a real number"),
        (lambda: core.perturb(theta, table, 0, 1.0, out=np.zeros(9, np.float32)), ValueError, r"out must have shape \(10,\)"),
        (lambda: core.perturb(theta, table, 0, 1.0, out=np.zeros(10, np.float64)), TypeError, "out must have dtype"),
        (lambda: core.perturb(theta, "table", 0, 1.0), TypeError, "table must be an esfast.core.NoiseTable"),
        (lambda: core.perturb(theta, table, 0, 1.0, out=table.get(0, 10)), ValueError, "out must be writeable"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_perturb_overlaps_refused(table: core.NoiseTable) -> None:
    buffer = np.zeros(30, np.float32)
    theta = buffer[:10]
    with pytest.raises(ValueError, match="out must be theta itself or not overlap it"):
        core.perturb(theta, table, 0, 1.0, out=buffer[5:15])
    with pytest.raises(ValueError, match="out_plus and out_minus must not overlap"):
        core.perturb_pair(theta, table, 0, 1.0, out_plus=buffer[10:20], out_minus=buffer[10:20])
    with pytest.raises(ValueError, match="must not overlap theta"):
        core.perturb_pair(theta, table, 0, 1.0, out_plus=theta, out_minus=buffer[20:30])
