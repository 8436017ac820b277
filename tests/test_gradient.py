"""weighted_noise_sum against a numpy reference, across thread counts, and its bad inputs."""

from __future__ import annotations

import numpy as np
import numpy_reference as ref
import pytest

from esfast import core


@pytest.mark.parametrize(("count", "dim"), [(0, 5), (1, 1), (3, 2047), (4, 2048), (9, 2049), (37, 10_000), (13, 70_001)])
def test_matches_reference_exactly(count: int, dim: int) -> None:
    table = core.NoiseTable(200_000, 8)
    offsets = core.sample_offsets(4, count, dim, len(table))
    weights = np.random.default_rng(count).standard_normal(count).astype(np.float32)
    got = core.weighted_noise_sum(table, offsets, weights, dim)
    assert got.dtype == np.float32 and got.shape == (dim,)
    np.testing.assert_array_equal(got, ref.weighted_noise_sum(table.array, offsets, weights, dim))


def test_close_to_float32_blas() -> None:
    table = core.NoiseTable(100_000, 8)
    offsets = core.sample_offsets(4, 500, 3000, len(table))
    weights = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    stacked = np.stack([table.get(o, 3000) for o in offsets])
    np.testing.assert_allclose(core.weighted_noise_sum(table, offsets, weights, 3000), weights @ stacked, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_identical_for_any_thread_count(threads: int) -> None:
    dim, count = 50_001, 101
    reference_table = core.NoiseTable(300_000, 2, threads=1)
    offsets = core.sample_offsets(9, count, dim, len(reference_table))
    weights = np.random.default_rng(1).standard_normal(count).astype(np.float32)
    expected = core.weighted_noise_sum(reference_table, offsets, weights, dim)
    table = core.NoiseTable(300_000, 2, threads=threads)
    np.testing.assert_array_equal(core.weighted_noise_sum(table, offsets, weights, dim), expected)


def test_writes_into_out() -> None:
    table = core.NoiseTable(1000, 0)
    out = np.full(10, 99.0, np.float32)
    result = core.weighted_noise_sum(table, np.array([0, 5], np.int64), np.array([1.0, -1.0], np.float32), 10, out=out)
    assert result is out
    np.testing.assert_array_equal(out, table.get(0, 10) - table.get(5, 10))


def test_bad_arguments() -> None:
    table = core.NoiseTable(1000, 0)
    offsets = np.array([0, 10], np.int64)
    weights = np.ones(2, np.float32)
    cases = [
        (lambda: core.weighted_noise_sum(table, offsets, weights, 0), ValueError, "dim must be in"),
        (lambda: core.weighted_noise_sum(table, offsets, weights, 1001), ValueError, "dim must be at most the table size 1000"),
        (lambda: core.weighted_noise_sum(table, offsets.astype(np.int32), weights, 5), TypeError, "offsets must have dtype int64"),
        (lambda: core.weighted_noise_sum(table, offsets, weights.astype(np.float64), 5), TypeError, "weights must have dtype float32"),
        (lambda: core.weighted_noise_sum(table, offsets, np.ones(3, np.float32), 5), ValueError, r"weights must have shape \(2,\)"),
        (
            lambda: core.weighted_noise_sum(table, np.array([0, 996]), weights, 5),
            ValueError,
            r"offsets\[1\] must be in \[0, 995\], got 996",
        ),
        (lambda: core.weighted_noise_sum(table, np.array([-1, 0]), weights, 5), ValueError, r"offsets\[0\] must be in"),
        (lambda: core.weighted_noise_sum(table, offsets, np.array([1, np.nan], np.float32), 5), ValueError, r"weights\[1\] must be finite"),
        (
            lambda: core.weighted_noise_sum(table, offsets, weights, 5, out=np.zeros(4, np.float32)),
            ValueError,
            r"out must have shape \(5,\)",
        ),
        (lambda: core.weighted_noise_sum(None, offsets, weights, 5), TypeError, "table must be an esfast.core.NoiseTable"),
        (lambda: core.weighted_noise_sum(table, offsets, weights, "5"), TypeError, "dim must be an int"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
