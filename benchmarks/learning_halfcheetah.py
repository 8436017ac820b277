"""Learning benchmark: HalfCheetah-v5 with the shipped config, against the paper's Table 3.

Trains with ``configs/halfcheetah.json`` (or reads an existing run with ``--from-run``),
records the timesteps at which the evaluation return (unperturbed policy, no action noise)
first reaches each of the paper's HalfCheetah scores (50%, 75% and 100% of TRPO's final score:
793, 1589, 2385), prints them next to the timesteps ES needed in the paper, and draws the curve
with :mod:`esfast.media.plotting` (``pip install 'esfast[plot]'``).

Usage:
    python benchmarks/learning_halfcheetah.py [--timesteps 3000000] [--out DIR] [--plot FILE]
    python benchmarks/learning_halfcheetah.py --from-run DIR [--plot FILE]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from esfast.config import resolve_config
from esfast.errors import UserError
from esfast.media import plotting
from esfast.training import Trainer, default_workers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine

TABLE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_mujoco_table3.csv"
# The same rows of the paper's Table 3, for machines without the reference folder.
PAPER_HALFCHEETAH = [("50%", 793.55, 8.28e5), ("75%", 1589.83, 1.42e6), ("100%", 2385.79, 2.88e6)]


def paper_rows() -> list[tuple[str, float, float]]:
    if not TABLE.exists():
        return PAPER_HALFCHEETAH
    with open(TABLE) as file:
        rows = [line for line in file if not line.startswith("#")]
    return [
        (row["pct_TRPO_progress"], float(row["TRPO_score"]), float(row["ES_timesteps"]))
        for row in csv.DictReader(rows)
        if row["env"] == "HalfCheetah" and row["pct_TRPO_progress"] != "25%"
    ]


def train(out: Path, timesteps: int, seed: int) -> None:
    config = resolve_config("halfcheetah")
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, timesteps=timesteps, generations=None, seed=seed))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    with Trainer(config, out) as trainer:
        trainer.train()


def draw(run: plotting.Run, rows: list[tuple[str, float, float]], path: Path, *, cores: int | None) -> None:
    """The run's evaluation and population returns, TRPO's scores as dashed lines, the paper's ES points as crosses."""
    figure, axes = plotting.new_figure()
    plotting.draw_run_returns(axes, run)
    for label, score, _ in rows:
        axes.axhline(score, color="0.6", linestyle="--", linewidth=0.8)
        axes.text(0.01, score, f"{label} of TRPO", transform=axes.get_yaxis_transform(), ha="left", va="bottom", color="0.45")
    axes.scatter(
        [paper_steps for _, _, paper_steps in rows],
        [score for _, score, _ in rows],
        marker="x",
        s=60,
        color="tab:red",
        zorder=3,
        label="paper's ES (Table 3): timesteps to reach each score",
    )
    workers = run.config.get("run.workers")  # None: one per core of the machine that trained
    where = f", {workers} workers" if workers else f", {cores} cores" if cores else ""
    axes.set_title(f"esfast on {run.config.get('env_id')} (shipped config{where})")
    axes.set_ylabel("return")
    axes.legend(loc="lower right", fontsize="small")  # the curves rise from lower left to upper right
    plotting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=3_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/learning-halfcheetah"))
    parser.add_argument("--from-run", type=Path, help="read this run directory's log.jsonl instead of training")
    parser.add_argument("--plot", type=Path, default=Path("halfcheetah-learning.png"))
    args = parser.parse_args()
    try:
        plotting.require_matplotlib()  # before a run of hours, not after it
    except UserError as error:
        parser.error(str(error))
    print(machine.describe(), flush=True)

    run = args.from_run or args.out
    if not args.from_run:
        train(args.out, args.timesteps, args.seed)
    loaded = plotting.load_run(run)
    records = loaded.records
    steps = np.array([r["timesteps_total"] for r in records], dtype=np.float64)
    evals = np.array([r["eval_return_mean"] for r in records], dtype=np.float64)
    seconds = np.array([r["time_elapsed"] for r in records], dtype=np.float64)

    print(f"\nrun {run}: {len(records)} generations, {int(steps[-1]):,} timesteps, {seconds[-1]:.0f} s")
    print(f"{'TRPO %':>7} {'score':>8} {'paper ES steps':>15} {'esfast steps':>13} {'ratio':>6} {'esfast time':>12}")
    rows = paper_rows()
    for label, score, paper_steps in rows:
        reached = np.flatnonzero(evals >= score)
        if reached.size:
            ours = steps[reached[0]]
            print(f"{label:>7} {score:>8.1f} {paper_steps:>15,.0f} {ours:>13,.0f} {ours / paper_steps:>6.2f} {seconds[reached[0]]:>11.0f}s")
        else:
            print(f"{label:>7} {score:>8.1f} {paper_steps:>15,.0f} {'not reached':>13}")
    draw(loaded, rows, args.plot, cores=None if args.from_run else default_workers())
    print(f"curve written to {args.plot}")


if __name__ == "__main__":
    main()
