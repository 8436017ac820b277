"""The MuJoCo suite's table and figure, from the result files of ``benchmarks/learning_mujoco.py`` alone.

The table has a row per task: the final score, the paper's ES timesteps for it, the target, the
timesteps at which esfast's evaluation return first reached the score (median over the seeds,
and their range), the ratio of that median to the paper's timesteps, the final θ's return and
the wall-clock of the median seed with its machine. The figure has a panel per task: the
evaluation return against timesteps, each seed's curve, their median and min-max band as far as
every seed ran (a run stops at the final score), and the paper's Table 3 points (timesteps its
ES needed for 25%, 50%, 75% and 100% of TRPO's final score) marked. Drawn with matplotlib (``pip install 'esfast[plot]'``).

Usage:
    python benchmarks/mujoco_report.py [--results DIR] [--table FILE.md] [--figure FILE.png] [--readme README.md]

``--readme`` replaces the part of the README between the lines ``<!-- mujoco-table -->`` and
``<!-- /mujoco-table -->`` with the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esfast.errors import UserError
from esfast.media import plotting

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_mujoco import FINAL_EPISODES, RESULTS, ROOT, SCHEMA, TASKS, WINDOW, core_minutes, same_experiment, shipped_config

TABLE = RESULTS / "table.md"
FIGURE = ROOT / "docs" / "figures" / "mujoco-suite.png"
README_START, README_END = "<!-- mujoco-table -->", "<!-- /mujoco-table -->"
CURVE_POINTS = 400
TARGET_SEEDS = 3  # a target is met by the median of seeds 0, 1 and 2 (the rule): fewer seeds meet none
RESULT_KEYS = {"seed", "config", "finished", "stopped", "budget_timesteps", "scores", "final_evaluation", "timesteps_total"}
RESULT_KEYS |= {"train_seconds", "workers", "core_minutes", "sittings", "curve"}


def load_results(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The result files under ``directory``, by task in the suite's order, each task's by seed.

    Raises:
        UserError: no result files, or one that is not a result file of this schema (one line).
    """
    by_task: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*-seed*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{path} cannot be read: {error}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("env_id") not in TASKS or not RESULT_KEYS <= set(data):
            raise UserError(f"{path} is not a result file of learning_mujoco.py (schema {SCHEMA})")
        task = TASKS[data["env_id"]]
        if not same_experiment(data["config"], shipped_config(task, data["seed"], task.budget, None)):
            raise UserError(f"{path} is a run of another config than today's configs/{task.config}.json: run it again or remove it")
        by_task.setdefault(data["env_id"], []).append(data)
    if not by_task:
        raise UserError(f"{directory} holds no result files (<env>-seed<k>.json); run benchmarks/learning_mujoco.py first")
    return {env: sorted(by_task[env], key=lambda r: r["seed"]) for env in TASKS if env in by_task}


def _steps(value: float) -> str:
    """Timesteps as the table shows them: 1.32M, 455k."""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.0f}k"


def under_way(result: dict[str, Any]) -> bool:
    """Whether the run may still reach its final score: interrupted, or stopped at a budget below
    its task's (a sitting's ``--budget-timesteps``)."""
    if not result["finished"]:
        return True
    return result["stopped"] == "budget" and result["budget_timesteps"] < TASKS[result["env_id"]].budget


def _target_open(results: Sequence[dict[str, Any]], target: float) -> bool:
    """Whether the median may still come within ``target`` timesteps: enough seeds reached the score
    within it, are under way with fewer timesteps than it so far (a run past the target's
    timesteps may still reach the score, but not within the target), or have not started (of the
    :data:`TARGET_SEEDS` a target is judged on)."""
    within = sum(reached_timesteps(r) <= target for r in results)
    possible = within + sum(under_way(r) and math.isinf(reached_timesteps(r)) and r["timesteps_total"] < target for r in results)
    seeds = max(len(results), TARGET_SEEDS)
    return possible + seeds - len(results) >= seeds // 2 + 1


def reached_timesteps(result: dict[str, Any]) -> float:
    """Timesteps at which the run's evaluation return first reached the final score (inf: not reached)."""
    reached = result["scores"][-1]["reached"]
    return math.inf if reached is None else float(reached["timesteps"])


def median_seed(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The seed whose timesteps to the final score are the median (the later one for an even count:
    of two seeds, the median has reached a score only once both have); among seeds without the
    score, the one with the higher best evaluation return comes first."""
    ordered = sorted(results, key=lambda r: (reached_timesteps(r), -_best(r)))
    return ordered[len(ordered) // 2]


def row(results: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One task's table row from its seeds' result files."""
    first = results[0]
    task = TASKS[first["env_id"]]
    final = task.final
    times = sorted(reached_timesteps(r) for r in results)
    middle = median_seed(results)
    median = reached_timesteps(middle)

    def show(value: float, result: dict[str, Any] | None = None) -> str:
        if not math.isinf(value):
            return _steps(value)
        return "not yet" if result is not None and under_way(result) else "not reached"

    if math.isinf(median):
        pending = any(under_way(r) for r in results if math.isinf(reached_timesteps(r)))
        reached = f"{'not yet' if pending else 'not reached'} (best {_best(middle):.0f} within {_steps(middle['timesteps_total'])})"
    else:
        reached = _steps(median)
    unreached = [r for r in results if math.isinf(reached_timesteps(r))]
    # The range's top: a seed that spent its budget without the score, else one still under way.
    last = next((r for r in unreached if not under_way(r)), unreached[0] if unreached else None)
    spread = f"{show(times[0], last)} – {show(times[-1], last)}" if len(results) > 1 else ""
    paper = final.paper_timesteps
    ratio = f"{median / paper:.2f}" if paper and not math.isinf(median) else "–"
    if math.isinf(task.target_timesteps):
        target, met = "–", "–"
    else:
        target = f"≤ {_steps(task.target_timesteps)}"
        met = (
            "yes"
            if median <= task.target_timesteps and len(results) >= TARGET_SEEDS
            else ("not yet" if _target_open(results, task.target_timesteps) else "no")
        )
    finals = [r["final_evaluation"]["mean"] for r in results if r["final_evaluation"]]
    three_quarters = _three_quarters(results)
    final_text = f"{np.median(finals):.0f}" if finals else "–"
    seconds = middle["scores"][-1]["reached"]["seconds"] if not math.isinf(median) else middle["train_seconds"]
    until = middle["scores"][-1]["reached"]["generation"] if not math.isinf(median) else None
    history = middle["curve"]
    sittings = [{"workers": middle["workers"], **s} for s in middle["sittings"]]  # files from before sittings had workers
    cost = core_minutes(list(zip(history["generation"], history["seconds"], strict=True)), sittings, until)
    return {
        "task": task.env_id,
        "score": f"{final.value:g}",
        "paper ES": _steps(paper) if paper else "–",
        "target": target,
        "esfast (median)": reached,
        "range": spread,
        "ratio": ratio,
        "met": met,
        "75% score: esfast / paper": three_quarters,
        "final θ": final_text,
        "wall-clock (median seed)": f"{seconds / 60:.1f} min, {middle['workers']} workers",
        "core-minutes": f"{cost:.0f}" if cost >= 10 else f"{cost:.1f}",
        "seeds": ", ".join(f"{r['seed']}{'*' if under_way(r) else ''}" for r in results),
    }


def _three_quarters(results: Sequence[dict[str, Any]]) -> str:
    """Median timesteps to 75% of TRPO's final score against the paper's ES, where the paper has it:
    progress of runs that have not reached the final score yet."""
    steps = []
    for result in results:
        score = next((s for s in result["scores"] if s["label"] == "75%"), None)
        if score is None:
            return "–"
        steps.append(math.inf if score["reached"] is None else float(score["reached"]["timesteps"]))
        paper = score["paper_timesteps"]
    median = sorted(steps)[(len(steps) - 1) // 2]
    return f"{'not yet' if math.isinf(median) else _steps(median)} / {_steps(paper)}"


def _best(result: dict[str, Any]) -> float:
    values = [v for v in result["curve"]["evaluation_return"] if v is not None]
    return max(values, default=-math.inf)


def table(by_task: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown table with a line below saying what its columns and marks mean, and the machines."""
    rows = [row(results) for results in by_task.values()]
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
    sittings = [s for results in by_task.values() for r in results for s in r["sittings"]]
    machines = sorted({s["machine"] for s in sittings})
    loads = [s["load_average"] for s in sittings if s.get("load_average") is not None]
    lines += [
        "",
        f"Timesteps until the evaluation return (the mean over the last {WINDOW} generations' evaluation episodes"
        " of the unperturbed policy) first reached the score; median and range over the seeds; ratio: median / paper."
        f" final θ: the median over seeds of the final θ's mean return over {FINAL_EPISODES} episodes"
        " (of the last sitting, for a run under way)."
        " wall-clock and core-minutes (training time x evaluator processes, summed over sittings): the median seed's, to the score"
        " or, not reached, so far."
        " * : a run under way (its budget not spent).",
        "Machines: "
        + "; ".join(m.removeprefix("cpu: ") for m in machines)
        + "."
        + (
            f" The machine was shared with other work (load average {min(loads):.1f} to {max(loads):.1f} at the sittings' starts),"
            " which slows the wall-clock, not the timesteps."
            if loads and max(loads) > max(s["cores"] for s in sittings)
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"


def curve(results: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, median, low, high) of the seeds' evaluation returns on a common timesteps grid, where
    every seed has run (runs stop at the final score, so a seed's curve ends where it got there)."""
    series = []
    for result in results:
        points = [(t, v) for t, v in zip(result["curve"]["timesteps"], result["curve"]["evaluation_return"], strict=True) if v is not None]
        if points:
            series.append(np.array(points, dtype=np.float64))
    if not series:
        return (np.empty(0),) * 4  # type: ignore[return-value]
    start, end = max(s[0, 0] for s in series), min(s[-1, 0] for s in series)
    if start > end:  # a seed ended before another's first evaluation return
        return (np.empty(0),) * 4  # type: ignore[return-value]
    x = np.geomspace(start, end, CURVE_POINTS)  # the figure's axis is logarithmic
    values = np.array([np.interp(x, s[:, 0], s[:, 1]) for s in series])
    return x, np.median(values, axis=0), values.min(axis=0), values.max(axis=0)


def figure(by_task: dict[str, list[dict[str, Any]]], out: Path) -> Path:
    """A panel per task: median evaluation return over seeds, the min-max band, the paper's points."""
    plotting.require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, NullFormatter

    count = len(by_task)
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(4.2 * columns, 3.3 * rows), dpi=plotting.FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for index, (env_id, results) in enumerate(by_task.items()):
        task = TASKS[env_id]
        axes = fig.add_subplot(rows, columns, index + 1)
        axes.grid(True, color="0.9")
        axes.set_axisbelow(True)
        x, median, low, high = curve(results)
        seeds = ", ".join(str(r["seed"]) for r in results)
        (line,) = axes.plot(x, median, linewidth=1.8, label=f"esfast, median of seeds {seeds}")
        if len(results) > 1:
            axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0, label="min – max over seeds")
            for k, result in enumerate(results):  # each seed to its end, past the shortest
                steps, values = result["curve"]["timesteps"], result["curve"]["evaluation_return"]
                points = [(t, v) for t, v in zip(steps, values, strict=True) if v is not None]
                if points:
                    label = "each seed" if k == 0 else None
                    axes.plot(*zip(*points, strict=True), color=line.get_color(), linewidth=0.7, alpha=0.5, label=label)
        paper = [(s.paper_timesteps, s.value) for s in task.scores if s.paper_timesteps is not None]
        if paper:
            axes.scatter(*zip(*paper, strict=True), marker="x", s=40, color="tab:red", zorder=3, label="paper's ES (Table 3)")
        axes.axhline(task.final.value, color="0.6", linestyle="--", linewidth=0.8)
        if not math.isinf(task.target_timesteps):
            axes.axvline(task.target_timesteps, color="0.6", linestyle=":", linewidth=0.8, label="target timesteps")
        axes.set_title(env_id, fontsize="medium")
        axes.set_xscale("log")  # the paper's points span two decades, the runs that stop early too
        axes.xaxis.set_major_formatter(EngFormatter(sep=""))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("timesteps (log scale)")
        axes.set_ylabel("evaluation return")
        if index == 0:
            axes.legend(loc="lower right", fontsize="x-small")
    return plotting.save_figure(fig, out)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the README markers replaced by ``block``.

    Raises:
        UserError: the markers are missing or out of order.
    """
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise UserError(f"the README has no {README_START} ... {README_END} block")
    return text[: start + len(README_START)] + "\n" + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--readme", type=Path, help="also put the table into this README between its markers")
    args = parser.parse_args(argv)
    try:
        by_task = load_results(args.results)
        text = table(by_task)
        args.table.write_text(text)
        print(text)
        print(f"table written to {args.table}; figure to {figure(by_task, args.figure)}")
        if args.readme:
            args.readme.write_text(replace_block(args.readme.read_text(), text))
            print(f"table put into {args.readme}")
    except UserError as error:
        print(f"mujoco_report.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
