"""Config loading: the paper's layout, errors with suggestions, overrides, shipped configs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from esfast.cli import shipped_configs
from esfast.config import AtariSettings, Config, ConfigError, apply_overrides, config_from_dict, load_config, map_env_id

PAPER_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper-code-humanoid.json"
PAPER_DATA = {
    "config": {
        "calc_obstat_prob": 0.01, "episodes_per_batch": 10000, "eval_prob": 0.003, "l2coeff": 0.005, "noise_stdev": 0.02,
        "snapshot_freq": 20, "timesteps_per_batch": 100000, "return_proc_mode": "centered_rank", "episode_cutoff_mode": "env_default",
    },
    "env_id": "Humanoid-v1",
    "exp_prefix": "humanoid",
    "optimizer": {"args": {"stepsize": 0.01}, "type": "adam"},
    "policy": {
        "args": {"ac_bins": "continuous:", "ac_noise_std": 0.01, "connection_type": "ff", "hidden_dims": [256, 256], "nonlin_type": "tanh"},
        "type": "MujocoPolicy",
    },
}


def test_paper_config_loads_unchanged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = PAPER_CONFIG if PAPER_CONFIG.exists() else tmp_path / "humanoid.json"
    if not PAPER_CONFIG.exists():
        path.write_text(json.dumps(PAPER_DATA))
    assert json.loads(path.read_text()) == PAPER_DATA
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    assert config.env_id == "Humanoid-v5"
    assert "Humanoid-v1 is from the 2017 gym; using Humanoid-v5" in caplog.text
    assert config.es.noise_stdev == 0.02 and config.es.l2coeff == 0.005 and config.es.episodes_per_batch == 10000
    assert config.optimizer.type == "adam" and config.optimizer.stepsize == 0.01
    assert config.policy.hidden_dims == (256, 256) and config.policy.nonlin_type == "tanh"
    assert config.pop_pairs == 5000 and config.eval_episodes() == 30


def test_map_env_id() -> None:
    assert map_env_id("HalfCheetah-v1") == "HalfCheetah-v5"
    assert map_env_id("CartPole-v1") == "CartPole-v1"
    assert map_env_id("Humanoid-v5") == "Humanoid-v5"


def test_round_trip() -> None:
    config = config_from_dict(PAPER_DATA)
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"config": {"noise_stdv": 0.1}}, "unknown config key 'config.noise_stdv'; did you mean 'noise_stdev'?"),
        ({"polcy": {}}, "unknown config key 'polcy'; did you mean 'policy'?"),
        ({"policy": {"args": {"hidden_dim": [4]}}}, "did you mean 'hidden_dims'?"),
        ({"config": {"episodes_per_batch": 0}}, "episodes_per_batch must be an integer >= 2"),
        ({"config": {"noise_stdev": 0}}, "noise_stdev must be a positive number"),
        ({"config": {"noise_stdev": -0.1}}, "noise_stdev must be a positive number"),
        ({"config": {"return_proc_mode": "rank"}}, "return_proc_mode must be one of"),
        ({"config": {"episode_cutoff_mode": "adaptive:x"}}, "episode_cutoff_mode must be"),
        ({"optimizer": {"type": "rmsprop"}}, "optimizer.type must be one of adam, sgd"),
        ({"policy": {"args": {"ac_bins": "bins:3"}}}, "ac_bins must be"),
        ({"policy": {"args": {"hidden_dims": [64, -1]}}}, "hidden_dims must be a list of positive integers"),
        ({"run": {"workers": 0}}, "run.workers must be an integer >= 1"),
        ({"config": []}, "config section 'config' must be a JSON object"),
    ],
)
def test_bad_configs(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?").replace(".", r"\.")):
        config_from_dict(data)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"env_id": "x",\n "config": {')
    with pytest.raises(ConfigError, match="not valid JSON: .* at line 2"):
        load_config(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        load_config(bad)


def test_overrides() -> None:
    config = Config()
    changed = apply_overrides(config, ["noise_stdev=0.05", "policy.args.hidden_dims=[8, 8]", "env_id=CartPole-v1", "run.seed=3"])
    assert changed.es.noise_stdev == 0.05 and changed.policy.hidden_dims == (8, 8)
    assert changed.env_id == "CartPole-v1" and changed.run.seed == 3
    with pytest.raises(ConfigError, match="unknown config key 'noise_std'; did you mean 'noise_stdev'"):
        apply_overrides(config, ["noise_std=1"])
    with pytest.raises(ConfigError, match="ambiguous"):
        apply_overrides(config, ["type=adam"])
    with pytest.raises(ConfigError, match="--set takes key=value"):
        apply_overrides(config, ["noise_stdev"])
    with pytest.raises(ConfigError, match="noise_stdev must be a positive number"):
        apply_overrides(config, ["noise_stdev=-1"])


@pytest.mark.parametrize("name", ["halfcheetah", "hopper", "humanoid", "inverted_double_pendulum", "inverted_pendulum", "swimmer", "walker2d"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(shipped_configs()[name])
    assert config.env_id.endswith("-v5")


def test_humanoid_config_has_the_paper_values() -> None:
    config = load_config(shipped_configs()["humanoid"])
    assert (config.es.noise_stdev, config.optimizer.stepsize, config.es.l2coeff) == (0.02, 0.01, 0.005)
    assert config.policy.hidden_dims == (256, 256) and config.policy.nonlin_type == "tanh"
    assert (config.es.calc_obstat_prob, config.es.eval_prob) == (0.01, 0.003)


def test_timestep_limit_modes() -> None:
    assert Config().timestep_limit() == (None, None, None)
    adaptive = config_from_dict({"config": {"episode_cutoff_mode": "adaptive:200,0.5,1.5"}})
    assert adaptive.timestep_limit() == (200, 0.5, 1.5)
    assert config_from_dict({"config": {"episode_cutoff_mode": 300}}).timestep_limit() == (300, None, None)


ATARI_CONFIGS = ["pong", "breakout", "seaquest", "beamrider", "frostbite"]


@pytest.mark.parametrize("name", ATARI_CONFIGS)
def test_shipped_atari_configs_load(name: str) -> None:
    config = load_config(shipped_configs()[name])
    assert config.env_id.startswith("ALE/") and config.env_id.endswith("-v5")
    assert config.policy.type == "AtariPolicy" and config.policy.hidden_dims == (256,) and config.policy.nonlin_type == "relu"
    assert config.es.noise_stdev == 0.005 and config.timestep_limit() == (5000, None, None)
    assert config.atari == AtariSettings()  # the standard preprocessing, written out in full in the file
    assert config_from_dict(config.to_dict()) == config


def test_atari_section() -> None:
    base = {"env_id": "ALE/Pong-v5", "policy": {"type": "AtariPolicy", "args": {"nonlin_type": "relu"}}}
    assert config_from_dict(base).atari == AtariSettings()  # AtariPolicy without the section: the defaults
    config = config_from_dict({**base, "atari": {"frame_skip": 3, "stack": 2}})
    assert (config.atari.frame_skip, config.atari.stack, config.atari.noop_max) == (3, 2, 30)
    assert config.to_dict()["atari"]["frame_skip"] == 3
    assert apply_overrides(config, ["noop_max=0"]).atari.noop_max == 0
    assert "atari" not in Config().to_dict()  # configs without the section keep their layout


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"atari": {}}, "config section 'atari' needs policy.type 'AtariPolicy', got 'MujocoPolicy'"),
        ({"policy": {"type": "AtariPolicy", "args": {"nonlin_type": "relu"}}, "atari": {"framskip": 4}},
         "unknown config key 'atari.framskip'; did you mean 'frame_skip'?"),
        ({"policy": {"type": "AtariPolicy", "args": {"nonlin_type": "relu"}}, "atari": {"stack": 0}}, "atari.stack must be an integer >= 1, got 0"),
        ({"policy": {"type": "AtariPolicy"}}, "policy.args.nonlin_type must be 'relu' for AtariPolicy (the paper's network), got 'tanh'"),
    ],
)
def test_bad_atari_config(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value) == message
