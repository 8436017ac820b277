"""Benchmark of esfast.core against numpy references measured in the same run.

Prints one row per operation: the numpy reference's time, esfast's time, the speed-up, the
bytes esfast moved per second and that rate as a fraction of this machine's memory read
bandwidth, itself measured at the start of the run (a parallel read of a 1 GiB buffer).

References (what the paper's code did):
- noise table: ``np.random.RandomState(seed).randn(n)`` (the paper's code then casts to float32);
- weighted sum: ``batched_weighted_sum`` with batches of 500 slices stacked and ``np.dot``;
- perturb pair: ``theta + sigma * eps`` and ``theta - sigma * eps``;
- centered ranks: ``argsort`` twice, as in the paper's ``compute_centered_ranks``.

Usage: python benchmarks/bench_core.py [--quick] [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable

import machine
import numpy as np

from esfast import core

PAPER_TABLE_SIZE = 250_000_000


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth(threads: int, repeats: int) -> float:
    """Bytes per second for reading a 1 GiB float32 buffer with ``threads`` threads at once.

    The fastest of three numpy read kernels (max, dot, sum), which release the GIL, so the threads
    read in parallel; the fastest is the one least limited by arithmetic.
    """
    buffer = np.ones(1 << 28, dtype=np.float32)
    chunks = np.array_split(buffer, threads)
    kernels: list[Callable[[np.ndarray], object]] = [np.max, lambda c: np.dot(c, c), np.add.reduce]

    def run(kernel: Callable[[np.ndarray], object]) -> None:
        workers = [threading.Thread(target=kernel, args=(chunk,)) for chunk in chunks]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return max(buffer.nbytes / best_time(lambda k=kernel: run(k), repeats) for kernel in kernels)


def reference_weighted_sum(table: np.ndarray, offsets: np.ndarray, weights: np.ndarray, dim: int) -> np.ndarray:
    """The paper code's ``batched_weighted_sum``: batches of 500 stacked slices and ``np.dot``."""
    total = np.zeros(dim, dtype=np.float32)
    for start in range(0, len(offsets), 500):
        batch = np.asarray([table[o : o + dim] for o in offsets[start : start + 500]], dtype=np.float32)
        total += np.dot(weights[start : start + 500], batch)
    return total


def reference_centered_ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(x.size, dtype=np.int64)
    ranks[x.ravel().argsort()] = np.arange(x.size)
    return (ranks.reshape(x.shape).astype(np.float32) / (x.size - 1) - 0.5).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 25M-sample table instead of the paper's 250M")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="kernel threads (default: cores)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (best is kept)")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    size = PAPER_TABLE_SIZE // 10 if args.quick else PAPER_TABLE_SIZE
    threads, repeats = args.threads, args.repeats

    bandwidth = read_bandwidth(threads, repeats)
    print(f"machine: {os.cpu_count()} cores, {threads} threads used; memory read bandwidth {bandwidth / 1e9:.2f} GB/s")
    print(f"noise table: {size:,} float32 samples ({size * 4 / 1e9:.2f} GB)\n")
    rows: list[tuple[str, float, float, float]] = []

    def record(name: str, reference: float, ours: float, nbytes: float) -> None:
        rows.append((name, reference, ours, nbytes))

    # Noise table generation. The reference is timed once: it takes seconds and allocates 2 GB.
    ref = best_time(lambda: np.random.RandomState(0).randn(size), 1)
    ours = best_time(lambda: core.NoiseTable(size, 0, threads=threads).close(), repeats)
    record("noise table, private", ref, ours, size * 4)
    name = f"esfast-bench-{os.getpid()}"
    ours = best_time(lambda: core.NoiseTable.create_shared(name, size, 0, threads=threads).close(), repeats)
    record("noise table, shared memory", ref, ours, size * 4)

    table = core.NoiseTable(size, 0, threads=threads)
    array = table.array
    rng = np.random.default_rng(0)

    for dim, count in ((30_000, 10_000), (1_700_000, 1_000)):
        offsets = core.sample_offsets(1, count, dim, size)
        weights = rng.standard_normal(count).astype(np.float32)
        out = np.empty(dim, dtype=np.float32)
        ref = best_time(lambda: reference_weighted_sum(array, offsets, weights, dim), repeats)
        ours = best_time(lambda: core.weighted_noise_sum(table, offsets, weights, dim, out=out), repeats)
        record(f"weighted_noise_sum {dim:,} x {count:,}", ref, ours, count * dim * 4)

    dim = 1_700_000
    theta = rng.standard_normal(dim).astype(np.float32)
    plus, minus = np.empty_like(theta), np.empty_like(theta)
    eps = table.get(12_345, dim)
    sigma = np.float32(0.02)

    def reference_pair() -> None:
        np.add(theta, sigma * eps, out=plus)
        np.subtract(theta, sigma * eps, out=minus)

    ref = best_time(reference_pair, repeats * 5)
    ours = best_time(lambda: core.perturb_pair(theta, table, 12_345, 0.02, out_plus=plus, out_minus=minus), repeats * 5)
    record(f"perturb_pair {dim:,}", ref, ours, dim * 4 * 4)

    returns = rng.standard_normal((5_000, 2))
    ref = best_time(lambda: reference_centered_ranks(returns), repeats * 5)
    ours = best_time(lambda: core.centered_ranks(returns), repeats * 5)
    record("centered_ranks 10,000", ref, ours, returns.size * 8 + returns.size * 4)

    offsets_count = 100_000
    ref = best_time(lambda: np.random.RandomState(1).randint(0, size - dim + 1, size=offsets_count), repeats)
    ours = best_time(lambda: core.sample_offsets(1, offsets_count, dim, size), repeats)
    record("sample_offsets 100,000", ref, ours, offsets_count * 8)
    table.close()

    header = f"{'operation':<38} {'numpy s':>9} {'esfast s':>9} {'speed-up':>9} {'GB/s':>7} {'of bw':>6}"
    print(header)
    print("-" * len(header))
    for name, ref, ours, nbytes in rows:
        rate = nbytes / ours
        print(f"{name:<38} {ref:>9.4f} {ours:>9.4f} {ref / ours:>8.1f}x {rate / 1e9:>7.2f} {rate / bandwidth:>6.0%}")


if __name__ == "__main__":
    main()
