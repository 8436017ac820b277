"""Evolution strategies on a quadratic, written with esfast.core (the blog post's toy problem).

Maximizes f(w) = -|w - target|^2 for a 20-dimensional target with antithetic sampling, centered
ranks and plain gradient ascent, using only the core building blocks: a noise table, seeded
offsets, perturbation pairs, centered ranks and the weighted noise sum.

Usage: python examples/quadratic.py [--generations N] [--seed S]
"""

from __future__ import annotations

import argparse

import numpy as np

from esfast import core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dim, pairs, sigma, stepsize = 20, 50, 0.1, 0.03
    target = np.linspace(-1.0, 1.0, dim, dtype=np.float32)

    def objective(w: np.ndarray) -> float:
        return -float(np.sum((w - target) ** 2))

    table = core.NoiseTable(1_000_000, args.seed)
    theta = np.zeros(dim, dtype=np.float32)
    plus, minus = np.empty(dim, np.float32), np.empty(dim, np.float32)
    returns = np.empty((pairs, 2))
    for generation in range(args.generations):
        offsets = core.sample_offsets(args.seed * 1_000_003 + generation, pairs, dim, len(table))
        for i, offset in enumerate(offsets):
            core.perturb_pair(theta, table, int(offset), sigma, out_plus=plus, out_minus=minus)
            returns[i] = objective(plus), objective(minus)
        ranks = core.centered_ranks(returns)
        weights = (ranks[:, 0] - ranks[:, 1]).astype(np.float32)
        gradient = core.weighted_noise_sum(table, offsets, weights, dim) / (2 * pairs * sigma)
        theta += stepsize * gradient
        if generation % 25 == 0 or generation == args.generations - 1:
            print(f"generation {generation:4d}  f(theta) = {objective(theta):.3e}")
    print(f"distance to target: {float(np.linalg.norm(theta - target)):.4f}")


if __name__ == "__main__":
    main()
