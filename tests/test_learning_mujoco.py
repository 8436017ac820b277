"""The MuJoCo suite's runner (benchmarks/learning_mujoco.py) and table builder (benchmarks/mujoco_report.py)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import learning_mujoco as lm
import mujoco_report as report

from esfast.checkpoint import load_checkpoint
from esfast.errors import TrainingDiverged, UserError

PAPER_TABLE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_mujoco_table3.csv"
TASK = lm.TASKS["InvertedPendulum-v5"]
HOPPER = lm.TASKS["Hopper-v5"].budget
BUDGET = 3000  # timesteps: a few generations of InvertedPendulum's early, short episodes


def _theta_of(checkpoint: Path) -> np.ndarray:
    state, _ = load_checkpoint(checkpoint)
    return np.asarray(state["theta"])


def _theta(run: Path) -> np.ndarray:
    return _theta_of(run / "checkpoints" / "latest.npz")


def test_paper_numbers_are_the_reference_table() -> None:
    with open(PAPER_TABLE) as file:
        rows = list(csv.DictReader(line for line in file if not line.startswith("#")))
    expected: dict[str, list[tuple[str, float, float]]] = {}
    for r in rows:
        expected.setdefault(r["env"], []).append((r["pct_TRPO_progress"], float(r["TRPO_score"]), float(r["ES_timesteps"])))
    assert {env: list(scores) for env, scores in lm.PAPER_TABLE3.items()} == expected


def test_every_task_has_a_shipped_config_for_its_environment() -> None:
    for task in lm.TASKS.values():
        config = lm.shipped_config(task, 0, 1000, None)
        assert config.env_id == task.env_id
        assert config.eval_episodes() >= 2  # the evaluation window holds at least 10 episodes


def test_one_lucky_generation_does_not_reach_a_score() -> None:
    records = [{"generation": g + 1, "timesteps_total": 100 * (g + 1), "time_elapsed": g + 1.0, "eval_return_mean": 10.0} for g in range(8)]
    records[6]["eval_return_mean"] = 1000.0
    evaluations = lm.evaluation_returns(records)
    assert evaluations[: lm.WINDOW - 1] == [None] * (lm.WINDOW - 1)
    assert lm.first_reached(records, evaluations, 500.0) is None
    assert lm.first_reached(records, evaluations, 200.0) == {"generation": 7, "timesteps": 700, "seconds": 7.0}


def test_runner_writes_the_result_file_and_skips_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = lm.run_one(TASK, 0, budget=BUDGET, runs=tmp_path / "runs", results=tmp_path / "results", workers=1)
    path = tmp_path / "results" / "InvertedPendulum-v5-seed0.json"
    assert json.loads(path.read_text()) == data
    assert data["env_id"] == "InvertedPendulum-v5" and data["seed"] == 0 and data["config_name"] == "inverted_pendulum"
    assert data["finished"] and data["stopped"] == "budget" and data["budget_timesteps"] == BUDGET
    assert data["timesteps_total"] >= BUDGET and data["generations"] == len(data["curve"]["timesteps"]) >= 1
    assert [s["label"] for s in data["scores"]] == ["25%", "50%", "75%", "100%"]
    assert [s["paper_timesteps"] for s in data["scores"]] == [6.25e4, 1.43e5, 2.55e5, 4.55e5]
    assert data["target"] == {"score": 1000.0, "timesteps": 227500.0, "source": TASK.source, "met": False}
    final = data["final_evaluation"]
    assert final["episodes"] == 10 and len(final["returns"]) == 10 and final["mean"] == pytest.approx(np.mean(final["returns"]))
    assert all(length >= 1 for length in final["lengths"])
    assert data["timesteps_per_second"] > 0 and data["workers"] == 1
    (sitting,) = data["sittings"]
    assert sitting["cores"] >= 1 and sitting["cpu"] and sitting["from_generation"] == 0
    assert sitting["commit"] is None or len(sitting["commit"]) == 40
    assert data["config"]["config"] == lm.shipped_config(TASK, 0, BUDGET, None).to_dict()["config"]

    mtime = path.stat().st_mtime_ns
    capsys.readouterr()
    again = lm.run_one(TASK, 0, budget=BUDGET, runs=tmp_path / "runs", results=tmp_path / "results", workers=1)
    assert again == data and path.stat().st_mtime_ns == mtime
    assert "finished (budget), skipped" in capsys.readouterr().out


def test_an_interrupted_run_resumes_to_the_same_theta(tmp_path: Path) -> None:
    budget = 2 * BUDGET
    whole = lm.run_one(TASK, 1, budget=budget, runs=tmp_path / "whole", results=tmp_path / "whole-results", workers=1)

    def interrupt(record: dict[str, Any]) -> None:
        if record["generation"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lm.run_one(TASK, 1, budget=budget, runs=tmp_path / "cut", results=tmp_path / "cut-results", workers=1, on_generation=interrupt)
    partial = json.loads((tmp_path / "cut-results" / "InvertedPendulum-v5-seed1.json").read_text())
    assert not partial["finished"] and partial["stopped"] is None and partial["final_evaluation"] is None
    assert partial["generations"] == 2

    resumed = lm.run_one(TASK, 1, budget=budget, runs=tmp_path / "cut", results=tmp_path / "cut-results", workers=2)
    assert np.array_equal(_theta(tmp_path / "cut" / "InvertedPendulum-v5-seed1"), _theta(tmp_path / "whole" / "InvertedPendulum-v5-seed1"))
    assert [s["from_generation"] for s in resumed["sittings"]] == [0, 2]
    assert resumed["curve"]["timesteps"] == whole["curve"]["timesteps"]
    assert resumed["curve"]["evaluation_return"] == whole["curve"]["evaluation_return"]
    assert resumed["final_evaluation"] == whole["final_evaluation"]


def test_a_run_directory_of_another_config_is_refused(tmp_path: Path) -> None:
    lm.run_one(TASK, 0, budget=BUDGET, runs=tmp_path / "runs", results=tmp_path / "results", workers=1)
    (tmp_path / "results" / "InvertedPendulum-v5-seed0.json").unlink()
    (tmp_path / "runs" / "InvertedPendulum-v5-seed1").symlink_to(tmp_path / "runs" / "InvertedPendulum-v5-seed0")
    with pytest.raises(UserError, match="holds a run of another config"):
        lm.run_one(TASK, 1, budget=BUDGET, runs=tmp_path / "runs", results=tmp_path / "results", workers=1)


def test_unknown_tasks_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        lm.main(["Pong-v5"])
    assert exit_info.value.code == 2
    assert "'Pong-v5' is not a task of the suite" in capsys.readouterr().err


# The table builder, on result files made here --------------------------------------------------


def _result(env_id: str, seed: int, reach_at: int | None, *, finished: bool = True, budget: int = 10_000_000) -> dict[str, Any]:
    """A result file of a run that crosses the final score at ``reach_at`` timesteps (None: never)."""
    task = lm.TASKS[env_id]
    config = lm.shipped_config(task, seed, budget, 2)
    end = (reach_at or budget) + 10 * 50_000 if finished else (reach_at or budget) // 2
    steps = list(range(50_000, end + 1, 50_000))
    score = task.final.value
    values = [score * (1.0 if reach_at is not None and t >= reach_at else 0.5 * t / budget) for t in steps]
    records = [
        {"generation": g + 1, "timesteps_total": t, "time_elapsed": t / 20_000, "eval_return_mean": v, "return_mean": v / 2}
        for g, (t, v) in enumerate(zip(steps, values, strict=True))
    ]
    machine = "cpu: Test CPU (avx2); 2 cores available; esfast code path avx2"
    sittings = [{"machine": machine, "cores": 2, "load_average": 1.5, "from_generation": 0, "workers": 2}]
    final = {"episodes": 10, "mean": values[-1]} if finished else None
    stopped = ("reached" if reach_at is not None else "budget") if finished else None
    return lm.result(task, config, records, sittings, budget=budget, stopped=stopped, final=final)


def _write(directory: Path, results: list[dict[str, Any]]) -> None:
    for data in results:
        lm.write_json(lm.result_path(directory, data["env_id"], data["seed"]), data)


def test_the_table_takes_median_range_and_ratio_over_seeds(tmp_path: Path) -> None:
    _write(
        tmp_path,
        [
            _result("HalfCheetah-v5", 0, 1_000_000),
            _result("HalfCheetah-v5", 1, 2_000_000),
            _result("HalfCheetah-v5", 2, 1_500_000),
            _result("Hopper-v5", 0, None, budget=HOPPER),
            _result("Hopper-v5", 1, 5_000_000, budget=HOPPER),
            _result("Hopper-v5", 2, None, finished=False, budget=HOPPER),
        ],
    )
    by_task = report.load_results(tmp_path)
    assert list(by_task) == ["HalfCheetah-v5", "Hopper-v5"]  # the suite's order
    cheetah, hopper = (report.row(results) for results in by_task.values())
    # The window of 5 generations of 50k timesteps: the mean reaches the score 4 generations after the crossing.
    assert cheetah["esfast (median)"] == "1.70M" and cheetah["range"] == "1.20M – 2.20M"
    assert cheetah["ratio"] == f"{1.70e6 / 2.88e6:.2f}" and cheetah["met"] == "no" and cheetah["target"] == "≤ 1.44M"
    assert cheetah["paper ES"] == "2.88M" and cheetah["seeds"] == "0, 1, 2"
    # The median seed (2) to its score: 1.70M timesteps at 20k a second on 2 workers, 170 core-seconds.
    assert cheetah["wall-clock (median seed)"] == "1.4 min, 2 workers" and cheetah["core-minutes"] == "2.8"
    # Seed 0 spent the task's budget without the score (the range's top); seed 2, under way, may still
    # give a median. The median seed shown is seed 0, whose best is the mean of its last 5 evaluations,
    # half the score x 32.0M / 31.6M.
    assert hopper["esfast (median)"] == "not yet (best 1723 within 32.10M)" and hopper["range"] == "5.20M – not reached"
    # ... but not within the target: seed 2 has run the target's 15.8M timesteps already.
    assert hopper["met"] == "no" and hopper["seeds"] == "0, 1, 2*"
    assert hopper["core-minutes"] == "54"  # seed 0 so far: 1605 s on 2 workers
    text = report.table(by_task)
    assert text.count("\n| ") == 3 and "Machines: Test CPU (avx2)" in text


def test_core_minutes_add_each_sittings_time_times_its_workers() -> None:
    elapsed = [(g, 10.0 * g) for g in range(1, 11)]  # 10 s a generation
    sittings = [{"from_generation": 0, "workers": 2}, {"from_generation": 4, "workers": 1}, {"from_generation": 8, "workers": 4}]
    assert lm.core_minutes(elapsed, sittings) == pytest.approx((40 * 2 + 40 * 1 + 20 * 4) / 60)
    assert lm.core_minutes(elapsed, sittings, until=6) == pytest.approx((40 * 2 + 20 * 1) / 60)
    assert lm.core_minutes([], sittings[:1]) == 0.0


def test_the_figure_has_a_panel_per_task(tmp_path: Path) -> None:
    _write(tmp_path, [_result("Swimmer-v5", seed, 400_000 + 100_000 * seed) for seed in range(3)] + [_result("Ant-v5", 0, None)])
    out = report.figure(report.load_results(tmp_path), tmp_path / "suite.png")
    from matplotlib.image import imread

    height, width, _ = imread(out).shape
    assert (width, height) == (2 * 420, 330)


def test_the_builder_writes_the_table_into_the_readme(tmp_path: Path) -> None:
    _write(tmp_path, [_result("InvertedPendulum-v5", 0, 200_000)])
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nafter\n")
    code = report.main(
        ["--results", str(tmp_path), "--table", str(tmp_path / "t.md"), "--figure", str(tmp_path / "f.png"), "--readme", str(readme)]
    )
    assert code == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith(f"intro\n{report.README_START}\n| task |")
    assert text.endswith(f"{report.README_END}\nafter\n")
    assert (tmp_path / "t.md").read_text() in text


def test_the_builder_refuses_foreign_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["--results", str(tmp_path)]) == 2
    assert "holds no result files" in capsys.readouterr().err
    (tmp_path / "Hopper-v5-seed0.json").write_text('{"schema": 0}')
    assert report.main(["--results", str(tmp_path)]) == 2
    assert "is not a result file of learning_mujoco.py" in capsys.readouterr().err


def test_the_target_is_missed_once_too_few_seeds_can_still_meet_it() -> None:
    """Walker2d's target is 18.95M, its runs' default budget the paper's 37.9M: two seeds that ran 19M
    without the score are under way (they may still reach it), but the median is past the target."""
    reached = _result("Walker2d-v5", 0, 12_000_000, budget=19_000_000)
    past = [_result("Walker2d-v5", seed, None, budget=19_000_000) for seed in (1, 2)]
    assert all(report.under_way(r) for r in past)
    row = report.row([reached, *past])
    assert row["met"] == "no" and row["esfast (median)"].startswith("not yet") and row["seeds"] == "0, 1*, 2*"
    early = [_result("Walker2d-v5", seed, None, budget=6_000_000) for seed in (1, 2)]  # a sitting of 6M: open
    assert report.row([reached, *early])["met"] == "not yet"
    assert report.row([reached, past[0], early[1]])["met"] == "not yet"  # seed 2 may still give the median


def test_two_seeds_have_the_later_as_their_median_and_meet_no_target_without_the_third() -> None:
    """Ant: seed 2 reached the score at 9M, seed 1 is under way; seed 0 has not started."""
    reached = _result("Ant-v5", 2, 9_000_000)
    running = _result("Ant-v5", 1, None, finished=False)
    row = report.row([running, reached])
    assert row["esfast (median)"].startswith("not yet") and row["met"] == "not yet" and row["seeds"] == "1*, 2"
    both = report.row([_result("Ant-v5", 1, 12_000_000), reached])
    assert both["esfast (median)"] == "12.20M" and both["met"] == "not yet"  # within 20M, but seed 0 may still decide
    assert report.row([_result("Ant-v5", seed, 9_000_000 + seed) for seed in range(3)])["met"] == "yes"


def test_a_sitting_budget_below_the_tasks_leaves_the_run_under_way() -> None:
    partial = _result("Walker2d-v5", 0, None, budget=6_000_000)  # stopped at a --budget-timesteps of 6M
    whole = _result("Walker2d-v5", 1, None, budget=lm.TASKS["Walker2d-v5"].budget)
    assert partial["finished"] and partial["stopped"] == "budget"
    assert report.under_way(partial) and not report.under_way(whole)
    assert report.under_way(_result("Walker2d-v5", 2, None, finished=False))
    assert report.row([partial])["esfast (median)"].startswith("not yet") and report.row([partial])["seeds"] == "0*"
    assert report.row([whole])["met"] == "not yet" and report.row([whole])["seeds"] == "1"  # seeds 0 and 2 may still meet it


def test_a_run_that_diverges_is_finished_with_its_last_finite_theta(tmp_path: Path) -> None:
    def diverge(record: dict[str, Any]) -> None:
        if record["generation"] == 2:
            raise TrainingDiverged("θ became non-finite in generation 3")

    kwargs: dict[str, Any] = {"budget": 2 * BUDGET, "runs": tmp_path / "runs", "results": tmp_path / "results", "workers": 1}
    data = lm.run_one(TASK, 0, on_generation=diverge, **kwargs)
    assert data["finished"] and data["stopped"] == "diverged" and data["generations"] == 2
    assert data["final_evaluation"]["generation"] == 2
    assert lm.run_one(TASK, 0, **kwargs) == data  # skipped: running it again would diverge again


def test_a_result_to_continue_without_its_run_directory_is_refused(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"runs": tmp_path / "runs", "results": tmp_path / "results", "workers": 1}
    lm.run_one(TASK, 0, budget=BUDGET, **kwargs)
    shutil.rmtree(tmp_path / "runs")  # another machine: the result file came with the repository, the run did not
    with pytest.raises(UserError, match=r"neither .* nor .* has its checkpoint: copy the run directory from the machine that ran it"):
        lm.run_one(TASK, 0, budget=2 * BUDGET, **kwargs)


def test_a_run_under_way_continues_on_another_machine_from_its_carry_directory(tmp_path: Path) -> None:
    """Another machine has the repository (result file and carry directory), not the run directory:
    the run goes on from the carry directory to the θ of an uninterrupted run, and the carry
    directory goes when the run finishes."""
    budget = 2 * BUDGET
    whole = lm.run_one(TASK, 1, budget=budget, runs=tmp_path / "whole", results=tmp_path / "whole-results", workers=1)
    assert not (tmp_path / "whole-results" / "carry").exists()

    def interrupt(record: dict[str, Any]) -> None:
        if record["generation"] == 2:
            raise KeyboardInterrupt

    kwargs: dict[str, Any] = {"budget": budget, "runs": tmp_path / "runs", "results": tmp_path / "results", "workers": 1}
    with pytest.raises(KeyboardInterrupt):
        lm.run_one(TASK, 1, on_generation=interrupt, **kwargs)
    carried = tmp_path / "results" / "carry" / "InvertedPendulum-v5-seed1"
    assert sorted(p.name for p in carried.iterdir()) == ["config.json", "latest.npz", "log.jsonl"]
    assert np.array_equal(_theta_of(carried / "latest.npz"), _theta(tmp_path / "runs" / "InvertedPendulum-v5-seed1"))
    shutil.rmtree(tmp_path / "runs")

    resumed = lm.run_one(TASK, 1, **kwargs)
    assert [s["from_generation"] for s in resumed["sittings"]] == [0, 2]
    assert np.array_equal(_theta(tmp_path / "runs" / "InvertedPendulum-v5-seed1"), _theta(tmp_path / "whole" / "InvertedPendulum-v5-seed1"))
    del resumed["curve"]["seconds"], whole["curve"]["seconds"]  # wall-clock: the only values that may differ
    assert resumed["curve"] == whole["curve"] and resumed["final_evaluation"] == whole["final_evaluation"]
    assert not carried.exists()


def test_a_run_directory_behind_its_result_file_redoes_the_later_sittings(tmp_path: Path) -> None:
    """The result file came from a later sitting than the checkpoint (an older carry): the sittings
    past the checkpoint's generation are dropped, so they never count twice."""

    def interrupt_at(generation: int) -> Callable[[dict[str, Any]], None]:
        def interrupt(record: dict[str, Any]) -> None:
            if record["generation"] == generation:
                raise KeyboardInterrupt

        return interrupt

    kwargs: dict[str, Any] = {"budget": 2 * BUDGET, "runs": tmp_path / "runs", "results": tmp_path / "results", "workers": 1}
    with pytest.raises(KeyboardInterrupt):
        lm.run_one(TASK, 1, on_generation=interrupt_at(2), **kwargs)
    carried = tmp_path / "results" / "carry" / "InvertedPendulum-v5-seed1"
    shutil.copytree(carried, tmp_path / "older")
    with pytest.raises(KeyboardInterrupt):
        lm.run_one(TASK, 1, on_generation=interrupt_at(4), **kwargs)
    later = json.loads(lm.result_path(tmp_path / "results", TASK.env_id, 1).read_text())
    assert [s["from_generation"] for s in later["sittings"]] == [0, 2] and later["generations"] == 4
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(carried)
    shutil.copytree(tmp_path / "older", carried)  # the checkpoint of generation 2, the result file of generation 4
    resumed = lm.run_one(TASK, 1, **kwargs)
    assert [s["from_generation"] for s in resumed["sittings"]] == [0, 2]
    assert resumed["core_minutes"] >= 0


def test_a_carry_copy_is_whole_or_not_taken(tmp_path: Path) -> None:
    """Before a run has a log (stopped in its first generation) nothing is carried; a carry cut
    short is not continued from; a finished run's leftover carry goes when the run is skipped."""
    kwargs: dict[str, Any] = {"budget": BUDGET, "runs": tmp_path / "runs", "results": tmp_path / "results", "workers": 1}
    lm.run_one(TASK, 0, **kwargs)
    run = tmp_path / "runs" / "InvertedPendulum-v5-seed0"
    (run / "log.jsonl").rename(tmp_path / "log.jsonl")
    lm.carry_out(run, tmp_path / "carry")
    assert not (tmp_path / "carry").exists()
    (tmp_path / "log.jsonl").rename(run / "log.jsonl")
    lm.carry_out(run, tmp_path / "carry")
    assert sorted(p.name for p in (tmp_path / "carry").iterdir()) == ["config.json", "latest.npz", "log.jsonl"]
    (tmp_path / "carry" / "log.jsonl").unlink()
    assert not lm.carry_in(tmp_path / "carry", tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere" / "checkpoints" / "latest.npz").exists()

    leftover = tmp_path / "results" / "carry" / "InvertedPendulum-v5-seed0"
    lm.carry_out(run, leftover)
    assert lm.run_one(TASK, 0, **kwargs)["finished"] and not leftover.exists()


def test_a_result_of_another_config_is_refused_by_runner_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _result("Swimmer-v5", 0, 400_000)
    data["config"]["config"]["noise_stdev"] = 0.5
    _write(tmp_path, [data])
    with pytest.raises(UserError, match="holds a run of another config"):
        lm.run_one(lm.TASKS["Swimmer-v5"], 0, runs=tmp_path / "runs", results=tmp_path)
    assert report.main(["--results", str(tmp_path)]) == 2
    assert "is a run of another config than today's configs/swimmer.json" in capsys.readouterr().err


def test_a_result_written_before_a_setting_existed_is_the_same_experiment() -> None:
    """A result file without a setting esfast added since (at its default) is still today's config's;
    one with the setting at another value is not."""
    task = lm.TASKS["Swimmer-v5"]
    config = lm.shipped_config(task, 0, task.budget, None)
    recorded = _result("Swimmer-v5", 0, 400_000)["config"]
    assert lm.same_experiment(recorded, config)
    del recorded["config"]["elite_fraction"]
    assert lm.same_experiment(recorded, config)
    recorded["config"]["elite_fraction"] = 0.5
    assert not lm.same_experiment(recorded, config)
    recorded["config"]["elite_fraction"] = "all"  # not a config at all
    assert not lm.same_experiment(recorded, config)


def test_keep_going_goes_on_past_the_score_and_says_it_spent_the_budget(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"runs": tmp_path / "runs", "results": tmp_path / "results", "workers": 1}
    first = lm.run_one(TASK, 0, budget=BUDGET, **kwargs)
    # A run that reached its score is not skipped under --keep-going: it goes on to the budget.
    finished = {**first, "stopped": "reached"}
    lm.write_json(lm.result_path(tmp_path / "results", TASK.env_id, 0), finished)
    assert lm.run_one(TASK, 0, budget=2 * BUDGET, **kwargs) == finished  # without it, a reached run is done
    again = lm.run_one(TASK, 0, budget=2 * BUDGET, keep_going=True, **kwargs)
    assert again["stopped"] == "budget" and len(again["sittings"]) == 2 and again["timesteps_total"] >= 2 * BUDGET


def test_bad_seeds_and_mixed_all_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lm.main(["InvertedPendulum-v5", "--seeds", "-1", "--runs", str(tmp_path), "--results", str(tmp_path)]) == 2
    assert "run.seed must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lm.main(["all", "Hopper-v5"])
    assert "'all' runs every task" in capsys.readouterr().err
