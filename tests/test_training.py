"""The trainer: learning, determinism across worker counts and resumes, the run directory."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from esfast import core
from esfast.api import load_policy
from esfast.checkpoint import load_checkpoint
from esfast.config import MAX_PAIRS_PER_GENERATION, MAX_TIMESTEPS_PER_BATCH, Config, apply_overrides, load_config
from esfast.envs import make_env
from esfast.errors import CheckpointError, ConfigError, RunExistsError, RunLockedError, TrainingDiverged
from esfast.es import OpenES, population_offsets
from esfast.evaluators import SerialEvaluator
from esfast.policies import ObStat, make_policy
from esfast.runner import EpisodeRunner
from esfast.seeding import Purpose, derive_rng, derive_seed
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, WorkerSetup
from esfast.training import LOG_FIELDS, EvaluatorFactory, Trainer, next_round_pairs, resolved_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REACH = [
    "env_id=EsfastTest/Reach-v0",
    "env_module=custom_envs",
    "episodes_per_batch=12",
    "noise_stdev=0.1",
    "hidden_dims=[8]",
    "calc_obstat_prob=0.5",
    "run.eval_episodes=2",
    "snapshot_freq=2",
]


def reach_config(*extra: str) -> Config:
    return apply_overrides(Config(), [*REACH, *extra])


def train(config: Config, out: Path, *, resume: bool = False, evaluator: EvaluatorFactory | None = SerialEvaluator) -> Trainer:
    """Trains in this process unless another evaluator is given; the trainer is closed."""
    with Trainer(config, out, resume=resume, evaluator=evaluator) as trainer:
        trainer.train()
    return trainer


def test_cartpole_reaches_475(tmp_path: Path) -> None:
    config = apply_overrides(
        Config(),
        [
            "env_id=CartPole-v1",
            "episodes_per_batch=40",
            "noise_stdev=0.1",
            "hidden_dims=[16]",
            "optimizer.args.stepsize=0.03",
            "run.eval_episodes=4",
            "run.generations=40",
            "snapshot_freq=0",
        ],
    )
    best = -np.inf
    with Trainer(config, tmp_path, evaluator=SerialEvaluator) as trainer:
        while not trainer.done() and best < 475:
            best = max(best, trainer.step()["eval_return_mean"])
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
    with Trainer(
        reach_config("run.generations=60", "snapshot_freq=0", "optimizer.args.stepsize=0.03"), tmp_path, evaluator=SerialEvaluator
    ) as trainer:
        first = trainer.step()["eval_return_mean"]
        while not trainer.done():
            last = trainer.step()["eval_return_mean"]
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


def test_env_kwargs_make_the_environment_of_the_trainer_the_worker_hosts_and_load_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reach in 3 dimensions (its option ``dims``): a policy of that size everywhere, the same θ in process and through a host."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the worker host imports custom_envs
    here = train(reach_config("run.generations=2", "env_kwargs.dims=3"), tmp_path / "here")
    cluster = train(reach_config("run.generations=2", "env_kwargs.dims=3", "run.workers=1"), tmp_path / "cluster", evaluator=None)
    assert here.policy.num_params == 3 * 8 + 8 + 8 * 3 + 3  # obs 3 -> 8 -> actions 3
    np.testing.assert_array_equal(here.theta, cluster.theta)
    assert json.loads((tmp_path / "cluster" / "config.json").read_text())["env_kwargs"] == {"dims": 3}
    env = load_policy(tmp_path / "cluster").make_env()
    try:
        assert env.observation_space.shape == (3,)
    finally:
        env.close()


def split_and_resume(config_of: Callable[..., Config], tmp_path: Path) -> None:
    """4 generations straight, and 2 then 2 more after a resume: the same θ, statistics and timesteps."""
    straight = train(config_of("run.generations=4"), tmp_path / "straight")
    train(config_of("run.generations=2"), tmp_path / "split")
    resumed = train(config_of("run.generations=4"), tmp_path / "split", resume=True)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    np.testing.assert_array_equal(resumed.obstat.sumsq, straight.obstat.sumsq)
    assert resumed.timesteps_total == straight.timesteps_total


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    split_and_resume(reach_config, tmp_path)
    lines = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [1, 2, 3, 4]


def test_return_shift_takes_a_constant_per_step_from_the_returns_the_update_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ARS's shift: the update ranks return - shift x length; the log keeps the episodes' own returns."""
    told: dict[float, np.ndarray] = {}
    records = {}
    for shift in (0.0, 1.5):
        with Trainer(
            reach_config("run.generations=1", f"return_shift={shift}"), tmp_path / str(shift), evaluator=SerialEvaluator
        ) as trainer:
            tell = trainer.es.tell

            def spy(returns: np.ndarray, shift: float = shift, tell: Any = tell, **kwargs: Any) -> Any:
                told[shift] = np.array(returns)
                return tell(returns, **kwargs)

            monkeypatch.setattr(trainer.es, "tell", spy)
            records[shift] = trainer.step()
    lengths = (told[0.0] - told[1.5]) / 1.5
    np.testing.assert_allclose(lengths, np.round(lengths))
    assert lengths.min() >= 1 and lengths.mean() == pytest.approx(records[0.0]["episode_length_mean"])
    assert records[1.5]["return_mean"] == records[0.0]["return_mean"]


def test_elite_fraction_reaches_the_update_and_the_checkpoint(tmp_path: Path) -> None:
    """config.elite_fraction is the trainer's OpenES setting; a run with it trains and resumes exactly."""
    config = reach_config("run.generations=3", "elite_fraction=0.5")
    straight = train(config, tmp_path / "straight")
    assert straight.es.elite_fraction == 0.5
    assert not np.array_equal(straight.es.theta, train(reach_config("run.generations=3"), tmp_path / "all").es.theta)
    train(reach_config("run.generations=1", "elite_fraction=0.5"), tmp_path / "split")
    np.testing.assert_array_equal(train(config, tmp_path / "split", resume=True).es.theta, straight.es.theta)


def test_adaptive_timestep_limit(tmp_path: Path) -> None:
    trainer = train(reach_config("run.generations=2", "episode_cutoff_mode=adaptive:4,0.5,2.0"), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["episode_length_mean"] == 4 and records[0]["timestep_limit"] == 8
    assert records[1]["episode_length_mean"] == 8 and trainer.timestep_limit == 16


def test_checkpoint_of_another_policy_shape(tmp_path: Path) -> None:
    train(reach_config("run.generations=1"), tmp_path)
    with pytest.raises(CheckpointError, match="holds a policy with 42 parameters; this config's policy has"):
        Trainer(reach_config("hidden_dims=[16]", "run.generations=2"), tmp_path, resume=True, evaluator=SerialEvaluator)


PONG = [
    "episodes_per_batch=4",
    "episode_cutoff_mode=100",
    "run.noise_table_size=1000000",
    "reference_batch_size=8",
    "run.eval_episodes=1",
    "snapshot_freq=0",
]


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
    with Trainer(reach_config("run.generations=1000"), tmp_path, evaluator=SerialEvaluator) as trainer:
        trainer.train(seconds=0.0)
        assert trainer.generation == 0  # the deadline had passed before the first generation
    with Trainer(reach_config("run.generations=1000"), tmp_path / "b", evaluator=SerialEvaluator) as trainer:
        trainer.train(seconds=0.3)
        assert 1 <= trainer.generation < 1000
        assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == trainer.generation


def test_train_can_be_called_again_to_go_on(tmp_path: Path) -> None:
    straight = train(reach_config("run.generations=5"), tmp_path / "straight")
    with Trainer(reach_config("run.generations=5"), tmp_path / "twice", evaluator=SerialEvaluator) as trainer:
        trainer.train(seconds=0.0)
        trainer.train(seconds=0.05)
        trainer.train()
        assert trainer.generation == 5
    np.testing.assert_array_equal(trainer.theta, straight.theta)
    assert trainer.table is None and trainer.evaluator is None  # closed by the with block
    records = [json.loads(line) for line in (tmp_path / "twice" / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in records] == [1, 2, 3, 4, 5]
    with pytest.raises(RuntimeError, match="the trainer is closed"):
        trainer.step()


def test_training_off_the_main_thread(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            train(reach_config("run.generations=2"), tmp_path)
        except BaseException as error:  # reported to the test below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not errors and len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_during_the_update_keeps_log_and_checkpoint_in_agreement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Trainer(reach_config("run.generations=6"), tmp_path, evaluator=SerialEvaluator) as trainer:
        tell = trainer.es.tell

        def interrupted_tell(returns: object, **options: int) -> dict[str, float]:
            if trainer.generation == 2:
                os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the update
            return tell(returns, **options)

        monkeypatch.setattr(trainer.es, "tell", interrupted_tell)
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
        assert trainer.generation == 3
    state, _ = load_checkpoint(tmp_path / "checkpoints" / "latest.npz")
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert state["generation"] == 3 and [r["generation"] for r in records] == [1, 2, 3]
    resumed = train(reach_config("run.generations=6"), tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.theta, train(reach_config("run.generations=6"), tmp_path / "straight").theta)


def test_a_record_lost_after_its_checkpoint_is_restored_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Trainer(reach_config("run.generations=3"), tmp_path, evaluator=SerialEvaluator) as trainer:
        append = trainer.run_dir.append

        def crash_at_3(record: dict[str, object]) -> None:
            if record["generation"] == 3:
                raise OSError(28, "No space left on device")
            append(record)

        monkeypatch.setattr(trainer.run_dir, "append", crash_at_3)
        with pytest.raises(OSError, match="No space left"):
            trainer.train()
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    with Trainer(reach_config("run.generations=3"), tmp_path, resume=True, evaluator=SerialEvaluator):
        records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in records] == [1, 2, 3]


def test_a_failed_save_leaves_the_log_at_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Trainer(reach_config("run.generations=4"), tmp_path, evaluator=SerialEvaluator) as trainer:
        save = trainer.save

        def fail_at_3(*, snapshot: bool = False) -> Path:
            if trainer.generation == 3:
                raise OSError(24, "Too many open files")
            return save(snapshot=snapshot)

        monkeypatch.setattr(trainer, "save", fail_at_3)
        with pytest.raises(OSError, match="Too many open files"):
            trainer.train()
    state, _ = load_checkpoint(tmp_path / "checkpoints" / "latest.npz")
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert state["generation"] == 2 and [r["generation"] for r in records] == [1, 2]
    resumed = train(reach_config("run.generations=4"), tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.theta, train(reach_config("run.generations=4"), tmp_path / "straight").theta)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in records] == [1, 2, 3, 4]


def test_a_log_ahead_of_its_checkpoint_is_cut_back_on_resume(tmp_path: Path) -> None:
    train(reach_config("run.generations=2"), tmp_path)
    log = tmp_path / "log.jsonl"
    with open(log, "a") as file:  # as a process killed between the log and the checkpoint would leave it
        file.write(json.dumps({"generation": 3, "return_mean": 0.0}) + "\n" + '{"generation": 4, "ret')
    train(reach_config("run.generations=3"), tmp_path, resume=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["generation"] for r in records] == [1, 2, 3] and "time_elapsed" in records[-1]


def test_a_run_directory_is_locked_by_its_run(tmp_path: Path) -> None:
    with Trainer(reach_config("run.generations=1"), tmp_path, evaluator=SerialEvaluator):
        with pytest.raises(RunLockedError, match=f"is in use by process {os.getpid()}"):
            Trainer(reach_config("run.generations=1"), tmp_path, evaluator=SerialEvaluator)
    with Trainer(reach_config("run.generations=1"), tmp_path, evaluator=SerialEvaluator) as trainer:  # released
        trainer.train()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = (
        "import sys, time; from esfast.run_directory import RunDirectory; RunDirectory(sys.argv[1]).lock(); "
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            Trainer(reach_config("run.generations=1"), tmp_path, evaluator=SerialEvaluator)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with Trainer(reach_config("run.generations=1"), tmp_path, evaluator=SerialEvaluator) as trainer:
        trainer.train()
    assert trainer.generation == 1


def test_a_run_that_becomes_non_finite_stops_and_keeps_the_last_finite_checkpoint(tmp_path: Path) -> None:
    config = apply_overrides(
        Config(),
        [
            "env_id=EsfastTest/Overflow-v0",
            "env_module=custom_envs",
            "episodes_per_batch=4",
            "hidden_dims=[4]",
            "calc_obstat_prob=1.0",
            "run.eval_episodes=1",
            "run.generations=3",
            "snapshot_freq=0",
        ],
    )
    with Trainer(config, tmp_path, evaluator=SerialEvaluator) as trainer:
        with pytest.raises(TrainingDiverged, match=r"observation statistics became non-finite in generation 2; .* generation 1$"):
            trainer.train()
        with pytest.raises(TrainingDiverged, match="resume it from its last finite checkpoint"):
            trainer.train()
    state, _ = load_checkpoint(tmp_path / "checkpoints" / "latest.npz")
    assert state["generation"] == 1 and np.isfinite(state["theta"]).all() and np.isfinite(state["obstat_sumsq"]).all()
    assert [json.loads(line)["generation"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [1]


def test_train_again_after_a_failed_save_leaves_no_hole_in_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Trainer(reach_config("run.generations=4"), tmp_path, evaluator=SerialEvaluator) as trainer:
        save = trainer.save
        failures = [3]

        def fail_once_at_3(*, snapshot: bool = False) -> Path:
            if trainer.generation in failures:
                failures.clear()
                raise OSError(28, "No space left on device")
            return save(snapshot=snapshot)

        monkeypatch.setattr(trainer, "save", fail_once_at_3)
        with pytest.raises(OSError, match="No space left"):
            trainer.train()
        trainer.train()  # the disk has room again: generation 3 is saved and logged first
    records = [json.loads(line)["generation"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records == [1, 2, 3, 4]
    np.testing.assert_array_equal(trainer.theta, train(reach_config("run.generations=4"), tmp_path / "straight").theta)


def test_a_new_run_in_a_directory_holding_one_is_refused(tmp_path: Path) -> None:
    train(reach_config("run.generations=1"), tmp_path)
    with pytest.raises(RunExistsError, match="already holds a run; continue it with --resume"):
        Trainer(reach_config("run.generations=2"), tmp_path, evaluator=SerialEvaluator)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1  # untouched


def test_a_damaged_config_json_is_one_line(tmp_path: Path) -> None:
    train(reach_config("run.generations=1"), tmp_path)
    (tmp_path / "config.json").write_text('{"env_id": ')
    with pytest.raises(ConfigError, match="is not valid JSON"):
        resolved_config(tmp_path)


def test_a_callback_sees_every_generation_and_can_stop_the_run(tmp_path: Path) -> None:
    seen: list[int] = []

    def stop_at_3(record: dict[str, object]) -> bool:
        seen.append(int(record["generation"]))  # type: ignore[call-overload]
        assert (tmp_path / "checkpoints" / "latest.npz").exists()  # the generation is saved when it is called
        return record["generation"] == 3

    with Trainer(reach_config("run.generations=10"), tmp_path, evaluator=SerialEvaluator) as trainer:
        trainer.train(on_generation=stop_at_3)
        assert trainer.generation == 3 and seen == [1, 2, 3]
        trainer.train(on_generation=lambda record: None)  # None goes on
        assert trainer.generation == 10


# The variable batch (config.timesteps_per_batch) ----------------------------------------------

# sha256 of θ's bytes and of the observation sums' (sum then sumsq) after train(reach_config("run.generations=3")),
# computed with esfast at commit 6b7fae0, before the variable batch existed.
BEFORE_THETA = "904597c0004cf6284885cf1849f0dac0e14a44dbf6ae585907229dc85aec5bde"
BEFORE_OBSTAT = "19b622aa32dbdf24183c8f250244c9b0948f67d8ae12ec3285071f9a2cef2935"
# Episodes of 2 to 30 steps, shorter as the policy gets closer: six pairs take about 100 to 250 steps.
VARIABLE = ["env_id=EsfastTest/VariableReach-v0", "timesteps_per_batch=600", "optimizer.args.stepsize=0.03"]


def variable_config(*extra: str) -> Config:
    return reach_config(*VARIABLE, *extra)


def log_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_without_timesteps_per_batch_a_run_is_bit_identical_to_before(tmp_path: Path) -> None:
    trainer = train(reach_config("run.generations=3"), tmp_path)
    assert hashlib.sha256(trainer.theta.tobytes()).hexdigest() == BEFORE_THETA
    assert hashlib.sha256(trainer.obstat.sum.tobytes() + trainer.obstat.sumsq.tobytes()).hexdigest() == BEFORE_OBSTAT
    assert [(r["pairs"], r["rounds"]) for r in log_records(tmp_path)] == [(6, 1)] * 3


def test_next_round_pairs() -> None:
    assert next_round_pairs(6, 120, 0) == 0 and next_round_pairs(6, 120, 120) == 0 and next_round_pairs(6, 500, 120) == 0
    assert next_round_pairs(6, 120, 300) == 9  # 180 steps missing at 20 a pair
    assert next_round_pairs(6, 100, 301) == 13  # 201 / (100 / 6) = 12.06
    assert next_round_pairs(10, 1000, 1001) == 1  # one step missing: one pair
    assert next_round_pairs(3, 0, 10) == 30  # no steps yet (not a real episode): a step a pair is assumed
    assert next_round_pairs(5, 10, MAX_TIMESTEPS_PER_BATCH) == MAX_PAIRS_PER_GENERATION - 5  # bounded
    assert next_round_pairs(MAX_PAIRS_PER_GENERATION, 10, MAX_TIMESTEPS_PER_BATCH) == 0
    rng = np.random.default_rng(0)
    for _ in range(2000):
        pairs = int(rng.integers(1, 10_000))
        steps = int(rng.integers(2 * pairs, 2000 * pairs))
        target = int(rng.integers(0, 2 * steps + 10))
        expected = 0 if steps >= target else max(1, math.ceil(Fraction(target - steps) / Fraction(steps, pairs)))
        assert next_round_pairs(pairs, steps, target) == expected, (pairs, steps, target)


def independent_run(config: Config, generations: int) -> tuple[np.ndarray, ObStat, list[int]]:
    """θ, the observation statistics and each generation's pairs, computed from the building blocks
    as docs/training.md describes a generation, not through the trainer: a first round of pop_pairs
    pairs, then, while the steps fall short of timesteps_per_batch, ceil(missing steps / mean steps
    per pair so far) more, with pair i's offset, episode seed and observation draw derived as for any i."""
    seed, settings = config.run.seed, config.es
    env = make_env(config.env_id, config.env_module)
    policy = make_policy(env.observation_space, env.action_space, config.policy, None)
    env.close()
    table = core.NoiseTable(config.run.noise_table_size, seed)
    setup = WorkerSetup(config.env_id, config.env_module, config.policy, policy.num_params, policy.obs_stat_dim, len(table), seed)
    runner = EpisodeRunner(setup, table)
    es = OpenES(
        policy.num_params,
        sigma=settings.noise_stdev,
        stepsize=config.optimizer.stepsize,
        pop_pairs=config.pop_pairs,
        seed=seed,
        l2coeff=settings.l2coeff,
        table=table,
        theta=policy.initial_theta(derive_rng(seed, Purpose.INIT)),
    )
    obstat = ObStat((policy.obs_stat_dim,))
    sizes = []
    for generation in range(generations):
        spec = GenerationSpec(generation, es.sigma, obstat.mean, obstat.std, None)
        results: list[PairResult] = []
        steps = 0
        while not results or steps < settings.timesteps_per_batch:
            if results:
                count = max(1, math.ceil(Fraction(settings.timesteps_per_batch - steps) / Fraction(steps, len(results))))
            else:
                count = config.pop_pairs
            total = len(results) + count
            offsets = population_offsets(seed, generation, total, policy.num_params, len(table))
            record = derive_rng(seed, Purpose.OBSTAT, generation).random(total) < settings.calc_obstat_prob
            for i in range(len(results), total):
                task = PairTask(i, int(offsets[i]), derive_seed(seed, Purpose.EPISODE, generation, i), bool(record[i]))
                results.append(runner.run_pair(es.theta, spec, task))
                steps += sum(results[-1].lengths)
        es.tell([r.returns for r in results], pairs=len(results))
        for result in results:
            if result.obs_count and result.obs_sum is not None and result.obs_sumsq is not None:
                obstat.increment(result.obs_sum, result.obs_sumsq, result.obs_count)
        sizes.append(len(results))
    runner.close()
    table.close()
    return es.theta, obstat, sizes


@pytest.mark.parametrize("timesteps", [0, 600])
def test_generations_equal_an_independent_computation(tmp_path: Path, timesteps: int) -> None:
    config = variable_config(f"timesteps_per_batch={timesteps}", "run.generations=4")
    trainer = train(config, tmp_path)
    theta, obstat, sizes = independent_run(config, 4)
    np.testing.assert_array_equal(trainer.theta, theta)
    np.testing.assert_array_equal(trainer.obstat.sum, obstat.sum)
    np.testing.assert_array_equal(trainer.obstat.sumsq, obstat.sumsq)
    assert [r["pairs"] for r in log_records(tmp_path)] == sizes
    if timesteps == 0:
        assert sizes == [6] * 4
    else:
        assert min(sizes) > 6  # every generation's first round falls short of 600 steps here


class RecordingEvaluator(SerialEvaluator):
    """Runs tasks in this process and keeps what each call got and gave: a generation's rounds."""

    def __init__(self, setup: WorkerSetup, table: core.NoiseTable) -> None:
        super().__init__(setup, table)
        self.calls: list[tuple[int, list[PairTask], list[EvalTask], list[PairResult]]] = []

    def evaluate(
        self, theta: np.ndarray, spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]
    ) -> tuple[list[PairResult], list[EvalResult]]:
        pair_results, eval_results = super().evaluate(theta, spec, pairs, evals)
        self.calls.append((spec.generation, pairs, evals, pair_results))
        return pair_results, eval_results


def test_rounds_follow_the_rule_until_both_thresholds_are_met(tmp_path: Path) -> None:
    target, generations = 600, 8
    with Trainer(variable_config("run.generations=8"), tmp_path, evaluator=RecordingEvaluator) as trainer:
        trainer.train()
        assert isinstance(trainer.evaluator, RecordingEvaluator)
        calls = trainer.evaluator.calls
    records = log_records(tmp_path)
    for generation, record, previous in zip(range(generations), records, [None, *records]):
        rounds = [call for call in calls if call[0] == generation]
        assert [len(evals) for _, _, evals, _ in rounds] == [2] + [0] * (len(rounds) - 1)  # evaluation episodes: round 0 only
        pairs = [task.pair for _, tasks, _, _ in rounds for task in tasks]
        assert pairs == list(range(len(pairs))) and len(rounds[0][1]) == 6
        steps = 0
        for number, (_, tasks, _, results) in enumerate(rounds):
            done = sum(len(r[1]) for r in rounds[:number])
            if number:
                assert steps < target  # a round runs only while the steps fall short
                assert len(tasks) == max(1, math.ceil(Fraction(target - steps) / Fraction(steps, done)))
            steps += sum(sum(result.lengths) for result in results)
        assert steps >= target and len(pairs) >= 6  # both thresholds
        assert (record["pairs"], record["rounds"]) == (len(pairs), len(rounds))
        before = previous or {"timesteps_total": 0, "episodes_total": 0}
        assert record["timesteps_total"] - before["timesteps_total"] == steps
        assert record["episodes_total"] - before["episodes_total"] == 2 * len(pairs)
    assert max(r["rounds"] for r in records) >= 3


def test_a_variable_batch_is_the_same_in_process_and_with_1_and_2_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the worker host imports custom_envs
    here = train(variable_config("run.generations=4"), tmp_path / "here")
    expected = [(r["pairs"], r["rounds"]) for r in log_records(tmp_path / "here")]
    assert max(rounds for _, rounds in expected) >= 2
    for procs in (1, 2):
        out = tmp_path / f"cluster{procs}"
        cluster = train(variable_config("run.generations=4", f"run.workers={procs}"), out, evaluator=None)
        np.testing.assert_array_equal(here.theta, cluster.theta)
        np.testing.assert_array_equal(here.obstat.sumsq, cluster.obstat.sumsq)
        records = log_records(out)
        assert [(r["pairs"], r["rounds"]) for r in records] == expected
        assert all(r["procs"] == procs and r["messages_dropped"] == 0 for r in records)


def test_a_variable_batch_resumes_to_the_same_theta(tmp_path: Path) -> None:
    split_and_resume(variable_config, tmp_path)
    pairs = [r["pairs"] for r in log_records(tmp_path / "straight")]
    assert [r["pairs"] for r in log_records(tmp_path / "split")] == pairs and max(pairs) > 6


def test_ctrl_c_in_a_later_round_leaves_the_generation_undone(tmp_path: Path) -> None:
    """A generation is atomic: interrupted in its second round, nothing of it is kept, and running
    it again gives what an uninterrupted run gives."""

    class InterruptedOnce(SerialEvaluator):
        interrupted = False

        def evaluate(
            self, theta: np.ndarray, spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]
        ) -> tuple[list[PairResult], list[EvalResult]]:
            if spec.generation == 1 and not evals and not InterruptedOnce.interrupted:
                InterruptedOnce.interrupted = True
                raise KeyboardInterrupt
            return super().evaluate(theta, spec, pairs, evals)

    straight = train(variable_config("run.generations=3"), tmp_path / "straight")
    with Trainer(variable_config("run.generations=3"), tmp_path / "run", evaluator=InterruptedOnce) as trainer:
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
        assert InterruptedOnce.interrupted and trainer.generation == 1
        assert [r["generation"] for r in log_records(tmp_path / "run")] == [1]
        trainer.train()
    np.testing.assert_array_equal(trainer.theta, straight.theta)
    assert trainer.timesteps_total == straight.timesteps_total
