"""esfast.media.plotting and ``esfast plot``: grouping of seeds, median and band, labels, the figure, and its one-line errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from esfast import cli
from esfast.config import Config, ESSettings, RunSettings
from esfast.errors import UserError
from esfast.media import plotting
from esfast.run_directory import RunDirectory

HALFCHEETAH = Config(env_id="HalfCheetah-v5", exp_prefix="halfcheetah")


def fake_run(path: Path, config: Config, steps: list[int], values: list[float | None], *, seconds: float = 2.0) -> Path:
    """A run directory with config.json and one log record per (timesteps_total, eval_return_mean)."""
    RunDirectory(path).write_config(config)
    lines = []
    for generation, (total, value) in enumerate(zip(steps, values), start=1):
        record = {
            "generation": generation,
            "timesteps_total": total,
            "episodes_total": 40 * generation,
            "time_elapsed": seconds * generation,
            "return_mean": float(generation),
            "return_max": float(generation) + 1,
            "eval_return_mean": value,
            "steps_per_second": 1000.0,
            "hosts": "local",
        }
        lines.append(json.dumps(record) + "\n")
    (path / "log.jsonl").write_text("".join(lines))
    return path


def seeded(config: Config, seed: int, generations: int) -> Config:
    return dataclasses.replace(config, run=RunSettings(seed=seed, generations=generations))


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Three seeds of one config (the third one generation shorter, another budget) and one other config."""
    return [
        fake_run(tmp_path / "seed0", seeded(HALFCHEETAH, 0, 5), [100, 200, 300, 400, 500], [1, 2, 3, 4, 5]),
        fake_run(tmp_path / "seed1", seeded(HALFCHEETAH, 1, 5), [110, 210, 310, 410, 510], [2, 4, 6, 8, 10]),
        fake_run(tmp_path / "seed2", seeded(HALFCHEETAH, 2, 4), [120, 220, 320, 420], [0, 0, 0, 0]),
        fake_run(
            tmp_path / "noisier",
            dataclasses.replace(HALFCHEETAH, es=ESSettings(noise_stdev=0.05)),
            [100, 200, 300],
            [None, 7.0, None],
        ),
    ]


def test_seeds_are_one_median_line_with_a_band_that_stops_with_the_shortest_run(runs: list[Path]) -> None:
    group, other = plotting.learning_curves([plotting.load_run(run) for run in runs], x="timesteps", y="eval_return_mean")
    assert group.runs == tuple(runs[:3]) and other.runs == (runs[3],)
    # The grid: every run's own x values over the range all three cover, [120, 420].
    assert group.x.tolist() == [120, 200, 210, 220, 300, 310, 320, 400, 410, 420]
    series = [([100, 200, 300, 400, 500], [1, 2, 3, 4, 5]), ([110, 210, 310, 410, 510], [2, 4, 6, 8, 10]), ([120, 220, 320, 420], [0] * 4)]
    reference = np.stack([np.interp(group.x, xs, ys) for xs, ys in series])
    np.testing.assert_allclose(group.median, np.median(reference, axis=0))
    np.testing.assert_allclose(group.low, reference.min(axis=0))
    np.testing.assert_allclose(group.high, reference.max(axis=0))
    # By hand at x = 120: seed 0 is at 1.2, seed 1 at 2.2, seed 2 at 0.
    assert (group.median[0], group.low[0], group.high[0]) == pytest.approx((1.2, 0.0, 2.2))
    # The other config: its own line, nulls left out.
    assert other.x.tolist() == [200] and other.median.tolist() == other.low.tolist() == other.high.tolist() == [7.0]


def test_labels_name_the_experiment_and_the_keys_that_differ(runs: list[Path]) -> None:
    curves = plotting.learning_curves([plotting.load_run(run) for run in runs])
    assert [curve.label for curve in curves] == ["halfcheetah noise_stdev=0.02 (3 seeds)", "halfcheetah noise_stdev=0.05"]
    alone = plotting.learning_curves([plotting.load_run(runs[0])])
    assert [curve.label for curve in alone] == ["halfcheetah"]


def test_labels_fall_back_to_the_env_id_and_count_the_keys_past_the_limit(tmp_path: Path) -> None:
    base = Config(env_id="Hopper-v5")  # exp_prefix is esfast's default: the env id names the run
    other = dataclasses.replace(
        base, es=ESSettings(noise_stdev=0.05, l2coeff=0.01, episodes_per_batch=20, eval_prob=0.1), env_id="Walker2d-v5"
    )
    runs = [fake_run(tmp_path / "a", base, [10], [1.0]), fake_run(tmp_path / "b", other, [10], [2.0])]
    labels = [curve.label for curve in plotting.learning_curves([plotting.load_run(run) for run in runs])]
    assert labels == [
        "Hopper-v5 noise_stdev=0.02 episodes_per_batch=40 eval_prob=0.003 +1 more",
        "Walker2d-v5 noise_stdev=0.05 episodes_per_batch=20 eval_prob=0.1 +1 more",
    ]


def test_the_x_axis_may_be_time_or_generation(runs: list[Path]) -> None:
    loaded = [plotting.load_run(run) for run in runs[:3]]
    (by_generation,) = plotting.learning_curves(loaded, x="generation")
    assert by_generation.x.tolist() == [1, 2, 3, 4] and by_generation.median.tolist() == [1, 2, 3, 4]
    (by_time,) = plotting.learning_curves(loaded, x="time", y="return_max")
    assert by_time.x.tolist() == [2, 4, 6, 8] and by_time.high.tolist() == [2, 3, 4, 5]


def _colors(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


@pytest.mark.parametrize("x", ["timesteps", "time", "generation"])
def test_the_figure_is_a_png_with_something_drawn(runs: list[Path], tmp_path: Path, x: str) -> None:
    out = plotting.plot_runs(runs, x=x, y="eval_return_mean", out=tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    image = matplotlib.image.imread(out)
    assert image.shape == (560, 900, 4)
    assert _colors(image) > 10  # lines, a band, text: far from a blank canvas


def test_the_command_writes_the_figure_where_asked(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    out = tmp_path / "figure.png"
    args = parser.parse_args(["plot", *map(str, runs), "--y", "return_mean", "--out", str(out)])
    assert (args.x, args.y) == ("timesteps", "return_mean")
    assert args.handler(args) == 0
    assert capsys.readouterr().out == f"plot written to {out}\n"
    assert out.read_bytes().startswith(b"\x89PNG")
    defaults = parser.parse_args(["plot", str(runs[0])])
    assert (defaults.x, defaults.y, defaults.out) == ("timesteps", "eval_return_mean", "plot.png")


def test_a_run_given_twice_is_drawn_once(runs: list[Path], tmp_path: Path) -> None:
    plotting.plot_runs([runs[0], runs[0]], x="timesteps", y="return_mean", out=tmp_path / "once.png")
    (curve,) = plotting.learning_curves([plotting.load_run(runs[0])])
    assert curve.runs == (runs[0],)


def _hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_without_matplotlib_the_error_names_the_extra(runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_matplotlib(monkeypatch)
    with pytest.raises(UserError) as error:
        plotting.plot_runs(runs, x="timesteps", y="eval_return_mean", out=tmp_path / "plot.png")
    assert str(error.value) == "esfast plot needs matplotlib: pip install 'esfast[plot]'"
    assert error.value.__suppress_context__  # no "during handling of ImportError" in anything that prints it
    assert not (tmp_path / "plot.png").exists()


def bad_input(tmp_path: Path) -> list[tuple[list[str], str]]:
    """(command-line arguments, the start of the one-line error)."""
    empty = tmp_path / "empty"
    RunDirectory(empty).write_config(HALFCHEETAH)
    (empty / "log.jsonl").write_text("")
    no_log = tmp_path / "no-log"
    RunDirectory(no_log).write_config(HALFCHEETAH)
    no_evals = fake_run(tmp_path / "no-evals", HALFCHEETAH, [10, 20], [None, None])
    good = fake_run(tmp_path / "good", HALFCHEETAH, [10, 20], [1.0, 2.0])
    return [
        ([str(tmp_path / "missing")], f"no run directory {tmp_path / 'missing'}"),
        ([str(no_log)], f"{no_log} is not a run directory: it has no log.jsonl"),
        ([str(empty)], f"{empty / 'log.jsonl'} holds no generation yet"),
        ([str(good), "--y", "eval_return"], "unknown --y field 'eval_return'; the logs have: generation, timesteps_total"),
        ([str(good), "--y", "hosts"], "--y hosts is not a numeric field"),
        ([str(no_evals)], f"{no_evals / 'log.jsonl'} has no value of eval_return_mean in any record (the run evaluates no episodes"),
        ([str(good), "--out", str(tmp_path / "plot.xyz")], "--out must end in .png or another format matplotlib writes"),
    ]


def test_bad_input_is_a_one_line_user_error(tmp_path: Path) -> None:
    parser = cli.build_parser()
    for argv, message in bad_input(tmp_path):
        args = parser.parse_args(["plot", "--out", str(tmp_path / "plot.png"), *argv])  # an --out of argv comes last and wins
        with pytest.raises(UserError) as error:
            args.handler(args)
        assert str(error.value).startswith(message) and "\n" not in str(error.value), argv
    assert not (tmp_path / "plot.png").exists()


# The real command line, in a subprocess (optionally as if matplotlib were not installed).
COMMAND = """
import sys
if sys.argv[1] == "--no-matplotlib":
    sys.modules["matplotlib"] = None
    del sys.argv[1]
from esfast import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def esfast_plot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", COMMAND, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_the_command_line_prints_one_line_and_exits_2(runs: list[Path], tmp_path: Path) -> None:
    result = esfast_plot("--no-matplotlib", "plot", str(runs[0]), cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "esfast: error: esfast plot needs matplotlib: pip install 'esfast[plot]'\n",
    )
    result = esfast_plot("plot", str(tmp_path / "missing"), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, f"esfast: error: no run directory {tmp_path / 'missing'}\n")
    result = esfast_plot("plot", *map(str, runs), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "halfcheetah noise_stdev=0.02 (3 seeds): the median and band stop at timesteps_total 420, where the shortest of its 3 runs ends",
        "plot written to plot.png",
    ]
    assert (tmp_path / "plot.png").is_file()  # the default: plot.png in the current directory


def test_importing_esfast_plotting_does_not_import_matplotlib() -> None:
    code = "import sys, esfast.media.plotting, esfast.cli; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == "False\n"


def test_records_are_read_as_the_run_directory_reads_them(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "torn", HALFCHEETAH, [10, 20], [1.0, 2.0])
    with open(run / "log.jsonl", "a") as file:
        file.write('{"generation": 3, "timesteps_tot')  # cut short by a crash
    loaded = plotting.load_run(run)
    assert [record["generation"] for record in loaded.records] == [1, 2]
    assert loaded.config["config.noise_stdev"] == 0.02 and loaded.config["run.seed"] == 0


def test_seeds_stay_one_group_whatever_a_resume_or_an_older_version_changed(tmp_path: Path) -> None:
    resumed = dataclasses.replace(HALFCHEETAH, run=RunSettings(seed=1, generations=5, workers=7, tensorboard=True))
    first = fake_run(tmp_path / "a", seeded(HALFCHEETAH, 0, 5), [100, 200, 300], [1, 2, 3])
    second = fake_run(tmp_path / "b", resumed, [100, 200, 300], [3, 4, 5])
    older = fake_run(tmp_path / "c", seeded(HALFCHEETAH, 2, 5), [100, 200, 300], [5, 6, 7])
    saved = json.loads((older / "config.json").read_text())
    del saved["run"]["tensorboard"]  # a config.json written before the key existed
    (older / "config.json").write_text(json.dumps(saved))
    curves = plotting.learning_curves([plotting.load_run(p) for p in (first, second, older)], x="timesteps", y="eval_return_mean")
    assert len(curves) == 1 and curves[0].label.endswith("(3 seeds)")
