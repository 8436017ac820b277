"""The run directory: the lock, the log's agreement with the checkpoint, config.json, progress.csv, the default path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from esfast.config import Config, apply_overrides
from esfast.errors import RunLockedError
from esfast.evaluators import SerialEvaluator
from esfast.run_directory import RunDirectory, default_run_path
from esfast.training import Trainer

REACH = ["env_id=EsfastTest/Reach-v0", "env_module=custom_envs", "episodes_per_batch=8", "hidden_dims=[4]", "snapshot_freq=0"]


def records(run: RunDirectory) -> list[int]:
    return [r["generation"] for r in run.records()]


def test_the_lock_is_one_holders_at_a_time(tmp_path: Path) -> None:
    first, second = RunDirectory(tmp_path), RunDirectory(tmp_path)
    first.lock()
    first.lock()  # holding it already: nothing changes
    with pytest.raises(RunLockedError, match="is in use by process"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()
    second.unlock()  # not held: nothing happens


def test_the_log_is_cut_back_or_completed_to_the_checkpoint(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    for generation in (1, 2, 3):
        run.append({"generation": generation})
    run.reconcile_log(2, {"generation": 2, "from": "checkpoint"})
    assert records(run) == [1, 2] and run.records()[-1] == {"generation": 2}  # the log's own record is kept
    run.reconcile_log(3, {"generation": 3, "from": "checkpoint"})
    assert records(run) == [1, 2, 3] and run.records()[-1]["from"] == "checkpoint"
    run.reconcile_log(5, {"generation": 4})  # a record of another generation is not appended
    assert records(run) == [1, 2, 3]
    run.reconcile_log(0, None)
    assert run.log.read_text() == ""


def test_a_torn_line_and_what_follows_it_are_dropped(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.log.write_text('{"generation": 1}\n{"generation": 2, "ret\n{"generation": 3}\n')
    assert records(run) == [1]
    run.reconcile_log(1, None)
    assert run.log.read_text() == '{"generation": 1}\n'
    assert not (tmp_path / "log.jsonl.tmp").exists()


def test_an_agreeing_log_is_not_rewritten(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.append({"generation": 1})
    before = run.log.stat().st_mtime_ns
    run.reconcile_log(1, {"generation": 1})
    assert run.log.stat().st_mtime_ns == before
    fresh = RunDirectory(tmp_path / "fresh")
    fresh.reconcile_log(0, None)
    assert not fresh.log.exists()


def test_config_json_is_written_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDirectory(tmp_path)
    run.write_config(Config())
    assert json.loads(run.config.read_text())["env_id"] == Config().env_id

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("esfast.run_directory.os.fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        run.write_config(Config(env_id="CartPole-v1"))
    assert json.loads(run.config.read_text())["env_id"] == Config().env_id  # the old one, intact
    assert not (tmp_path / "config.json.tmp").exists()


def train(out: Path, generations: int, *, resume: bool = False) -> None:
    """A tiny run in this process, to ``generations``."""
    config = apply_overrides(Config(), [*REACH, f"run.generations={generations}"])
    with Trainer(config, out, resume=resume, evaluator=SerialEvaluator) as trainer:
        trainer.train()


def csv_rows(run: RunDirectory) -> list[dict[str, str]]:
    with open(run.csv, newline="") as file:
        return list(csv.DictReader(file))


def test_progress_csv_has_a_row_per_generation_with_the_log_fields(tmp_path: Path) -> None:
    train(tmp_path, 3)
    train(tmp_path, 4, resume=True)
    run = RunDirectory(tmp_path)
    records = run.records()
    rows = csv_rows(run)
    assert len(rows) == 4 and list(rows[0]) == list(records[0])
    for row, record in zip(rows, records):
        assert {key: row[key] for key in record} == {key: "" if value is None else str(value) for key, value in record.items()}


def test_progress_csv_follows_the_log_when_it_is_cut_back_or_gains_a_field(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    for generation in (1, 2, 3):
        run.append({"generation": generation, "return_mean": float(generation)})
    run.append({"generation": 4, "return_mean": 4.0, "hosts": 2})  # a new field: the table is written anew
    rows = csv_rows(run)
    assert list(rows[0]) == ["generation", "return_mean", "hosts"]
    assert [row["hosts"] for row in rows] == ["", "", "", "2"]
    run.reconcile_log(2, None)  # a resume from generation 2's checkpoint
    assert [row["generation"] for row in csv_rows(run)] == ["1", "2"]


def test_the_default_run_path_is_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("esfast.run_directory.time.strftime", lambda _format: "20260101-120000")
    first = default_run_path("halfcheetah")
    assert first == Path("runs/halfcheetah-20260101-120000") and not first.exists()
    first.mkdir(parents=True)
    second = default_run_path("halfcheetah")
    assert second == Path("runs/halfcheetah-20260101-120000-2")
    second.mkdir()
    assert default_run_path("halfcheetah") == Path("runs/halfcheetah-20260101-120000-3")
