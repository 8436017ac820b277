"""The trainer: learning, determinism across worker counts and resumes, the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from esfast.checkpoint import CheckpointError, load_checkpoint
from esfast.config import Config, apply_overrides, load_config
from esfast.evaluation import SerialEvaluator
from esfast.training import LOG_FIELDS, EvaluatorFactory, Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REACH = ["env_id=EsfastTest/Reach-v0", "env_module=custom_envs", "episodes_per_batch=12", "noise_stdev=0.1",
         "hidden_dims=[8]", "calc_obstat_prob=0.5", "run.eval_episodes=2", "snapshot_freq=2"]


def reach_config(*extra: str) -> Config:
    return apply_overrides(Config(), [*REACH, *extra])


def train(config: Config, out: Path, *, resume: bool = False, evaluator: EvaluatorFactory = SerialEvaluator) -> Trainer:
    """Trains in this process unless another evaluator is given."""
    trainer = Trainer(config, out, resume=resume, evaluator=evaluator)
    trainer.train()
    return trainer


def test_cartpole_reaches_475(tmp_path: Path) -> None:
    config = apply_overrides(Config(), [
        "env_id=CartPole-v1", "episodes_per_batch=40", "noise_stdev=0.1", "hidden_dims=[16]", "optimizer.args.stepsize=0.03",
        "run.eval_episodes=4", "run.generations=40", "snapshot_freq=0",
    ])
    trainer = Trainer(config, tmp_path, evaluator=SerialEvaluator)
    best = -np.inf
    try:
        while not trainer.done() and best < 475:
            best = max(best, trainer.step()["eval_return_mean"])
    finally:
        trainer.close()
    assert best >= 475, f"best evaluation return {best} after {trainer.generation} generations"


def test_run_directory(tmp_path: Path) -> None:
    trainer = train(reach_config("run.generations=4"), tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["env_id"] == "EsfastTest/Reach-v0" and saved["policy"]["args"]["hidden_dims"] == [8]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in records] == [1, 2, 3, 4]
    for key in LOG_FIELDS:
        assert all(record[key] is not None for record in records), key
    assert records[-1]["episodes_total"] == 4 * 12 and records[-1]["timesteps_total"] == 4 * 12 * 10
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["gen_00002.npz", "gen_00004.npz", "latest.npz"]
    state, config = load_checkpoint(tmp_path / "checkpoints" / "latest.npz")
    np.testing.assert_array_equal(state["theta"], trainer.theta)
    assert state["generation"] == 4 and config.env_id == "EsfastTest/Reach-v0"
    for key in ("optimizer_m", "optimizer_v", "optimizer_t", "obstat_sum", "obstat_sumsq", "obstat_count", "seed"):
        assert key in state


def test_learns_reach(tmp_path: Path) -> None:
    trainer = Trainer(reach_config("run.generations=60", "snapshot_freq=0", "optimizer.args.stepsize=0.03"), tmp_path,
                      evaluator=SerialEvaluator)
    try:
        first = trainer.step()["eval_return_mean"]
        while not trainer.done():
            last = trainer.step()["eval_return_mean"]
    finally:
        trainer.close()
    assert first < -3 and last > 0.5 * first


def test_same_seed_gives_identical_theta(tmp_path: Path) -> None:
    a = train(reach_config("run.generations=3"), tmp_path / "a")
    b = train(reach_config("run.generations=3"), tmp_path / "b")
    c = train(reach_config("run.generations=3", "run.seed=1"), tmp_path / "c")
    np.testing.assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)


def test_local_cluster_equals_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default evaluator (master + a local worker host) gives the in-process result, whatever its size."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the worker host imports custom_envs
    here = train(reach_config("run.generations=3"), tmp_path / "here")
    for procs in (1, 2):
        cluster = train(reach_config("run.generations=3", f"run.workers={procs}"), tmp_path / f"cluster{procs}", evaluator=None)
        np.testing.assert_array_equal(here.theta, cluster.theta)
        np.testing.assert_array_equal(here.obstat.sum, cluster.obstat.sum)
        assert here.obstat.count == cluster.obstat.count > 1
        record = json.loads((tmp_path / f"cluster{procs}" / "log.jsonl").read_text().splitlines()[-1])
        assert record["hosts"] == 1 and record["procs"] == procs and record["messages_dropped"] == 0


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    straight = train(reach_config("run.generations=4"), tmp_path / "straight")
    train(reach_config("run.generations=2"), tmp_path / "split")
    resumed = train(reach_config("run.generations=4"), tmp_path / "split", resume=True)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    np.testing.assert_array_equal(resumed.obstat.sumsq, straight.obstat.sumsq)
    assert resumed.timesteps_total == straight.timesteps_total
    lines = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [1, 2, 3, 4]


def test_adaptive_timestep_limit(tmp_path: Path) -> None:
    trainer = train(reach_config("run.generations=2", "episode_cutoff_mode=adaptive:4,0.5,2.0"), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["episode_length_mean"] == 4 and records[0]["timestep_limit"] == 8
    assert records[1]["episode_length_mean"] == 8 and trainer.timestep_limit == 16


def test_checkpoint_of_another_policy_shape(tmp_path: Path) -> None:
    train(reach_config("run.generations=1"), tmp_path)
    with pytest.raises(CheckpointError, match="holds a policy with 42 parameters; this config's policy has"):
        Trainer(reach_config("hidden_dims=[16]", "run.generations=2"), tmp_path, resume=True, evaluator=SerialEvaluator)


PONG = ["episodes_per_batch=4", "episode_cutoff_mode=100", "run.noise_table_size=1000000", "reference_batch_size=8",
        "run.eval_episodes=1", "snapshot_freq=0"]


def test_pong_runs_in_process_and_through_a_worker_host_alike(tmp_path: Path) -> None:
    """Two generations of Pong with a tiny population: the Atari path end to end, both ways, and resumed."""
    config = apply_overrides(load_config(CONFIGS / "pong.json"), [*PONG, "run.generations=2"])
    here = train(config, tmp_path / "here")
    cluster = train(apply_overrides(config, ["run.workers=2"]), tmp_path / "cluster", evaluator=None)
    np.testing.assert_array_equal(here.theta, cluster.theta)
    records = [json.loads(line) for line in (tmp_path / "cluster" / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in records] == [1, 2] and records[-1]["timesteps_total"] == 2 * 4 * 100
    state, _ = load_checkpoint(tmp_path / "cluster" / "checkpoints" / "latest.npz")
    assert state["reference_batch"].shape == (8, 4, 84, 84) and state["reference_batch"].dtype == np.uint8
    np.testing.assert_array_equal(state["reference_batch"], here.reference_batch)
    resumed = train(apply_overrides(config, ["run.generations=3"]), tmp_path / "here", resume=True)
    straight = train(apply_overrides(config, ["run.generations=3"]), tmp_path / "straight")
    np.testing.assert_array_equal(resumed.theta, straight.theta)


def test_a_wall_clock_budget_stops_after_the_generation_under_way(tmp_path: Path) -> None:
    trainer = Trainer(reach_config("run.generations=1000"), tmp_path, evaluator=SerialEvaluator)
    trainer.train(seconds=0.0)
    assert trainer.generation == 0  # the deadline had passed before the first generation
    trainer = Trainer(reach_config("run.generations=1000"), tmp_path / "b", evaluator=SerialEvaluator)
    trainer.train(seconds=0.3)
    assert 1 <= trainer.generation < 1000
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == trainer.generation
