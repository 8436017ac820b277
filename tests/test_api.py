"""esfast.train and esfast.load_policy: the run they make, callbacks, overrides, the loaded actor.

The callback tests need ``Trainer.train(on_generation=...)``: called after each generation's
checkpoint and log record are written, with the record; a true value ends the call there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import esfast
from esfast.checkpoint import load_checkpoint, save_checkpoint
from esfast.config import Config, apply_overrides
from esfast.errors import CheckpointError, ConfigError, RunExistsError
from esfast.evaluators import SerialEvaluator
from esfast.policies import Actor
from esfast.training import Trainer

REACH = {
    "env_id": "EsfastTest/Reach-v0",
    "env_module": "custom_envs",
    "exp_prefix": "reach",
    "episodes_per_batch": 8,
    "noise_stdev": 0.1,
    "hidden_dims": [8],
    "calc_obstat_prob": 1.0,
    "eval_episodes": 1,
    "snapshot_freq": 0,
}


def reach(out: Path | None, **changes: Any) -> esfast.TrainingResult:
    """A tiny run in this process."""
    return esfast.train(Config(), out=out, evaluator=SerialEvaluator, **{**REACH, **changes})


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_import_esfast_stays_light() -> None:
    code = "import esfast, sys; light = 'gymnasium' not in sys.modules; esfast.train; print(light, 'gymnasium' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True"]  # light until train is first used
    for name in ("train", "load_policy", "LoadedPolicy", "TrainingResult"):
        assert name in esfast.__all__ and name in dir(esfast)
    assert esfast.train is esfast.api.train
    with pytest.raises(AttributeError, match="has no attribute 'trian'"):
        esfast.trian  # noqa: B018


def test_train_writes_the_run_and_calls_back_every_generation(tmp_path: Path) -> None:
    seen: list[tuple[dict[str, Any], Trainer]] = []
    result = reach(tmp_path / "run", generations=3, callbacks=[lambda record, trainer: seen.append((record, trainer))])
    assert [record["generation"] for record, _ in seen] == [1, 2, 3]
    assert all(isinstance(trainer, Trainer) for _, trainer in seen)
    assert [record for record, _ in seen] == records(tmp_path / "run")  # the records of log.jsonl
    assert result.generation == 3 and result.timesteps_total == 3 * 8 * 10 and not result.stopped
    assert result.out_dir == tmp_path / "run" and result.checkpoint == tmp_path / "run" / "checkpoints" / "latest.npz"
    assert result.last_record == seen[-1][0]
    state, config = load_checkpoint(result.checkpoint)
    np.testing.assert_array_equal(state["theta"], result.theta)
    assert state["generation"] == 3 and config == result.config
    assert result.load_policy().generation == 3


def test_a_callback_stops_the_run_after_its_generation(tmp_path: Path) -> None:
    calls: list[int] = []

    def stop_at_two(record: dict[str, Any], trainer: Trainer) -> bool:
        return record["generation"] == 2

    def count(record: dict[str, Any], trainer: Trainer) -> None:
        calls.append(record["generation"])

    result = reach(tmp_path / "run", generations=10, callbacks=[stop_at_two, count])
    assert result.stopped and result.generation == 2
    assert calls == [1, 2]  # every callback sees every record, also the one that stops the run
    assert [record["generation"] for record in records(tmp_path / "run")] == [1, 2]
    assert load_checkpoint(result.checkpoint)[0]["generation"] == 2
    # A single callable is one callback; numpy's booleans stop the run too.
    single = reach(tmp_path / "single", generations=10, callbacks=lambda record, trainer: np.float64(record["generation"]) >= 1)
    assert single.stopped and single.generation == 1


def test_keyword_overrides_are_config_settings(tmp_path: Path) -> None:
    base = apply_overrides(Config(), ["run.timesteps=100000", "run.generations=50"])
    overrides = {
        **REACH,
        "policy.args.nonlin_type": "relu",  # a dotted path
        "generations": 2,
        "seed": 3,
        "workers": 2,
        "noise_stdev": np.float32(0.05),  # numpy scalars are numbers
        "hidden_dims": (4,),
    }
    result = esfast.train(base, out=tmp_path / "run", evaluator=SerialEvaluator, **overrides)
    config = result.config
    assert (config.run.generations, config.run.timesteps, config.run.seed, config.run.workers) == (2, None, 3, 2)
    assert config.es.noise_stdev == pytest.approx(0.05) and config.policy.hidden_dims == (4,) and config.policy.nonlin_type == "relu"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["timesteps"] is None
    # The same run as the trainer makes from the same config.
    with Trainer(config, tmp_path / "trainer", evaluator=SerialEvaluator) as trainer:
        trainer.train()
    np.testing.assert_array_equal(result.theta, trainer.theta)
    # timesteps= replaces the generations budget the same way.
    assert reach(tmp_path / "steps", generations=None, timesteps=80).config.run.generations is None


def test_config_from_a_file_or_a_shipped_name(tmp_path: Path) -> None:
    path = tmp_path / "reach.json"
    path.write_text(json.dumps(apply_overrides(Config(), [f"{k}={json.dumps(v)}" for k, v in REACH.items()]).to_dict()))
    from_file = esfast.train(path, out=tmp_path / "file", evaluator=SerialEvaluator, generations=1)
    assert from_file.config.env_id == "EsfastTest/Reach-v0" and from_file.generation == 1
    assert esfast.train(str(path), out=tmp_path / "text", evaluator=SerialEvaluator, generations=1).config == from_file.config
    shipped = esfast.train(
        "inverted_pendulum", out=tmp_path / "shipped", evaluator=SerialEvaluator, generations=1, episodes_per_batch=2, eval_episodes=0
    )
    assert shipped.config.env_id == "InvertedPendulum-v5" and shipped.config.exp_prefix == "inverted_pendulum"


def test_default_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = reach(None, generations=1)
    second = reach(None, generations=1)
    assert first.out_dir.parent == Path("runs") and first.out_dir.name.startswith("reach-")
    assert second.out_dir != first.out_dir and (tmp_path / second.out_dir / "log.jsonl").exists()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"noise_std": 0.1}, ConfigError, "unknown config key 'noise_std'; did you mean 'noise_stdev'?"),
        ({"noise_stdev": -1.0}, ConfigError, "config.noise_stdev must be a positive number"),
        ({"noise_stdev": object()}, ConfigError, "config override noise_stdev=<object object at"),
        ({"generations": 0}, ConfigError, "run.generations must be an integer >= 1"),
        ({"hidden_dims": "[8]"}, ConfigError, "policy.args.hidden_dims must be a list of positive integers"),
        ({"seconds": 0}, ValueError, "seconds must be a positive number or None, got 0"),
        ({"seconds": float("nan")}, ValueError, "seconds must be a positive number or None, got nan"),
        ({"callbacks": [print, 1]}, TypeError, "callbacks must be callables taking (record, trainer), got 1"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path, arguments: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        reach(tmp_path / "run", **arguments)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_bad_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file 'cheetah' and no shipped config of that name"):
        esfast.train("cheetah", out=tmp_path / "run")
    with pytest.raises(TypeError, match="config_or_name must be a Config, a config file or a shipped config's name, got 3"):
        esfast.train(3, out=tmp_path / "run")  # type: ignore[arg-type]
    reach(tmp_path / "run", generations=1)
    with pytest.raises(RunExistsError, match="already holds a run"):
        reach(tmp_path / "run", generations=1)


# load_policy --------------------------------------------------------------------------------


def evaluation_actor(trainer: Trainer) -> Actor:
    """The actor of the trainer's next evaluation episodes: the in-process runner's, for θ and statistics as they are now."""
    runner = trainer.evaluator.runner  # type: ignore[union-attr]
    np.copyto(runner.center, trainer.theta)
    actor = runner.actors["center"]
    actor.prepare(trainer.obstat.mean, trainer.obstat.std)
    return actor


def observations(env: Any, count: int) -> list[Any]:
    """Observations the environment gives: those of resets and of random steps."""
    seen = []
    env.action_space.seed(0)
    observation, _ = env.reset(seed=0)
    for step in range(count):
        seen.append(observation)
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            observation, _ = env.reset(seed=step + 1)
    return seen


def test_load_policy_acts_as_the_evaluation_episodes(tmp_path: Path) -> None:
    config = apply_overrides(Config(), [f"{k}={json.dumps(v)}" for k, v in {**REACH, "generations": 3}.items()])
    with Trainer(config, tmp_path, evaluator=SerialEvaluator) as trainer:
        trainer.train()
        policy = esfast.load_policy(tmp_path / "checkpoints" / "latest.npz")
        env = policy.make_env()
        seen = observations(env, 25)
        env.close()
        expected = [evaluation_actor(trainer)(observation) for observation in seen]
        np.testing.assert_array_equal(policy.theta, trainer.theta)
        np.testing.assert_array_equal(policy.obs_mean, trainer.obstat.mean)
        np.testing.assert_array_equal(policy.obs_std, trainer.obstat.std)
    assert trainer.obstat.count > 100  # statistics of many observations: the normalization matters
    actions = [policy.act(observation) for observation in seen]
    for action, reference in zip(actions, expected):
        assert action.dtype == np.float32 and action.shape == (2,)
        np.testing.assert_array_equal(action, reference)
    unnormalized = policy.policy.actor(np.array(policy.theta))
    assert not np.array_equal(unnormalized(seen[0]), actions[0])
    assert policy.config == config and policy.generation == 3 and policy.checkpoint == tmp_path / "checkpoints" / "latest.npz"
    assert not policy.theta.flags.writeable and policy.reference_batch is None
    assert repr(policy).startswith("LoadedPolicy(EsfastTest/Reach-v0, 2-8-2 tanh, generation 3")
    # A run directory stands for its latest checkpoint.
    again = esfast.load_policy(tmp_path)
    np.testing.assert_array_equal(again.act(seen[3]), actions[3])


@pytest.mark.parametrize(
    ("cutoff", "limit"),
    [
        ("env_default", None),  # only the environment's own limit: Reach's 10 steps
        (4, 4),  # a fixed cutoff
        ("adaptive:5,0.5,2", 10),  # the first generation's episodes all reach 5 steps, so the cutoff doubles
    ],
)
def test_load_policy_has_the_episode_cutoff_of_the_evaluation_episodes(tmp_path: Path, cutoff: object, limit: int | None) -> None:
    result = reach(tmp_path, generations=1, episode_cutoff_mode=cutoff)
    assert result.last_record is not None
    policy = result.load_policy()
    assert policy.timestep_limit == limit == result.last_record["timestep_limit"]  # the cutoff of the next evaluation episodes
    env = policy.make_env()
    try:
        assert [policy.run_episode(env, seed=seed).length for seed in (7, 8)] == [min(10, limit or 10)] * 2
    finally:
        env.close()


def test_load_policy_discrete_actions(tmp_path: Path) -> None:
    config = apply_overrides(
        Config(), ["env_id=CartPole-v1", "episodes_per_batch=4", "hidden_dims=[8]", "calc_obstat_prob=1", "run.generations=2"]
    )
    with Trainer(config, tmp_path, evaluator=SerialEvaluator) as trainer:
        trainer.train()
        policy = esfast.load_policy(tmp_path)
        env = policy.make_env()
        seen = observations(env, 40)
        env.close()
        expected = [evaluation_actor(trainer)(observation) for observation in seen]
    actions = [policy.act(observation) for observation in seen]
    assert actions == expected and all(type(action) is int for action in actions)


def test_load_policy_atari_restores_the_reference_batch(tmp_path: Path) -> None:
    config = apply_overrides(
        esfast.config.resolve_config("pong"),
        ["screen_size=42", "stack=2", "reference_batch_size=8", "hidden_dims=[16]", "run.noise_table_size=200000", "episodes_per_batch=2"],
    )
    with Trainer(config, tmp_path, evaluator=SerialEvaluator) as trainer:
        trainer.save()  # generation 0: θ, and the reference batch collected for this run
        policy = esfast.load_policy(tmp_path)
        env = policy.make_env()
        seen = observations(env, 30)
        env.close()
        expected = [evaluation_actor(trainer)(observation) for observation in seen]
        batch = trainer.reference_batch
    assert seen[0].shape == (2, 42, 42) and seen[0].dtype == np.uint8
    assert [policy.act(observation) for observation in seen] == expected
    assert policy.reference_batch is not None and policy.reference_batch.shape == (8, 2, 42, 42)
    np.testing.assert_array_equal(policy.reference_batch, batch)
    assert policy.obs_mean.shape == (0,)


def test_load_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"^no checkpoint at"):
        esfast.load_policy(tmp_path / "missing.npz")
    result = reach(tmp_path / "run", generations=1)
    state, config = load_checkpoint(result.checkpoint)
    grown = {**state, **{key: np.append(state[key], np.float32(0)) for key in ("theta", "optimizer_m", "optimizer_v")}}
    save_checkpoint(tmp_path / "grown.npz", grown, config)
    size = state["theta"].size
    with pytest.raises(CheckpointError, match=rf"holds a policy of {size + 1} parameters; its config gives {size} on EsfastTest/Reach-v0"):
        esfast.load_policy(tmp_path / "grown.npz")
    widened = {**state, "obstat_sum": np.zeros(3), "obstat_sumsq": np.ones(3)}
    save_checkpoint(tmp_path / "widened.npz", widened, config)
    with pytest.raises(CheckpointError, match="does not fit its policy: observation statistics have shapes"):
        esfast.load_policy(tmp_path / "widened.npz")


def test_a_budget_of_none_does_not_clear_the_other_one(tmp_path: Path) -> None:
    result = esfast.train("inverted_pendulum", out=tmp_path, generations=None, timesteps=2_000, evaluator=SerialEvaluator, snapshot_freq=0)
    assert result.config.run.generations is None and result.config.run.timesteps == 2_000 and result.timesteps_total >= 2_000
