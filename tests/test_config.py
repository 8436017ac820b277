"""Config loading: the paper's layout, errors with suggestions, overrides, shipped configs."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from esfast.config import (
    AtariSettings,
    Config,
    ConfigError,
    ESSettings,
    OptimizerSettings,
    PolicySettings,
    RunSettings,
    _leaf_paths,
    apply_overrides,
    config_from_dict,
    load_config,
    map_env_id,
    shipped_configs,
)

PAPER_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper-code-humanoid.json"
PAPER_DATA = {
    "config": {
        "calc_obstat_prob": 0.01,
        "episodes_per_batch": 10000,
        "eval_prob": 0.003,
        "l2coeff": 0.005,
        "noise_stdev": 0.02,
        "snapshot_freq": 20,
        "timesteps_per_batch": 100000,
        "return_proc_mode": "centered_rank",
        "episode_cutoff_mode": "env_default",
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
    assert len(caplog.records) == 1, caplog.text  # timesteps_per_batch is used, not warned about
    assert config.es.timesteps_per_batch == 100_000
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
    with pytest.raises(ConfigError, match=r"not valid JSON: .* at line 2"):
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


def test_another_environment_drops_the_configs_environment_options(caplog: pytest.LogCaptureFixture) -> None:
    """``esfast train ant --env Hopper-v5``: Ant's options are not Hopper's; options set with --set stay."""
    ant = load_config(shipped_configs()["ant"])
    assert ant.env_kwargs == {"include_cfrc_ext_in_observation": False}
    with caplog.at_level(logging.INFO, logger="esfast.config"):
        hopper = apply_overrides(ant, ["env_id=Hopper-v5"])
    assert hopper.env_id == "Hopper-v5" and hopper.env_kwargs == {}
    dropped = 'env_kwargs {"include_cfrc_ext_in_observation": false} dropped: they are options of Ant-v5, not of Hopper-v5'
    assert caplog.messages == [dropped]
    both = apply_overrides(ant, ["env_kwargs.terminate_when_unhealthy=false", "env_id=Hopper-v5"])
    assert both.env_kwargs == {"terminate_when_unhealthy": False}
    same = apply_overrides(ant, ["env_id=Ant-v5", "env_kwargs.healthy_reward=2"])
    assert same.env_kwargs == {"include_cfrc_ext_in_observation": False, "healthy_reward": 2}


@pytest.mark.parametrize(
    "name", ["ant", "halfcheetah", "hopper", "humanoid", "inverted_double_pendulum", "inverted_pendulum", "swimmer", "walker2d"]
)
def test_shipped_configs_load(name: str) -> None:
    config = load_config(shipped_configs()[name])
    assert config.env_id.endswith("-v5")


def test_humanoid_config_keeps_the_paper_network_and_step() -> None:
    config = load_config(shipped_configs()["humanoid"])
    assert (config.es.noise_stdev, config.optimizer.stepsize, config.es.l2coeff) == (0.02, 0.01, 0.005)
    assert config.policy.hidden_dims == (256, 256) and config.policy.nonlin_type == "tanh"


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
        (
            {"policy": {"type": "AtariPolicy", "args": {"nonlin_type": "relu"}}, "atari": {"framskip": 4}},
            "unknown config key 'atari.framskip'; did you mean 'frame_skip'?",
        ),
        (
            {"policy": {"type": "AtariPolicy", "args": {"nonlin_type": "relu"}}, "atari": {"stack": 0}},
            "atari.stack must be an integer >= 1, got 0",
        ),
        (
            {"policy": {"type": "AtariPolicy", "args": {"nonlin_type": "relu"}}, "atari": {"stack": 65}},
            "atari.stack must be at most 64, got 65",
        ),
        ({"policy": {"type": "AtariPolicy"}}, "policy.args.nonlin_type must be 'relu' for AtariPolicy (the paper's network), got 'tanh'"),
    ],
)
def test_bad_atari_config(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value) == message


# Every setting, swept with values it must refuse ------------------------------------------------

NAN, INF = float("nan"), float("inf")
# Refused by every numeric setting: not finite, negative, far out of range, or not a number at all.
NUMBER_BAD = [NAN, INF, -INF, -1, 1e300, 10**30, "0.1", True, False, None, [0.1], {"value": 0.1}]
COUNT_BAD = [*NUMBER_BAD, 1.5, 2.0, "1"]


def _not_null(values: list) -> list:
    return [v for v in values if v is not None]


BAD_VALUES: dict[str, list] = {
    "env_id": ["", " ", "\t", "Cart Pole-v1", "CartPole-v1\n", "\x00", 1, None, True, ["CartPole-v1"]],
    "env_module": ["", "my envs", "1abc", "a..b", "a/b", 1, True, ["custom_envs"]],
    "exp_prefix": ["", "a/b", "a\\b", "a b", "x" * 201, 1, None, True],
    "config.noise_stdev": [*NUMBER_BAD, 0, 1e-9, 1001, 1e39],
    "config.episodes_per_batch": [*COUNT_BAD, 0, 1, 3, 41, 2**24 + 2, 10**12, 2**62],
    "config.timesteps_per_batch": [*COUNT_BAD, 2**24 + 1, 2**53],
    "config.calc_obstat_prob": [*NUMBER_BAD, 1.5, -0.01],
    "config.eval_prob": [*NUMBER_BAD, 1.5, -0.01],
    "config.l2coeff": [*NUMBER_BAD, 1001],
    "config.return_shift": [*NUMBER_BAD, -1, 1001],
    "config.elite_fraction": [*NUMBER_BAD, 0, -0.5, 1.01],
    "config.snapshot_freq": [*COUNT_BAD, 2**53 + 1],
    "config.return_proc_mode": ["rank", "", 1, None, True, ["raw"]],
    "config.episode_cutoff_mode": [
        0,
        -1,
        2**53 + 1,
        True,
        None,
        NAN,
        INF,
        1.5,
        "",
        "default",
        "100",
        "adaptive:x",
        "adaptive:10,0.5",
        "adaptive:0,0.5,2",
        "adaptive:10,1.5,2",
        "adaptive:10,0.5,1",
        "adaptive:10,0.5,0.5",
        "adaptive:10,0.5,1e9",
        "adaptive:10,nan,2",
        "adaptive:10,0.5,inf",
        "adaptive:1_0,0.5,2",
        "adaptive:\u0661\u0660,0.5,2",
        "adaptive:10,-0.5,2",
        "adaptive:9007199254740993,0.5,2",
        "adaptive:10,0.5,2,",
        " adaptive:10,0.5,2",
    ],
    "optimizer.type": ["rmsprop", "", 1, None, True],
    "optimizer.args.stepsize": [*NUMBER_BAD, 0, 1e-9, 1001],
    "optimizer.args.momentum": [*NUMBER_BAD, 1, 1.0, -0.1],
    "policy.type": ["Policy", "", 1, None, True],
    "policy.args.hidden_dims": [
        [0],
        [-1],
        [2**16 + 1],
        [1.5],
        [True],
        [NAN],
        [None],
        ["64"],
        "64",
        64,
        None,
        {"a": 1},
        [64] * 65,
        [2**16, 2**16],
        [10**30],
    ],
    "policy.args.nonlin_type": ["tan", "", 1, None, True],
    "policy.args.connection_type": ["rnn", "", 1, None, True],
    "policy.args.ac_noise_std": [*NUMBER_BAD, 1001],
    "policy.args.ac_bins": [
        "bins:3",
        "",
        "continuous",
        "continuous:3",
        "uniform:",
        "uniform:1",
        "uniform:0",
        "uniform:1025",
        "uniform:x",
        "uniform:99999999999999",
        "uniform:-2",
        "custom:",
        "custom:0.5",
        "custom:-1,2",
        "custom:-1,,1",
        "custom:nan,1",
        "custom:-1,inf",
        "custom:-1,1e999",
        "custom:" + ",".join(["0"] * 1025),
        1,
        None,
        True,
    ],
    "run.seed": [*COUNT_BAD, 2**63],
    "run.generations": [*_not_null(COUNT_BAD), 0, 2**53 + 1],
    "run.timesteps": [*_not_null(COUNT_BAD), 0, 2**53 + 1],
    "run.workers": [*_not_null(COUNT_BAD), 0, 4097],
    "run.eval_episodes": [*_not_null(COUNT_BAD), 2**24 + 1],
    "run.noise_table_size": [*COUNT_BAD, 0, 2**40 + 1, 10**14],
    "run.tensorboard": [0, 1, "true", None, NAN, [True]],
    "atari.noop_max": [*COUNT_BAD, 10_001],
    "atari.frame_skip": [*COUNT_BAD, 0, 101],
    "atari.screen_size": [*COUNT_BAD, 10, 19, 513],
    "atari.stack": [*COUNT_BAD, 0, 65],
    "atari.terminal_on_life_loss": [0, 1, "true", None, NAN, [True]],
    "atari.repeat_action_probability": [*NUMBER_BAD, 1.5],
    "atari.reference_batch_size": [*COUNT_BAD, 0, 1, 2**28 + 1, 9511],  # 9511 x 4 x 84**2 bytes > 2**28
}

# Values at the documented bounds (docs/configs.md), which must be accepted.
GOOD_VALUES: dict[str, list] = {
    "env_id": ["CartPole-v1", "ALE/Pong-v5", "EsfastTest/Reach-v0"],
    "env_module": [None, "custom_envs", "package.sub_module"],
    "exp_prefix": ["x", "x" * 200, "run-1.2_a"],
    "config.noise_stdev": [1e-8, 1e3, 1],
    "config.episodes_per_batch": [2, 2**24],
    "config.timesteps_per_batch": [0, 100_000, 2**24],
    "config.calc_obstat_prob": [0, 1, 0.5],
    "config.eval_prob": [0, 1, 0.0, 1.0],
    "config.l2coeff": [0, 1e3],
    "config.return_shift": [0, 1e3],
    "config.elite_fraction": [1, 1.0, 0.5, 1e-9],
    "config.snapshot_freq": [0, 2**53],
    "config.return_proc_mode": ["centered_rank", "normalized", "raw"],
    "config.episode_cutoff_mode": [
        "env_default",
        1,
        2**53,
        "adaptive:1,0,1.0001",
        "adaptive:9007199254740992,1,1000",
        "adaptive:200,.5,1.5e0",
    ],
    "optimizer.type": ["adam", "sgd"],
    "optimizer.args.stepsize": [1e-8, 1e3, 1],
    "optimizer.args.momentum": [0, 0.999999],
    "policy.type": ["MujocoPolicy", "MLPPolicy"],
    "policy.args.hidden_dims": [[], [1], [2**16], [64] * 64, [2**15, 2**15]],
    "policy.args.nonlin_type": ["tanh", "relu", "elu", "sigmoid", "identity"],
    "policy.args.connection_type": ["ff"],
    "policy.args.ac_noise_std": [0, 1e3],
    "policy.args.ac_bins": [
        "continuous:",
        "uniform:2",
        "uniform:1024",
        "custom:-1,1",
        "custom: -1 , 0.5e0 ,+1",
        "custom:" + ",".join(["0"] * 1024),
    ],
    "run.seed": [0, 2**63 - 1],
    "run.generations": [None, 1, 2**53],
    "run.timesteps": [None, 1, 2**53],
    "run.workers": [None, 1, 4096],
    "run.eval_episodes": [None, 0, 2**24],
    "run.noise_table_size": [1, 2**40],
    "run.tensorboard": [True, False],
    "atari.noop_max": [0, 10_000],
    "atari.frame_skip": [1, 100],
    "atari.screen_size": [20, 512],
    "atari.stack": [1, 64],
    "atari.terminal_on_life_loss": [True, False],
    "atari.repeat_action_probability": [0, 1, 0.25],
    "atari.reference_batch_size": [2, 9510],
}

ATARI_BASE = {"env_id": "ALE/Pong-v5", "policy": {"type": "AtariPolicy", "args": {"nonlin_type": "relu"}}}


def _base(path: str) -> Config:
    """A config in whose JSON layout ``path`` is a leaf."""
    if path.startswith("atari."):
        return config_from_dict(ATARI_BASE)
    if path == "optimizer.args.momentum":
        return config_from_dict({"optimizer": {"type": "sgd"}})
    return Config()


def _with(config: Config, path: str, value: object) -> dict:
    data = config.to_dict()
    node = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def _get(data: dict, path: str) -> object:
    for part in path.split("."):
        data = data[part]
    return data


def _all_settings() -> set[str]:
    """Every setting of the dataclasses, as a dotted path of the JSON layout (env_kwargs, an object of
    the environment's options, has its own tests below)."""
    top = {f.name for f in dataclasses.fields(Config) if f.name not in ("es", "optimizer", "policy", "run", "atari", "env_kwargs")}
    paths = set(top)
    paths |= {f"config.{f.name}" for f in dataclasses.fields(ESSettings)}
    paths |= {f"run.{f.name}" for f in dataclasses.fields(RunSettings)}
    paths |= {f"atari.{f.name}" for f in dataclasses.fields(AtariSettings)}
    for section, cls in (("optimizer", OptimizerSettings), ("policy", PolicySettings)):
        paths |= {f"{section}.type" if f.name == "type" else f"{section}.args.{f.name}" for f in dataclasses.fields(cls)}
    return paths


def test_every_setting_is_swept() -> None:
    """A new setting fails here until it has bad values and values at its bounds in the tables above."""
    leaves: set[str] = set()
    for path in ("env_id", "atari.stack", "optimizer.args.momentum"):
        leaves |= set(_leaf_paths(_base(path).to_dict()))
    assert leaves == _all_settings()
    assert set(BAD_VALUES) == leaves, f"missing: {sorted(leaves - set(BAD_VALUES))}, unknown: {sorted(set(BAD_VALUES) - leaves)}"
    assert set(GOOD_VALUES) == leaves, f"missing: {sorted(leaves - set(GOOD_VALUES))}, unknown: {sorted(set(GOOD_VALUES) - leaves)}"


def _bad_cases() -> list:
    return [pytest.param(path, value, id=f"{path}={value!r}"[:80]) for path, values in BAD_VALUES.items() for value in values]


def _good_cases() -> list:
    return [pytest.param(path, value, id=f"{path}={value!r}"[:80]) for path, values in GOOD_VALUES.items() for value in values]


def _assert_one_line_naming(error: ConfigError, path: str) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message and len(message) < 400, message
    assert path in message, message


@pytest.mark.parametrize(("path", "value"), _bad_cases())
def test_bad_value_is_one_line_naming_the_key(path: str, value: object) -> None:
    base = _base(path)
    with pytest.raises(ConfigError) as info:
        config_from_dict(_with(base, path, value))
    _assert_one_line_naming(info.value, path)
    # The same value through --set KEY=VALUE, whose values go through json.loads (NaN, Infinity too).
    with pytest.raises(ConfigError) as info:
        apply_overrides(base, [f"{path}={json.dumps(value)}"])
    _assert_one_line_naming(info.value, path)


@pytest.mark.parametrize(("path", "value"), _good_cases())
def test_values_at_the_bounds_are_accepted(path: str, value: object) -> None:
    base = _base(path)
    config = config_from_dict(_with(base, path, value))
    assert _get(config.to_dict(), path) == value
    assert apply_overrides(base, [f"{path}={json.dumps(value)}"]) == config


ENV_KWARGS_GOOD = [
    {},
    {"include_cfrc_ext_in_observation": False, "contact_force_range": [-1, 1.0], "xml_file": "x" * 200, "frame_skip": 5, "a": None},
    {f"o{i}": [0.5] * 64 for i in range(64)},
]
ENV_KWARGS_BAD = [
    ([["dims", 3]], "env_kwargs must be a JSON object"),
    ("dims=3", "env_kwargs must be a JSON object"),
    ({f"o{i}": 1 for i in range(65)}, "env_kwargs must have at most 64 options, got 65"),
    ({"a b": 1}, "env_kwargs option names must be Python identifiers, got 'a b'"),
    ({"1a": 1}, "option names must be Python identifiers"),
    ({"render_mode": "human"}, "env_kwargs.render_mode is gymnasium.make's own argument, not an option of the environment: esfast play"),
    ({"max_episode_steps": 10}, "env_kwargs.max_episode_steps is gymnasium.make's own argument, not an option of the environment: the"),
    ({"dims": {"x": 1}}, "env_kwargs.dims must be a number, a string of at most 200 characters, true, false, null or a list"),
    ({"dims": float("nan")}, "env_kwargs.dims must be"),
    ({"dims": [1, float("inf")]}, "env_kwargs.dims must be"),
    ({"dims": [[1]]}, "env_kwargs.dims must be"),
    ({"dims": [1] * 65}, "env_kwargs.dims must be"),
    ({"dims": "x" * 201}, "env_kwargs.dims must be"),
    ({"dims": "a\nb"}, "env_kwargs.dims must be"),
]


@pytest.mark.parametrize("options", ENV_KWARGS_GOOD, ids=range(len(ENV_KWARGS_GOOD)))
def test_env_kwargs_at_their_bounds_are_accepted_and_kept(options: dict) -> None:
    config = config_from_dict({"env_id": "Ant-v5", "env_kwargs": options})
    assert config.env_kwargs == options
    assert config_from_dict(config.to_dict()) == config
    assert ("env_kwargs" in config.to_dict()) == bool(options)  # left out when empty: older configs read the same


@pytest.mark.parametrize(("options", "message"), ENV_KWARGS_BAD, ids=[m for _, m in ENV_KWARGS_BAD])
def test_bad_env_kwargs_are_one_line_naming_the_option(options: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"env_id": "Ant-v5", "env_kwargs": options})
    assert message in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 400


def test_env_kwargs_are_not_options_of_the_atari_network() -> None:
    with pytest.raises(ConfigError, match=r"env_kwargs is not used with policy\.type AtariPolicy: its environment's settings are the"):
        config_from_dict({**ATARI_BASE, "env_kwargs": {"frameskip": 1}})


def test_set_adds_and_changes_options_of_the_environment_by_their_full_path() -> None:
    config = apply_overrides(Config(), ["env_kwargs.include_cfrc_ext_in_observation=false", "env_kwargs.xml_file=ant.xml"])
    assert config.env_kwargs == {"include_cfrc_ext_in_observation": False, "xml_file": "ant.xml"}
    assert apply_overrides(config, ["env_kwargs.xml_file=other.xml"]).env_kwargs["xml_file"] == "other.xml"
    with pytest.raises(ConfigError, match="unknown config key 'include_cfrc_ext_in_observation'"):
        apply_overrides(config, ["include_cfrc_ext_in_observation=true"])  # only by the full path
    with pytest.raises(ConfigError, match=r"env_kwargs\.render_mode is gymnasium\.make's own argument"):
        apply_overrides(config, ["env_kwargs.render_mode=human"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ac_noise_std=Infinity", "policy.args.ac_noise_std must be a number in [0, 1000], got inf"),
        ("stepsize=1e300", "optimizer.args.stepsize must be a positive number in [1e-8, 1000], got 1e+300"),
        ("noise_stdev=Infinity", "config.noise_stdev must be a positive number in [1e-8, 1000], got inf"),
        ("noise_stdev=1e39", "config.noise_stdev must be a positive number in [1e-8, 1000], got 1e+39"),
        ("noise_stdev=1e400", "config.noise_stdev must be a positive number in [1e-8, 1000], got inf"),
        ("l2coeff=-Infinity", "config.l2coeff must be a number in [0, 1000], got -inf"),
        ("l2coeff=NaN", "config.l2coeff must be a number in [0, 1000], got nan"),
        ("episodes_per_batch=1000000000000", "config.episodes_per_batch must be at most 2**24, got 1000000000000"),
        ("episodes_per_batch=0", "config.episodes_per_batch must be an integer >= 2 (two episodes per antithetic pair), got 0"),
        ("episodes_per_batch=3", "config.episodes_per_batch must be even: episodes come in antithetic pairs (θ + σε, θ − σε), got 3"),
        (
            "timesteps_per_batch=100000000",
            "config.timesteps_per_batch must be at most 2**24 (a generation has at most 2**23 pairs, which take at least that many"
            " steps), got 100000000",
        ),
        (
            "noise_table_size=100000000000000",
            "run.noise_table_size must be at most 2**40 samples (the noise table's limit), got 100000000000000",
        ),
        ("env_id=", "env_id must be a non-empty string without whitespace (a gymnasium id), got ''"),
        ("env_id=   ", "env_id must be a non-empty string without whitespace (a gymnasium id), got '   '"),
        ("workers=5000", "run.workers must be at most 4096 (evaluator processes a worker host may announce), got 5000"),
        ("workers=0", "run.workers must be an integer >= 1 or null, got 0"),
        ("seed=" + "1" * 5000, "run.seed must be an integer in [0, 2**63), got '111111"),
        ("hidden_dims=" + "[" * 10_000 + "]" * 10_000, "policy.args.hidden_dims must be a list of positive integers"),
    ],
)
def test_issue_cases(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_paper_configs_timesteps_per_batch_is_used_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # The paper's configs set it (PAPER_DATA: 100000); esfast uses it (training.next_round_pairs), so nothing is said but the env id.
    with caplog.at_level(logging.WARNING):
        config = config_from_dict(PAPER_DATA)
    assert config.es.timesteps_per_batch == 100_000
    assert [record.getMessage() for record in caplog.records] == [
        "environment Humanoid-v1 is from the 2017 gym; using Humanoid-v5, the current version of the same task"
    ]


def test_huge_numbers_in_a_config_file_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text('{"run": {"seed": ' + "9" * 5000 + "}}")
    with pytest.raises(ConfigError, match="is not valid JSON") as info:
        load_config(path)
    assert "\n" not in str(info.value)
    path.write_text('{"config": {"noise_stdev": Infinity}}')
    with pytest.raises(ConfigError, match=r"config\.noise_stdev must be a positive number"):
        load_config(path)


def test_malformed_sections_are_config_errors() -> None:
    for data in (
        {"policy": {"args": [1, 2]}},
        {"policy": {"args": "x"}},
        {"optimizer": {"args": None}},
        {"run": 3},
        {"atari": [], **ATARI_BASE},
        {"env_id": 123},
        {"env_id": ["Humanoid-v1"]},
    ):
        with pytest.raises(ConfigError) as info:
            config_from_dict(data)
        assert "\n" not in str(info.value)


def test_momentum_can_be_set_with_the_optimizer_type() -> None:
    config = apply_overrides(Config(), ["optimizer.type=sgd", "momentum=0.5"])
    assert (config.optimizer.type, config.optimizer.momentum) == ("sgd", 0.5)
    assert config.to_dict()["optimizer"]["args"] == {"stepsize": 0.01, "momentum": 0.5}
    assert "momentum" not in Config().to_dict()["optimizer"]["args"]  # Adam configs keep the paper's layout
