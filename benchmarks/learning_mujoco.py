"""Learning benchmark: the paper's MuJoCo suite, each task with its shipped config on several seeds.

For every (task, seed) this trains with the shipped config (``configs/<name>.json``, the file
``esfast train <name>`` runs) through :class:`esfast.training.Trainer`, as ``esfast train`` does,
and writes one result file, ``benchmarks/results/mujoco/<env>-seed<k>.json``: the timesteps and
wall-clock at which the evaluation return first reached each of the paper's Table 3 scores, the
final θ's return over 10 evaluation episodes, the learning curve, steps/s, the CPU and cores and
the esfast commit of every sitting. ``benchmarks/mujoco_report.py`` builds the README's table and
figure from those files alone.

The evaluation return (the same definition for every task): the mean return of the unperturbed
policy (no action noise) over the evaluation episodes of the last :data:`WINDOW` generations
(10 episodes or more: the suite's configs run at least 2 a generation), so that one lucky pair of episodes does
not count as reaching a score. A score is reached at the first generation whose window mean is at
least the score; its timesteps are those of the population's episodes up to that generation, as
the paper counts them (evaluation episodes are not counted).

A run stops when it reaches its task's final score (add ``--keep-going`` to spend the whole
budget) or spends its budget (default: the paper's ES timesteps for the final score, twice the
target). The suite is resumable: a run whose result file says it finished is skipped, and an
interrupted one (Ctrl-C, a killed process, the end of a sitting) continues from its run
directory's latest checkpoint, exactly as ``esfast train --resume`` would (the same θ as an
uninterrupted run). A result file is written every minute while a run goes on, so the curve so far
is there whenever a sitting ends.

A run under way also keeps what resuming it needs (its config, log and latest checkpoint) in a
carry directory, ``<results>/carry/<env>-seed<k>/``, refreshed with the result file and removed
when the run finishes. The carry directory goes with the repository (commit it with the result
file), so a sitting on another machine, with no run directory, continues the run from there.

Usage:
    python benchmarks/learning_mujoco.py ENV [ENV ...] [--seeds 0 1 2] [--budget-timesteps T]
        [--runs DIR] [--results DIR] [--carry DIR] [--workers N] [--keep-going]

ENV is a gymnasium id (``Hopper-v5``), a shipped config's name (``hopper``) or ``all``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import esfast
from esfast.config import Config, config_from_dict, load_config, validate
from esfast.errors import ConfigError, TrainingDiverged, UserError
from esfast.run_directory import RunDirectory
from esfast.training import Trainer, default_workers, resolved_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results" / "mujoco"
RUNS = ROOT / "runs" / "mujoco"
WINDOW = 5  # generations whose evaluation episodes make the evaluation return
FINAL_EPISODES = 10
FINAL_SEED = 10**9  # the final evaluation's episode k of a run with seed s resets with FINAL_SEED + 1000 * s + k
SCHEMA = 1
WRITE_EVERY = 60.0  # seconds between result files of a run under way

# The paper's Table 3 (arXiv:1703.03864v2, supplement): per task, (progress, score, ES timesteps);
# ``../shared/reference/paper_mujoco_table3.csv`` holds the same rows (a test compares them).
PAPER_TABLE3: dict[str, tuple[tuple[str, float, float], ...]] = {
    "HalfCheetah": (("25%", -1.35, 1.36e5), ("50%", 793.55, 8.28e5), ("75%", 1589.83, 1.42e6), ("100%", 2385.79, 2.88e6)),
    "Hopper": (("25%", 877.45, 3.83e5), ("50%", 1718.16, 3.73e6), ("75%", 2561.11, 9.63e6), ("100%", 3403.46, 3.16e7)),
    "InvertedDoublePendulum": (
        ("25%", 2358.98, 3.98e5),
        ("50%", 4609.68, 4.66e5),
        ("75%", 6874.03, 5.30e5),
        ("100%", 9104.07, 5.39e6),
    ),
    "InvertedPendulum": (("25%", 276.59, 6.25e4), ("50%", 519.15, 1.43e5), ("75%", 753.17, 2.55e5), ("100%", 1000.00, 4.55e5)),
    "Swimmer": (("25%", 41.97, 5.88e5), ("50%", 70.73, 8.52e5), ("75%", 99.68, 1.23e6), ("100%", 128.25, 1.39e6)),
    "Walker2d": (("25%", 957.68, 6.43e5), ("50%", 1916.48, 1.29e7), ("75%", 2872.81, 2.31e7), ("100%", 3830.03, 3.79e7)),
}


@dataclass(frozen=True)
class Score:
    """A score a run is timed to: a label, the return, and the timesteps the paper's ES needed (None: not in the paper)."""

    label: str
    value: float
    paper_timesteps: float | None


@dataclass(frozen=True)
class Task:
    """One task of the suite.

    Attributes:
        env_id: the gymnasium id.
        config: the shipped config's name (``configs/<config>.json``).
        scores: the scores the run is timed to, the last being the final one.
        target_timesteps: the timesteps within which the median seed must reach the final score.
        budget: the default timesteps budget of a run.
        source: where the final score and the target come from.
    """

    env_id: str
    config: str
    scores: tuple[Score, ...]
    target_timesteps: float
    budget: int
    source: str

    @property
    def final(self) -> Score:
        return self.scores[-1]


def _paper_task(env_id: str, config: str) -> Task:
    rows = PAPER_TABLE3[env_id.split("-")[0]]
    scores = tuple(Score(label, value, steps) for label, value, steps in rows)
    paper = scores[-1].paper_timesteps
    assert paper is not None
    return Task(env_id, config, scores, paper / 2, int(paper), "paper's Table 3: TRPO's final score; target half the paper's ES timesteps")


TASKS: dict[str, Task] = {
    task.env_id: task
    for task in (
        _paper_task("HalfCheetah-v5", "halfcheetah"),
        _paper_task("Hopper-v5", "hopper"),
        _paper_task("Walker2d-v5", "walker2d"),
        _paper_task("Swimmer-v5", "swimmer"),
        _paper_task("InvertedPendulum-v5", "inverted_pendulum"),
        _paper_task("InvertedDoublePendulum-v5", "inverted_double_pendulum"),
        Task("Ant-v5", "ant", (Score("ARS", 3580.0, None),), 20e6, 20_000_000, "Mania et al. 2018's Ant score, within 20M timesteps"),
        Task(
            "Humanoid-v5",
            "humanoid",
            (Score("paper", 6000.0, None),),
            math.inf,
            200_000_000,
            "the paper's scaling-test score; reported in core-minutes against random search (Mania et al. 2018)",
        ),
    )
}


def find_task(name: str) -> Task:
    """The task of a gymnasium id or a shipped config's name.

    Raises:
        UserError: neither (one line listing the suite).
    """
    for task in TASKS.values():
        if name in (task.env_id, task.config):
            return task
    raise UserError(f"{name!r} is not a task of the suite; choose from {', '.join(TASKS)} (or their config names) or 'all'")


def evaluation_returns(records: Sequence[dict[str, Any]]) -> list[float | None]:
    """The evaluation return after each generation: the mean over the last :data:`WINDOW`
    generations' evaluation episodes (None until there are that many)."""
    means: list[float | None] = []
    window: list[float] = []
    for record in records:
        if record.get("eval_return_mean") is not None:
            window = [*window, float(record["eval_return_mean"])][-WINDOW:]
        means.append(float(np.mean(window)) if len(window) == WINDOW else None)
    return means


def first_reached(records: Sequence[dict[str, Any]], evaluations: Sequence[float | None], score: float) -> dict[str, Any] | None:
    """Where the evaluation return first reached ``score``: generation, timesteps, seconds (None: never)."""
    for record, value in zip(records, evaluations, strict=True):
        if value is not None and value >= score:
            return {"generation": record["generation"], "timesteps": record["timesteps_total"], "seconds": record["time_elapsed"]}
    return None


def shipped_config(task: Task, seed: int, budget: int, workers: int | None) -> Config:
    """The task's shipped config with the run's seed, timesteps budget and workers."""
    config = load_config(CONFIGS / f"{task.config}.json")
    run = dataclasses.replace(config.run, seed=seed, timesteps=budget, generations=None, workers=workers)
    config = dataclasses.replace(config, run=run)
    validate(config)  # --seeds, --workers and --budget-timesteps within the config's bounds, one line if not
    return config


def _experiment(config: Config) -> dict[str, Any]:
    """A config's JSON layout without what a resume may change (budget, workers, logging)."""
    data = config.to_dict()
    for key in ("generations", "timesteps", "workers", "tensorboard"):
        data["run"].pop(key)
    return data


def same_experiment(recorded: dict[str, Any], config: Config) -> bool:
    """Whether a result file's ``config`` is ``config``'s experiment. The recorded layout is read
    as a config first, so a setting esfast added since (at its default) does not tell them apart."""
    try:
        return _experiment(config_from_dict(recorded)) == _experiment(config)
    except ConfigError:
        return False


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def sitting(from_generation: int, workers: int) -> dict[str, Any]:
    """Who ran this part of a run: the commit, whether the tree had changes, the machine, its evaluator processes."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "esfast": esfast.__version__,
        "machine": machine.describe(),
        "cpu": machine.cpu_model(),
        "extensions": machine.cpu_extensions(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average": round(os.getloadavg()[0], 2),  # other work on the machine slows the wall-clock, not the timesteps
        "from_generation": from_generation,
        "workers": workers,
    }


def final_evaluation(run_dir: Path, seed: int) -> dict[str, Any]:
    """The final θ's return over :data:`FINAL_EPISODES` episodes, as its evaluation episodes go (no action noise)."""
    policy = esfast.load_policy(run_dir)
    env = policy.make_env()
    try:
        episodes = [policy.run_episode(env, seed=FINAL_SEED + 1000 * seed + k) for k in range(FINAL_EPISODES)]
    finally:
        env.close()
    returns = [episode.ret for episode in episodes]
    return {
        "episodes": FINAL_EPISODES,
        "generation": policy.generation,
        "returns": returns,
        "lengths": [episode.length for episode in episodes],
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
    }


def core_minutes(elapsed: Sequence[tuple[int, float]], sittings: Sequence[dict[str, Any]], until: int | None = None) -> float:
    """The compute a run spent up to generation ``until`` (None: the last of ``elapsed``).

    Args:
        elapsed: (generation, training seconds since the run started) of each generation, in order.
        sittings: the result file's sittings (``from_generation``, ``workers``), in order.

    Returns:
        Each sitting's training time times its evaluator processes, summed, in minutes.
    """
    seconds = {0: 0.0, **dict(elapsed)}
    if until is not None:
        end = until
    else:
        end = elapsed[-1][0] if elapsed else 0
    starts = [s["from_generation"] for s in sittings] + [end]
    return (
        sum(
            (seconds.get(min(stop, end), 0.0) - seconds.get(min(start, end), 0.0)) * sitting["workers"]
            for sitting, start, stop in zip(sittings, starts, starts[1:], strict=False)
        )
        / 60
    )


def result(
    task: Task,
    config: Config,
    records: Sequence[dict[str, Any]],
    sittings: list[dict[str, Any]],
    *,
    budget: int,
    stopped: str | None,
    final: dict[str, Any] | None,
) -> dict[str, Any]:
    """The result file's content for a run's records so far (``stopped`` None: under way)."""
    evaluations = evaluation_returns(records)
    last = records[-1] if records else {"generation": 0, "timesteps_total": 0, "time_elapsed": 0.0}
    seconds = float(last["time_elapsed"])
    elapsed = [(r["generation"], float(r["time_elapsed"])) for r in records]
    scores = [
        {"label": s.label, "score": s.value, "paper_timesteps": s.paper_timesteps, "reached": first_reached(records, evaluations, s.value)}
        for s in task.scores
    ]
    reached = scores[-1]["reached"]
    return {
        "schema": SCHEMA,
        "env_id": task.env_id,
        "seed": config.run.seed,
        "config_name": task.config,
        "config": _experiment(config),
        "budget_timesteps": budget,
        "finished": stopped is not None,
        "stopped": stopped,
        "evaluation": {
            "definition": f"mean return of the unperturbed policy over the evaluation episodes of the last {WINDOW} generations",
            "window_generations": WINDOW,
            "episodes_per_generation": config.eval_episodes(),
        },
        "scores": scores,
        "target": {
            "score": task.final.value,
            "timesteps": None if math.isinf(task.target_timesteps) else task.target_timesteps,
            "source": task.source,
            "met": reached is not None and reached["timesteps"] <= task.target_timesteps,
        },
        "final_evaluation": final,
        "generations": last["generation"],
        "timesteps_total": last["timesteps_total"],
        "train_seconds": seconds,
        "timesteps_per_second": round(last["timesteps_total"] / seconds, 1) if seconds else None,
        "workers": sittings[-1]["workers"],
        "core_minutes": round(core_minutes(elapsed, sittings), 2),
        "sittings": sittings,
        "curve": {
            "generation": [r["generation"] for r in records],
            "timesteps": [r["timesteps_total"] for r in records],
            "seconds": [r["time_elapsed"] for r in records],
            "eval_return_mean": [r.get("eval_return_mean") for r in records],
            "evaluation_return": [None if v is None else round(v, 3) for v in evaluations],
            "return_mean": [round(r["return_mean"], 3) for r in records],
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` atomically (a temporary file renamed), so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.replace(path)


def result_path(results: Path, env_id: str, seed: int) -> Path:
    return results / f"{env_id}-seed{seed}.json"


def _copy(source: Path, destination: Path) -> None:
    """Copies a file atomically (a temporary file renamed), so a killed copy never leaves half a file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".tmp")
    shutil.copyfile(source, temporary)
    temporary.replace(destination)


def carry_out(run_dir: Path, carry: Path) -> None:
    """Copies what resuming the run in ``run_dir`` needs into ``carry``: its config, its latest
    checkpoint, then its log (never behind the checkpoint, which the resume reconciles it with).
    Does nothing before the run has a checkpoint and a log."""
    run = RunDirectory(run_dir)
    if run.latest.exists() and run.log.exists():
        _copy(run.config, carry / run.config.name)
        _copy(run.latest, carry / run.latest.name)
        _copy(run.log, carry / run.log.name)


def carry_in(carry: Path, run_dir: Path) -> bool:
    """Makes ``run_dir`` (without a checkpoint) the run that ``carry`` holds; False if it holds
    none (or not all of one: a copy cut short)."""
    run = RunDirectory(run_dir)
    if not all((carry / name).exists() for name in (run.config.name, run.log.name, run.latest.name)):
        return False
    _copy(carry / run.config.name, run.config)
    _copy(carry / run.log.name, run.log)
    _copy(carry / run.latest.name, run.latest)
    return True


def run_one(
    task: Task,
    seed: int,
    *,
    budget: int | None = None,
    runs: Path = RUNS,
    results: Path = RESULTS,
    carry: Path | None = None,
    workers: int | None = None,
    keep_going: bool = False,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Trains (or continues, or skips) one (task, seed) and writes its result file; returns its content.

    A run under way keeps its config, log and latest checkpoint in ``carry/<env>-seed<k>/``
    (default ``carry``: ``results/carry``) whenever it writes its result file, and continues from
    there when its run directory has no checkpoint; the directory is removed when the run finishes
    (so a finished run extended later, ``keep_going`` or a larger budget, needs its run directory).
    A run that diverges (θ non-finite) ends with ``stopped: "diverged"`` and the final evaluation of
    its last finite θ, so the suite goes on with the next run.

    Raises:
        UserError: the run directory or the result file holds a run of another config, or a run to
            continue has a result file but neither a run directory nor a carry directory.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the result file and the checkpoint hold the run so far.
    """
    budget = task.budget if budget is None else budget
    path = result_path(results, task.env_id, seed)
    out = runs / f"{task.env_id}-seed{seed}"
    carried = (results / "carry" if carry is None else carry) / f"{task.env_id}-seed{seed}"
    config = shipped_config(task, seed, budget, workers)
    previous = json.loads(path.read_text()) if path.exists() else None
    if previous is not None and not same_experiment(previous["config"], config):
        raise UserError(f"{path} holds a run of another config than configs/{task.config}.json; remove it and {out} to start over")
    if previous and previous["finished"]:
        spent = previous["stopped"] == "diverged" or previous["budget_timesteps"] >= budget
        if spent or (previous["stopped"] == "reached" and not keep_going):
            shutil.rmtree(carried, ignore_errors=True)  # left by a sitting killed as it finished
            print(f"{task.env_id} seed {seed}: finished ({previous['stopped']}), skipped; {path}", flush=True)
            return dict(previous)
    checkpointed = RunDirectory(out).latest.exists()
    carried_in = not checkpointed and previous is not None and not previous["finished"] and carry_in(carried, out)
    resume = checkpointed or carried_in
    if previous is not None and not resume:
        raise UserError(
            f"{path} is a run to continue, but neither {out} nor {carried} has its checkpoint:"
            f" copy the run directory from the machine that ran it, or remove {path} to run it again (it retraces the same θ)"
        )
    if resume and _experiment(resolved_config(out)) != _experiment(config):
        where = f"{out} (from {carried})" if carried_in else str(out)
        raise UserError(f"{where} holds a run of another config than configs/{task.config}.json (seed {seed}); remove it to start over")
    # Result files written before sittings recorded their workers take the run's.
    sittings = [{"workers": previous["workers"], **s} for s in previous["sittings"]] if previous else []
    stopped = None
    with Trainer(config, out, resume=resume) as trainer:
        records = RunDirectory(out).records()
        # A run directory (or carry) behind the result file: the sittings past its generation are redone.
        sittings = [s for s in sittings if s["from_generation"] < trainer.generation]
        sittings.append(sitting(trainer.generation, trainer.workers))
        config = trainer.config
        print(
            f"{task.env_id} seed {seed}: {'resuming at generation ' + str(trainer.generation) if resume else 'starting'}"
            f" ({trainer.workers} workers, budget {budget:,} timesteps); {out}",
            flush=True,
        )
        written = time.monotonic()

        def reached() -> bool:
            return first_reached(records, evaluation_returns(records), task.final.value) is not None

        def each(record: dict[str, Any]) -> bool:
            nonlocal written
            records.append(record)
            if on_generation is not None:
                on_generation(record)
            if time.monotonic() - written > WRITE_EVERY:
                write_json(path, result(task, config, records, sittings, budget=budget, stopped=None, final=None))
                carry_out(out, carried)
                written = time.monotonic()
            return reached() and not keep_going

        try:
            if not (reached() and not keep_going) and not trainer.done():
                trainer.train(on_generation=each)
        except TrainingDiverged as error:
            print(f"{task.env_id} seed {seed}: {error}", flush=True)
            stopped = "diverged"
        except BaseException:
            write_json(path, result(task, config, records, sittings, budget=budget, stopped=None, final=None))
            carry_out(out, carried)
            raise
        if stopped is None:
            stopped = "reached" if reached() and not (keep_going and trainer.done()) else "budget"
    data = result(task, config, records, sittings, budget=budget, stopped=stopped, final=final_evaluation(out, seed))
    write_json(path, data)
    shutil.rmtree(carried, ignore_errors=True)
    line = data["scores"][-1]["reached"]
    where = f"reached {task.final.value:g} at {line['timesteps']:,} timesteps" if line else f"did not reach {task.final.value:g}"
    print(
        f"{task.env_id} seed {seed}: {where}; final θ {data['final_evaluation']['mean']:.1f} over {FINAL_EPISODES} episodes; {path}",
        flush=True,
    )
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("envs", nargs="+", metavar="ENV", help="gymnasium ids or config names of the suite's tasks, or 'all'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-timesteps", type=int, help="timesteps budget of each run (default: the task's)")
    parser.add_argument("--runs", type=Path, default=RUNS, help=f"where the run directories go (default: {RUNS.relative_to(ROOT)})")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where the result files go (default: {RESULTS.relative_to(ROOT)})")
    parser.add_argument(
        "--carry", type=Path, help="where runs under way keep what resuming them needs, for another machine (default: RESULTS/carry)"
    )
    parser.add_argument("--workers", type=int, help="evaluator processes (default: one per core)")
    parser.add_argument("--keep-going", action="store_true", help="spend the whole budget, also after the final score is reached")
    args = parser.parse_args(argv)
    if "all" in args.envs and args.envs != ["all"]:
        parser.error("'all' runs every task: give it alone, or name the tasks")
    try:
        tasks = list(TASKS.values()) if args.envs == ["all"] else [find_task(name) for name in args.envs]
    except UserError as error:
        parser.error(str(error))
    if args.budget_timesteps is not None and args.budget_timesteps < 1:
        parser.error(f"--budget-timesteps must be at least 1, got {args.budget_timesteps}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as esfast train: stop like Ctrl-C, result file written
    print(machine.describe(), f"; {args.workers or default_workers()} workers", sep="", flush=True)
    try:
        for task in tasks:
            for seed in args.seeds:
                run_one(
                    task,
                    seed,
                    budget=args.budget_timesteps,
                    runs=args.runs,
                    results=args.results,
                    carry=args.carry,
                    workers=args.workers,
                    keep_going=args.keep_going,
                )
    except UserError as error:
        print(f"learning_mujoco.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
