"""Defaults for an environment without a config: the kind read from its spaces, the values of each
kind, the run named after the environment, the shipped config found by its environment, and
CartPole-v1 learned with nothing but its id."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import esfast
from esfast.config import load_config, resolve_config, shipped_config_for_env, shipped_configs
from esfast.env_defaults import (
    ACTION_BINS,
    CUTOFF_WITHOUT_LIMIT,
    EVAL_EPISODES,
    GENERATIONS,
    EnvKind,
    config_for_env,
    env_kind,
    kind_defaults,
    population_pairs,
    run_name,
)
from esfast.errors import EnvError, PolicyError
from esfast.evaluators import SerialEvaluator
from esfast.training import Trainer

TESTS = Path(__file__).resolve().parent
CONFIGS = TESTS.parent / "configs"


class _SpacesEnv(gym.Env):
    """An environment of given spaces that is never stepped (the kind only reads the spaces)."""

    def __init__(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        self.observation_space = observation_space
        self.action_space = action_space


def _register(name: str, observation_space: gym.Space[Any], action_space: gym.Space[Any], max_episode_steps: int | None) -> str:
    env_id = f"EsfastTestSpaces/{name}-v0"
    if env_id not in gym.registry:
        gym.register(
            env_id,
            entry_point=lambda: _SpacesEnv(observation_space, action_space),
            max_episode_steps=max_episode_steps,
            disable_env_checker=True,
        )
    return env_id


UNBOUNDED = _register("Unbounded", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-np.inf, np.inf, (2,)), 300)
IMAGES = _register("Images", gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), gym.spaces.Discrete(2), 100)
MULTI = _register("Multi", gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([2, 2]), 100)


# The kind, read from the spaces and the time limit ------------------------------------------------


def test_the_kind_of_classic_control_mujoco_and_atari_tasks() -> None:
    assert env_kind("CartPole-v1") == EnvKind("discrete", obs_dim=4, actions=2, bounded=False, max_episode_steps=500)
    assert env_kind("Acrobot-v1") == EnvKind("discrete", obs_dim=6, actions=3, bounded=False, max_episode_steps=500)
    assert env_kind("Pendulum-v1") == EnvKind("low-dimensional box", obs_dim=3, actions=1, bounded=True, max_episode_steps=200)
    assert env_kind("InvertedPendulum-v5") == EnvKind("low-dimensional box", obs_dim=4, actions=1, bounded=True, max_episode_steps=1000)
    assert env_kind("Reacher-v5") == EnvKind("box", obs_dim=10, actions=2, bounded=True, max_episode_steps=50)
    assert env_kind(UNBOUNDED) == EnvKind("low-dimensional box", obs_dim=3, actions=2, bounded=False, max_episode_steps=300)
    assert env_kind("ALE/NotMadeHere-v5") == EnvKind("atari")  # an ALE id is Atari without making it
    # A custom environment without a time limit, registered by its module.
    assert env_kind("EsfastTest/Reach-v0", "custom_envs") == EnvKind("low-dimensional box", 2, 2, True, None)


def test_spaces_no_policy_takes_are_one_line() -> None:
    with pytest.raises(PolicyError, match=r"no defaults for EsfastTestSpaces/Images-v0: esfast's MLP policy needs a flat Box") as info:
        env_kind(IMAGES)
    assert "\n" not in str(info.value)
    with pytest.raises(PolicyError, match="no defaults for EsfastTestSpaces/Multi-v0: esfast's policies take Discrete or flat Box"):
        env_kind(MULTI)
    with pytest.raises(EnvError, match="cannot make environment 'NoSuchEnv-v0'"):
        env_kind("NoSuchEnv-v0")


def test_descriptions_name_the_kind_and_its_sizes() -> None:
    assert env_kind("CartPole-v1").describe() == "discrete actions (4 observations, 2 actions, episodes of up to 500 steps)"
    assert (
        env_kind("Pendulum-v1").describe()
        == "Box actions on few observations (3 observations, 1 action dimension, episodes of up to 200 steps)"
    )
    assert EnvKind("box", 17, 6, True, None).describe() == "Box actions (17 observations, 6 action dimensions, no time limit)"
    assert EnvKind("atari").describe() == "an Atari game"


# The defaults of each kind --------------------------------------------------------------------------


def test_population_follows_the_time_limit() -> None:
    assert [population_pairs(steps) for steps in (500, 200, 999, 1000, 50, 5000)] == [40, 100, 20, 20, 100, 20]


def test_discrete_defaults() -> None:
    config = kind_defaults("CartPole-v1", env_kind("CartPole-v1"))
    assert (config.es.noise_stdev, config.optimizer.type, config.optimizer.stepsize) == (0.1, "adam", 0.03)
    assert (config.pop_pairs, config.es.calc_obstat_prob, config.run.eval_episodes) == (40, 1.0, EVAL_EPISODES)
    assert config.policy.hidden_dims == (64, 64) and config.policy.nonlin_type == "tanh" and config.policy.type == "MLPPolicy"
    assert config.es.return_proc_mode == "centered_rank" and config.es.episode_cutoff_mode == "env_default"
    assert config.run.timesteps == GENERATIONS * 80 * 500 and config.run.generations is None
    assert (config.env_id, config.exp_prefix, config.atari) == ("CartPole-v1", "cartpole-v1", None)


def test_box_defaults_bin_the_actions_of_low_dimensional_tasks_only() -> None:
    pendulum = kind_defaults("Pendulum-v1", env_kind("Pendulum-v1"))
    assert (pendulum.es.noise_stdev, pendulum.optimizer.stepsize, pendulum.pop_pairs) == (0.05, 0.03, 100)
    assert pendulum.policy.ac_bins == f"uniform:{ACTION_BINS}" and pendulum.policy.ac_noise_std == 0.0
    unbounded = kind_defaults(UNBOUNDED, env_kind(UNBOUNDED))  # bins need bounds: continuous actions, with noise
    assert unbounded.policy.ac_bins == "continuous:" and unbounded.policy.ac_noise_std == 0.01 and unbounded.es.noise_stdev == 0.05
    reacher = kind_defaults("Reacher-v5", env_kind("Reacher-v5"))  # the paper's MuJoCo settings
    assert (reacher.es.noise_stdev, reacher.optimizer.stepsize, reacher.es.calc_obstat_prob) == (0.02, 0.01, 0.01)
    assert reacher.policy.ac_bins == "continuous:" and reacher.policy.ac_noise_std == 0.01 and reacher.pop_pairs == 100


def test_an_environment_without_a_time_limit_gets_a_cutoff() -> None:
    config = kind_defaults("EsfastTest/Reach-v0", env_kind("EsfastTest/Reach-v0", "custom_envs"), "custom_envs")
    assert config.es.episode_cutoff_mode == CUTOFF_WITHOUT_LIMIT and config.timestep_limit() == (CUTOFF_WITHOUT_LIMIT, None, None)
    assert config.pop_pairs == population_pairs(CUTOFF_WITHOUT_LIMIT) and config.env_module == "custom_envs"
    assert config.run.timesteps == GENERATIONS * config.es.episodes_per_batch * CUTOFF_WITHOUT_LIMIT


def test_atari_defaults_are_the_shipped_atari_settings() -> None:
    defaults = kind_defaults("ALE/Qbert-v5", env_kind("ALE/Qbert-v5"))
    assert (defaults.env_id, defaults.exp_prefix) == ("ALE/Qbert-v5", "ale-qbert-v5")
    for name in ("pong", "breakout", "seaquest", "beamrider", "frostbite", "freeway"):
        shipped = load_config(shipped_configs()[name])
        assert dataclasses.replace(shipped, env_id=defaults.env_id, exp_prefix=defaults.exp_prefix) == defaults, name


@pytest.mark.parametrize(("env_id", "name"), [("CartPole-v1", "cartpole"), ("Acrobot-v1", "acrobot"), ("Pendulum-v1", "pendulum")])
def test_classic_control_configs_are_the_kind_defaults_with_their_budget(env_id: str, name: str) -> None:
    shipped = load_config(shipped_configs()[name])
    defaults = kind_defaults(env_id, env_kind(env_id))
    assert dataclasses.replace(shipped, run=defaults.run) == defaults
    assert shipped.run.generations is not None and shipped.run.timesteps is None


def test_mountain_car_continuous_departs_from_its_kind_in_the_return_shaping_only() -> None:
    shipped = load_config(shipped_configs()["mountain_car_continuous"])
    defaults = kind_defaults("MountainCarContinuous-v0", env_kind("MountainCarContinuous-v0"))
    assert shipped.es.return_proc_mode == "normalized" and defaults.es.return_proc_mode == "centered_rank"
    assert dataclasses.replace(shipped, run=defaults.run, es=dataclasses.replace(shipped.es, return_proc_mode="centered_rank")) == defaults


# The run's name, and the shipped config found by its environment -------------------------------------


@pytest.mark.parametrize(
    ("env_id", "name"),
    [
        ("CartPole-v1", "cartpole-v1"),
        ("ALE/Pong-v5", "ale-pong-v5"),
        ("EsfastTest/Reach-v0", "esfasttest-reach-v0"),
        ("my_envs:Thing v2", "my_envs-thing-v2"),
        ("///", "run"),
    ],
)
def test_the_run_is_named_after_the_environment(env_id: str, name: str) -> None:
    assert run_name(env_id) == name


def test_shipped_configs_are_found_by_their_environment() -> None:
    env_ids = {name: load_config(path).env_id for name, path in shipped_configs().items()}
    assert len(set(env_ids.values())) == len(env_ids), "two shipped configs for one environment"
    for name, env_id in env_ids.items():
        assert shipped_config_for_env(env_id) == name
    assert {shipped_config_for_env(e) for e in ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCarContinuous-v0")} == {
        "cartpole",
        "acrobot",
        "pendulum",
        "mountain_car_continuous",
    }
    assert shipped_config_for_env("MountainCar-v0") is None and shipped_config_for_env("halfcheetah") is None
    assert {path.stem for path in CONFIGS.glob("*.json")} == set(shipped_configs())  # the installed copy is the source's


def test_config_for_env_says_in_one_line_what_it_runs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="esfast"):
        shipped = config_for_env("HalfCheetah-v5")
        defaults = config_for_env("MountainCar-v0")
        mapped = config_for_env("Humanoid-v1")  # the 2017 gym's id: its current version's shipped config
    assert shipped == resolve_config("halfcheetah") and mapped == resolve_config("humanoid")
    assert defaults == kind_defaults("MountainCar-v0", env_kind("MountainCar-v0"))
    lines = [record.getMessage() for record in caplog.records if record.name == "esfast.env_defaults"]
    assert lines == [
        "esfast: HalfCheetah-v5 has a shipped config, halfcheetah: using it (esfast train halfcheetah; docs/configs.md)",
        "esfast: no shipped config for MountainCar-v0: the defaults for discrete actions (2 observations, 3 actions, episodes of up"
        " to 200 steps): MLPPolicy 64x64 tanh, 100 pairs, σ 0.1, Adam step 0.03, 4,000,000 timesteps (docs/configs.md)",
        "esfast: Humanoid-v5 has a shipped config, humanoid: using it (esfast train humanoid; docs/configs.md)",
    ]
    assert config_for_env("Pendulum-v1", "custom_envs").env_module == "custom_envs"  # a module given with a shipped config


# The command and the Python API ---------------------------------------------------------------------


def esfast_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "esfast.cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False
    )


def test_esfast_train_env_names_the_run_after_the_environment(tmp_path: Path) -> None:
    small = "--env-module custom_envs --set episodes_per_batch=4 --set hidden_dims=[4] --generations 1 --workers 1".split()
    result = esfast_cli("train", "--env", "EsfastTest/Reach-v0", *small, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "esfast: no shipped config for EsfastTest/Reach-v0: the defaults for Box actions on few observations" in result.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("esfasttest-reach-v0-")
    assert load_config(run / "config.json").policy.ac_bins == f"uniform:{ACTION_BINS}"
    # A config named with --env: that config, with its environment replaced (and its name kept).
    result = esfast_cli("train", "inverted_pendulum", "--env", "EsfastTest/Reach-v0", *small, "--out", "named", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "shipped config" not in result.stdout
    config = load_config(tmp_path / "named" / "config.json")
    assert (config.env_id, config.exp_prefix, config.policy.ac_bins) == ("EsfastTest/Reach-v0", "inverted_pendulum", "continuous:")


def test_esfast_train_env_of_a_shipped_config_says_so(tmp_path: Path) -> None:
    result = esfast_cli(
        "train", "--env", "Pendulum-v1", "--set", "episodes_per_batch=2", "--generations", "1", "--workers", "1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0]
        == "esfast: Pendulum-v1 has a shipped config, pendulum: using it (esfast train pendulum; docs/configs.md)"
    )
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("pendulum-v1-")
    assert load_config(run / "config.json") == dataclasses.replace(
        resolve_config("pendulum"),
        es=dataclasses.replace(resolve_config("pendulum").es, episodes_per_batch=2),
        run=dataclasses.replace(resolve_config("pendulum").run, generations=1, workers=1),
    )


def test_python_api_chooses_as_the_command_does(tmp_path: Path) -> None:
    small = {"episodes_per_batch": 2, "generations": 1, "eval_episodes": 0, "evaluator": SerialEvaluator}
    shipped = esfast.train(env_id="Acrobot-v1", out=tmp_path / "shipped", **small)
    assert dataclasses.replace(shipped.config.es, episodes_per_batch=80) == resolve_config("acrobot").es
    defaults = esfast.train(env_id="MountainCar-v0", out=tmp_path / "defaults", **small)
    expected = kind_defaults("MountainCar-v0", env_kind("MountainCar-v0"))
    assert dataclasses.replace(defaults.config, es=expected.es, run=expected.run) == expected
    named = esfast.train("halfcheetah", env_id="Swimmer-v5", out=tmp_path / "named", **small)  # a config with env_id: that config
    assert (named.config.env_id, named.config.exp_prefix, named.config.policy.ac_bins) == ("Swimmer-v5", "halfcheetah", "continuous:")
    assert esfast.train(out=tmp_path / "default", **small).config.env_id == "HalfCheetah-v5"  # as esfast train alone


def test_cartpole_reaches_475_within_40_generations_with_nothing_but_its_id(tmp_path: Path) -> None:
    """The run of ``esfast train --env CartPole-v1 --generations 40`` (seed 0, the default), stopped
    once the evaluation return (5 episodes of the unperturbed policy) reaches 475."""
    seen: list[dict[str, Any]] = []

    def solved(record: dict[str, Any], trainer: Trainer) -> bool:
        seen.append(record)
        return record["eval_return_mean"] >= 475

    result = esfast.train(env_id="CartPole-v1", generations=40, out=tmp_path / "run", callbacks=solved)
    assert result.stopped and result.last_record is not None and result.last_record["eval_return_mean"] >= 475
    assert result.generation <= 40 and result.config.run.eval_episodes == EVAL_EPISODES
    assert [record["generation"] for record in seen] == list(range(1, result.generation + 1))
    assert seen[0]["eval_return_mean"] < 100  # it learned: the first generation's policy falls within 100 steps
