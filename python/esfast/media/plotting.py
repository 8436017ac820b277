"""Learning curves of run directories, drawn with matplotlib (``esfast[plot]``): what ``esfast plot`` draws.

Runs whose ``config.json`` agree apart from ``run.seed`` and the budget (``run.generations``,
``run.timesteps``) are one group: each run's curve is interpolated (linearly) onto a common grid,
the union of the runs' own x values over the range *every* run of the group covers, and the
group is drawn as the median with a band from the minimum to the maximum. The line and the band
stop where the shortest run of the group stops. Any other run has a line of its own. A legend
label is the config's ``exp_prefix`` (its ``env_id`` when the prefix is esfast's default),
followed by the config keys whose values differ between the groups, named as ``--set`` names
them.

Records whose y value is null (``eval_return_mean`` of a generation without evaluation
episodes) are left out. matplotlib is imported only when a figure is drawn, and is drawn through
its Agg canvas, so no display is needed and pyplot's global state is never touched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from esfast.config import Config, config_from_dict
from esfast.errors import ConfigError, UserError
from esfast.run_directory import RunDirectory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_X",
    "DEFAULT_Y",
    "MISSING_MATPLOTLIB",
    "X_FIELDS",
    "Curve",
    "Run",
    "draw_curves",
    "draw_run_returns",
    "learning_curves",
    "load_run",
    "new_figure",
    "plot_runs",
    "require_matplotlib",
    "save_figure",
]

logger = logging.getLogger(__name__)

MISSING_MATPLOTLIB = "esfast plot needs matplotlib: pip install 'esfast[plot]'"
# --x choices and the log field each one reads.
X_FIELDS = {"timesteps": "timesteps_total", "time": "time_elapsed", "generation": "generation"}
DEFAULT_X = "timesteps"
DEFAULT_Y = "eval_return_mean"
DEFAULT_OUT = "plot.png"
# Config keys in which runs of one group may differ: the seed, and how long each run went on.
# Keys that do not make another experiment: the seed, the budget, and what only changes how a run
# is executed or logged (a resume may change them).
SEED_KEYS = frozenset({"run.seed", "run.generations", "run.timesteps", "run.workers", "run.tensorboard"})
MAX_LABEL_KEYS = 3  # differing config keys a legend label shows; more are counted ("+2 more")
FIGURE_SIZE = (9.0, 5.6)  # inches, at 100 dpi: 900 x 560 pixels
FIGURE_DPI = 100


@dataclass(frozen=True, eq=False)
class Run:
    """One run directory, read.

    Attributes:
        path: the directory.
        config: ``config.json`` flattened to dotted keys (``config.noise_stdev``,
            ``policy.args.hidden_dims``), in the file's order.
        records: the records of ``log.jsonl``, one per generation.
    """

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]


@dataclass(frozen=True, eq=False)
class Curve:
    """One line of a figure: a single run, or the median and range of a group of seeds.

    Attributes:
        label: the legend label.
        runs: the run directories drawn by this curve (more than one: a group of seeds).
        x: the x values, shape ``(n,)``, non-decreasing.
        median: the median over the runs at each x, shape ``(n,)`` (a single run's own values).
        low: the minimum over the runs, shape ``(n,)`` (equal to ``median`` for a single run).
        high: the maximum over the runs, shape ``(n,)``.
    """

    label: str
    runs: tuple[Path, ...]
    x: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray


# Reading runs ----------------------------------------------------------------------------------


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_run(path: str | Path) -> Run:
    """Reads a run directory's ``config.json`` and ``log.jsonl`` (a line cut short by a crash, and
    what follows it, are left out, as :meth:`RunDirectory.records` does).

    Raises:
        UserError: ``path`` is not a directory, lacks either file, has an unreadable config or a
            log without records (one line).
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no run directory {path}")
    for name in ("log.jsonl", "config.json"):
        if not (path / name).is_file():
            raise UserError(f"{path} is not a run directory: it has no {name}")
    try:
        config = json.loads((path / "config.json").read_text())
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        raise UserError(f"{path / 'config.json'} is not JSON") from None
    if not isinstance(config, dict):
        raise UserError(f"{path / 'config.json'} must hold a JSON object")
    records = RunDirectory(path).records()  # the directory exists, so nothing is created
    if not records:
        raise UserError(f"{path / 'log.jsonl'} holds no generation yet")
    try:  # every key, missing ones at their defaults, so configs of different esfast versions compare
        config = config_from_dict(config).to_dict()
    except ConfigError as error:
        raise UserError(f"{path / 'config.json'} holds an unusable config: {error}") from None
    return Run(path, _flatten(config), records)


# Groups and curves -----------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _series(run: Run, x_field: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) points of a run's records that have numbers for both, sorted by x."""
    points = []
    for record in run.records:
        value = record.get(y)
        if value is not None and not _is_number(value):
            raise UserError(f"--y {y} is not a numeric field (its value in {run.path / 'log.jsonl'} is {value!r})")
        if value is not None and _is_number(record.get(x_field)):
            points.append((float(record[x_field]), float(value)))
    if not points:
        hint = " (the run evaluates no episodes: eval_prob is 0; try --y return_mean)" if y == DEFAULT_Y else ""
        raise UserError(f"{run.path / 'log.jsonl'} has no value of {y} in any record{hint}")
    xs, ys = np.array(points, dtype=np.float64).T
    order = np.argsort(xs, kind="stable")
    return xs[order], ys[order]


def _group_key(run: Run) -> str:
    return json.dumps(sorted((key, value) for key, value in run.config.items() if key not in SEED_KEYS))


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _labels(groups: list[list[Run]]) -> list[str]:
    """Legend labels: exp_prefix (or env_id) and the config keys that differ between the groups."""
    configs = [{k: v for k, v in group[0].config.items() if k not in SEED_KEYS} for group in groups]
    keys = list(dict.fromkeys(key for config in configs for key in config))
    unset = object()
    differing = [key for key in keys if len({json.dumps(c.get(key, unset), default=repr) for c in configs}) > 1]
    last_parts = [key.rsplit(".", 1)[-1] for key in keys]
    labels = []
    for config, group in zip(configs, groups):
        prefix = config.get("exp_prefix", Config.exp_prefix)
        head_key = "exp_prefix" if prefix != Config.exp_prefix else "env_id"
        head = _show(config.get(head_key, Config.env_id))
        shown = [key for key in differing if key != head_key]
        parts = []
        for key in shown[:MAX_LABEL_KEYS]:
            name = key.rsplit(".", 1)[-1]
            name = name if last_parts.count(name) == 1 else key  # as --set names it: the last part when unique
            parts.append(f"{name}={_show(config[key]) if key in config else 'unset'}")
        if len(shown) > MAX_LABEL_KEYS:
            parts.append(f"+{len(shown) - MAX_LABEL_KEYS} more")
        label = " ".join([head, *parts])
        if len(group) > 1:
            seeds = {run.config.get("run.seed") for run in group}
            label += f" ({len(group)} seeds)" if len(seeds) == len(group) else f" ({len(group)} runs)"
        labels.append(label)
    return labels


def _group_curve(group: list[Run], label: str, x_field: str, y: str) -> Curve:
    series = [_series(run, x_field, y) for run in group]
    paths = tuple(run.path for run in group)
    if len(series) == 1:
        xs, ys = series[0]
        return Curve(label, paths, xs, ys, ys.copy(), ys.copy())
    start = max(float(xs[0]) for xs, _ in series)
    stop = min(float(xs[-1]) for xs, _ in series)
    if start > stop:
        names = ", ".join(str(path) for path in paths)
        raise UserError(f"the runs {names} differ only in their seed but share no range of {x_field}; plot them with --x generation")
    grid = np.unique(np.concatenate([xs[(xs >= start) & (xs <= stop)] for xs, _ in series]))
    values = np.stack([np.interp(grid, xs, ys) for xs, ys in series])
    if stop < max(float(xs[-1]) for xs, _ in series):
        logger.info("%s: the median and band stop at %s %g, where the shortest of its %d runs ends", label, x_field, stop, len(group))
    return Curve(label, paths, grid, np.median(values, axis=0), values.min(axis=0), values.max(axis=0))


def learning_curves(runs: Sequence[Run], *, x: str = DEFAULT_X, y: str = DEFAULT_Y) -> list[Curve]:
    """Groups runs that differ only in their seed and computes one curve per group.

    Args:
        runs: the runs, e.g. from :func:`load_run`; groups keep the order of their first run.
        x: ``timesteps``, ``time`` (seconds) or ``generation`` (a key of :data:`X_FIELDS`).
        y: a numeric field of the log records.

    Returns:
        One :class:`Curve` per group: a single run's points (null values left out), or the
        median, minimum and maximum of the group's runs interpolated onto the union of their x
        values over the range all of them cover.

    Raises:
        UserError: no runs, an unknown ``x`` or ``y``, a run without a value of ``y``, or seeds of
            one group without a common range of ``x`` (one line).
    """
    if not runs:
        raise UserError("no run directories to plot")
    if x not in X_FIELDS:
        raise UserError(f"--x must be one of {', '.join(X_FIELDS)}, got {x!r}")
    fields = dict.fromkeys(key for run in runs for record in run.records for key in record)
    if y not in fields:
        numeric = [key for key in fields if any(_is_number(record.get(key)) for run in runs for record in run.records)]
        raise UserError(f"unknown --y field {y!r}; the logs have: {', '.join(numeric)}")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    members = list(groups.values())
    return [_group_curve(group, label, X_FIELDS[x], y) for group, label in zip(members, _labels(members))]


# Drawing ---------------------------------------------------------------------------------------


def require_matplotlib() -> None:
    """Checks that matplotlib can be imported (a script that trains first, then draws, asks before it trains).

    Raises:
        UserError: it is not installed (:data:`MISSING_MATPLOTLIB`).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(MISSING_MATPLOTLIB) from None


def new_figure() -> tuple[Figure, Axes]:
    """A figure of :data:`FIGURE_SIZE` on matplotlib's Agg canvas (no display) and its axes.

    Raises:
        UserError: matplotlib is not installed (:data:`MISSING_MATPLOTLIB`).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(MISSING_MATPLOTLIB) from None
    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(True, color="0.9")
    axes.set_axisbelow(True)
    return figure, axes


def draw_curves(axes: Axes, curves: Sequence[Curve], *, x: str = DEFAULT_X) -> None:
    """Draws each curve (a band from ``low`` to ``high`` where it has more than one run) and
    labels the x axis for ``x`` (timesteps in k/M, time in seconds, minutes or hours)."""
    from matplotlib.ticker import EngFormatter

    scale, unit = 1.0, "s"
    if x == "time":
        longest = max((float(curve.x[-1]) for curve in curves if curve.x.size), default=0.0)
        scale, unit = (3600.0, "h") if longest > 3 * 3600 else (60.0, "min") if longest > 3 * 60 else (1.0, "s")
    for curve in curves:
        xs = curve.x / scale
        (line,) = axes.plot(xs, curve.median, label=curve.label, linewidth=1.8, marker="o" if curve.x.size == 1 else None)
        if len(curve.runs) > 1:
            axes.fill_between(xs, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
    if x == "timesteps":
        axes.xaxis.set_major_formatter(EngFormatter(sep=""))
        axes.set_xlabel("timesteps")
    elif x == "time":
        axes.set_xlabel(f"wall-clock time ({unit})")
    else:
        axes.set_xlabel(x)


def draw_run_returns(axes: Axes, run: Run) -> None:
    """One run's evaluation return and its population's mean return against timesteps, labelled."""
    (evaluation,) = learning_curves([run], x="timesteps", y="eval_return_mean")
    (population,) = learning_curves([run], x="timesteps", y="return_mean")
    curves = [
        dataclasses.replace(evaluation, label="evaluation return (unperturbed policy)"),
        dataclasses.replace(population, label="mean return of the population"),
    ]
    draw_curves(axes, curves, x="timesteps")


def save_figure(figure: Figure, out: str | Path) -> Path:
    """Writes the figure to ``out``; the file name's suffix picks the format (``.png``, ``.svg``, ...).

    Raises:
        UserError: a suffix matplotlib cannot write.
        OSError: the file cannot be written.
    """
    out = Path(out)
    formats = figure.canvas.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        raise UserError(f"--out must end in .png or another format matplotlib writes ({', '.join(sorted(formats))}), got {str(out)!r}")
    figure.savefig(out)
    return out


def plot_runs(runs: list[Path], *, x: str = DEFAULT_X, y: str = DEFAULT_Y, out: Path = Path(DEFAULT_OUT)) -> Path:
    """Draws the learning curves of run directories into an image file.

    Args:
        runs: run directories (``config.json`` and ``log.jsonl`` each); the same directory given
            twice is drawn once. Runs that differ only in seed and budget are one median line
            with a min-max band (see :func:`learning_curves`).
        x: ``timesteps``, ``time`` or ``generation``.
        y: the log field to draw, e.g. ``eval_return_mean``, ``return_mean``, ``return_max``.
        out: the image file, written over if it exists; its suffix picks the format.

    Returns:
        ``out``.

    Raises:
        UserError: matplotlib is missing, a directory is not a run, or ``x``, ``y`` or ``out``
            cannot be used (one line each).
        OSError: the image cannot be written.
    """
    figure, axes = new_figure()  # first: without matplotlib nothing else matters
    unique = list(dict.fromkeys(Path(run).resolve() for run in runs))
    given = {Path(run).resolve(): Path(run) for run in reversed(runs)}  # label paths as the user gave them
    curves = learning_curves([load_run(given[path]) for path in unique], x=x, y=y)
    draw_curves(axes, curves, x=x)
    axes.set_ylabel(y)
    if any(len(curve.runs) > 1 for curve in curves):
        axes.legend(title="seeds: median, band from min to max", fontsize="small", title_fontsize="small")
    else:
        axes.legend(fontsize="small")
    return save_figure(figure, out)
