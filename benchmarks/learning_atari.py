"""Learning check for Atari on one machine: does ES beat a random policy within a wall-clock budget?

Paper-scale ES on Atari needs about a billion frames per game, far beyond 2 cores; this checks the
whole Atari path (preprocessing, the network with virtual batch normalization, master and worker
host) on a game and budget that fit this machine. In the same run it first measures a uniformly
random policy on the same preprocessed environment (``--random-episodes`` episodes, seeded), then
trains with the game's shipped config (or ``--config``) for ``--minutes`` of wall time, and reports
the evaluation return of the unperturbed policy (no action noise) per generation against the random
policy's mean and best, with a PNG curve drawn by :mod:`esfast.media.plotting` (``pip install 'esfast[plot]'``).

Usage:
    python benchmarks/learning_atari.py [--config freeway] [--minutes 30] [--set KEY=VALUE ...] [--out DIR] [--plot FILE]
    python benchmarks/learning_atari.py --from-run DIR [--random-episodes N] [--plot FILE]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from esfast.config import Config, apply_overrides, resolve_config
from esfast.envs import make_env
from esfast.errors import UserError
from esfast.media import plotting
from esfast.training import Trainer, default_workers, resolved_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine


def random_returns(config: Config, episodes: int, seed: int) -> list[float]:
    """Returns of uniformly random actions on the run's preprocessed environment."""
    env = make_env(config.env_id, config.env_module, atari=config.atari)
    rng = np.random.default_rng(seed)
    limit = config.timestep_limit()[0]
    returns = []
    try:
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            total, steps, done = 0.0, 0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
                total += float(reward)
                steps += 1
                done = terminated or truncated or (limit is not None and steps >= limit)
            returns.append(total)
    finally:
        env.close()
    return returns


def draw(run: plotting.Run, config: Config, random: list[float], path: Path, *, cores: int | None) -> None:
    """The run's evaluation and population returns against agent steps, the random policy's mean and best as dashed lines."""
    figure, axes = plotting.new_figure()
    plotting.draw_run_returns(axes, run)
    mean, best = float(np.mean(random)), float(np.max(random))
    for value, label in [(mean, "random policy")] if best == mean else [(mean, "random policy, mean"), (best, "random policy, best")]:
        axes.axhline(value, color="0.6", linestyle="--", linewidth=0.8)
        axes.text(0.99, value, label, transform=axes.get_yaxis_transform(), ha="right", va="bottom", color="0.45")
    frames = f" ({config.atari.frame_skip} frames each)" if config.atari is not None else ""
    axes.set_xlabel(f"agent steps{frames}")
    axes.set_ylabel("return")
    workers = config.run.workers  # None: one per core of the machine that trained
    where = f" ({workers} workers)" if workers else f" ({cores} cores)" if cores else ""
    axes.set_title(f"esfast on {config.env_id}{where}")
    axes.legend(loc="upper left", fontsize="small")
    plotting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="freeway", help="shipped config name or file (default: freeway)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides, as for esfast train")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--random-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/learning-atari"))
    parser.add_argument("--from-run", type=Path, help="read this run directory instead of training")
    parser.add_argument("--plot", type=Path, default=Path("atari-learning.png"))
    args = parser.parse_args()
    try:
        plotting.require_matplotlib()  # before the run, not after it
    except UserError as error:
        parser.error(str(error))
    print(machine.describe(), flush=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    run = args.from_run or args.out
    if args.from_run:
        config = resolved_config(run)
    else:
        config = apply_overrides(resolve_config(args.config), args.set)
    start = time.perf_counter()
    random = random_returns(config, args.random_episodes, seed=10_000)
    print(
        f"random policy on {config.env_id}: mean {np.mean(random):.1f}, best {np.max(random):.1f} over {len(random)} episodes "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    if not args.from_run:
        with Trainer(config, args.out) as trainer:
            trainer.train(seconds=60 * args.minutes)

    loaded = plotting.load_run(run)
    records = loaded.records
    steps = np.array([r["timesteps_total"] for r in records], dtype=np.float64)
    evals = np.array([r["eval_return_mean"] for r in records], dtype=np.float64)
    seconds = np.array([r["time_elapsed"] for r in records], dtype=np.float64)
    frames = steps * config.atari.frame_skip if config.atari is not None else steps
    print(f"\nrun {run}: {len(records)} generations, {int(steps[-1]):,} agent steps ({int(frames[-1]):,} frames), {seconds[-1]:.0f} s")
    print(f"{'':>24} {'generation':>10} {'steps':>11} {'time':>7} {'return':>8}")
    for label, index in (("first evaluation", 0), ("best evaluation", int(np.argmax(evals))), ("last evaluation", len(evals) - 1)):
        print(f"{label:>24} {records[index]['generation']:>10} {int(steps[index]):>11,} {seconds[index]:>6.0f}s {evals[index]:>8.1f}")
    last = evals[-max(1, len(evals) // 5) :]
    print(f"{'mean of last 20%':>24} {'':>10} {'':>11} {'':>7} {last.mean():>8.1f}")
    beat = np.flatnonzero(evals > np.max(random))
    if beat.size:
        print(
            f"first evaluation above the best random episode ({np.max(random):.1f}): generation {records[beat[0]]['generation']}, "
            f"{int(steps[beat[0]]):,} steps, {seconds[beat[0]]:.0f} s"
        )
    else:
        print(f"no evaluation above the best random episode ({np.max(random):.1f})")
    draw(loaded, config, random, args.plot, cores=None if args.from_run else default_workers())
    print(f"curve written to {args.plot}")


if __name__ == "__main__":
    main()
