"""The run directory on its own: the lock, the log's agreement with the checkpoint, config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esfast.config import Config
from esfast.errors import RunLockedError
from esfast.run_directory import RunDirectory


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
