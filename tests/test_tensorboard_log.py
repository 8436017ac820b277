"""TensorBoard event files of a run (esfast train and esfast-master), read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
import zmq
from cluster import SLOW_REACH, Cluster, hello, records
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from esfast.config import Config, apply_overrides
from esfast.distributed.protocol import Message, decode, encode
from esfast.errors import UserError
from esfast.evaluators import SerialEvaluator
from esfast.tensorboard_log import TAGS, TensorBoardLog
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


def test_the_master_writes_the_cluster_counters(cluster: Cluster, tmp_path: Path) -> None:
    """esfast-master --tensorboard with two worker hosts, one killed mid-run, a host that sends
    results of another generation and a peer that sends garbage: every cluster/* tag holds, at
    every generation, the count of that generation's log record."""
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "5", "--tensorboard", out=out)
    victim = cluster.worker()
    cluster.worker()
    master.wait_for("gen     1")
    context = zmq.Context()
    late, stranger = context.socket(zmq.DEALER), context.socket(zmq.DEALER)
    try:
        for peer in (late, stranger):
            peer.setsockopt(zmq.LINGER, 0)
            peer.connect(cluster.address)
        late.send_multipart(encode(hello("late", 3)))  # no FINGERPRINT: never admitted
        assert late.poll(10_000) and decode(late.recv_multipart()).type == "WELCOME"  # a host that never asks for tasks
        stranger.send_multipart([b"not a message"])  # from a peer that never said HELLO: dropped
        stale = encode(Message("RESULT", {"generation": 10**6, "results": [{"task": 0}], "credit": 0}))
        killed = False
        deadline = time.monotonic() + 120
        while master.popen.poll() is None and time.monotonic() < deadline:
            late.send_multipart(stale)  # a result of another generation, while one is served: counted stale
            if not killed and "gen     2" in master.output:
                time.sleep(0.3)  # inside generation 3
                victim.signal(signal.SIGKILL)  # its tasks are re-issued (or copied to the other host)
                killed = True
            time.sleep(0.2)
    finally:
        late.close()
        stranger.close()
        context.term()
    assert master.wait() == 0, master.output
    log = records(out)
    assert [r["generation"] for r in log] == [1, 2, 3, 4, 5]
    cluster_fields = {field: tag for field, tag in TAGS.items() if tag.startswith("cluster/")}
    assert set(cluster_fields) <= set(log[0])  # every counter the master reports has its tag
    for field, tag in cluster_fields.items():
        assert scalars(out / "tensorboard", tag) == [(r["generation"], float(r[field])) for r in log], tag
    assert max(r["hosts"] for r in log) == 2 and max(r["hosts_total"] for r in log) == 3  # the late host never served
    assert sum(r["tasks_reissued"] + r["tasks_duplicated"] for r in log) > 0
    assert sum(r["results_stale"] for r in log) > 0 and sum(r["messages_dropped"] for r in log) > 0
