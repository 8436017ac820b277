"""TensorBoard event files and progress.csv of a run, read back with TensorBoard's own reader."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from esfast.config import Config, apply_overrides
from esfast.errors import UserError
from esfast.evaluators import SerialEvaluator
from esfast.tensorboard_log import TensorBoardLog
from esfast.training import Trainer

REACH = ["env_id=EsfastTest/Reach-v0", "env_module=custom_envs", "episodes_per_batch=8", "hidden_dims=[4]", "snapshot_freq=0"]


def run(out: Path, generations: int, *, resume: bool = False, tensorboard: bool = True) -> None:
    config = apply_overrides(Config(), [*REACH, f"run.generations={generations}", f"run.tensorboard={json.dumps(tensorboard)}"])
    with Trainer(config, out, resume=resume, evaluator=SerialEvaluator) as trainer:
        trainer.train()


def scalars(directory: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_every_generation_is_written_once_across_a_resume(tmp_path: Path) -> None:
    run(tmp_path, 3)
    run(tmp_path, 5, resume=True)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    returns = scalars(tmp_path / "tensorboard", "return/mean")
    assert [step for step, _ in returns] == [1, 2, 3, 4, 5]
    assert [value for _, value in returns] == pytest.approx([r["return_mean"] for r in records], rel=1e-6)
    assert [v for _, v in scalars(tmp_path / "tensorboard", "time/timesteps")] == [r["timesteps_total"] for r in records]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 2  # one event file per sitting


def test_turning_tensorboard_on_for_a_resumed_run_writes_the_earlier_generations(tmp_path: Path) -> None:
    run(tmp_path, 2, tensorboard=False)
    assert not (tmp_path / "tensorboard").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    config["run"]["tensorboard"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    run(tmp_path, 3, resume=True)
    assert [step for step, _ in scalars(tmp_path / "tensorboard", "eval/return_mean")] == [1, 2, 3]


def test_progress_csv_has_a_row_per_generation_with_the_log_fields(tmp_path: Path) -> None:
    run(tmp_path, 3, tensorboard=False)
    run(tmp_path, 4, resume=True, tensorboard=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    with open(tmp_path / "progress.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4 and list(rows[0]) == list(records[0])
    for row, record in zip(rows, records):
        assert {key: row[key] for key in record} == {key: "" if value is None else str(value) for key, value in record.items()}


def test_the_missing_package_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("tensorboard", "tensorboard.compat", "tensorboard.compat.proto", "tensorboard.summary.writer.event_file_writer"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'esfast\[tensorboard\]'"):
        TensorBoardLog(tmp_path / "tb")


def test_generations_past_the_checkpoint_are_dropped_for_tensorboard(tmp_path: Path) -> None:
    log = TensorBoardLog(tmp_path)
    log.catch_up([{"generation": g, "return_mean": float(g), "timesteps_total": 10 * g} for g in (1, 2, 3, 4)])
    log.close()
    rolled_back = TensorBoardLog(tmp_path, generation=2)  # a run resumed from generation 2's checkpoint
    assert rolled_back.last_step == 2
    rolled_back.catch_up([{"generation": g, "return_mean": -float(g), "timesteps_total": 10 * g} for g in (1, 2, 3)])
    rolled_back.close()
    assert scalars(tmp_path, "return/mean") == [(1, 1.0), (2, 2.0), (3, -3.0)]
