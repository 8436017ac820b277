"""Run configuration: the paper code's JSON layout, plus the settings it left to the command line.

A config is a JSON object with the sections of the paper's experiment files, so those files load
unchanged, and one more section, ``run``, for what esfast adds::

    {
      "env_id": "HalfCheetah-v5",
      "env_module": null,               # module imported before gymnasium.make (custom envs)
      "exp_prefix": "halfcheetah",
      "config":    {ES hyperparameters, the paper code's names},
      "optimizer": {"type": "adam" | "sgd", "args": {"stepsize": ..., "momentum": ...}},
      "policy":    {"type": "MujocoPolicy", "args": {"hidden_dims": [...], "nonlin_type": ..., ...}},
      "run":       {"seed": ..., "generations": ..., "timesteps": ..., "noise_table_size": ..., "workers": ...},
      "atari":     {"noop_max": ..., "frame_skip": ..., ...}   # only with policy type AtariPolicy
    }

Every key is optional; missing keys take the defaults below. Unknown keys are errors that name
the closest known key. Old gym MuJoCo ids (``Humanoid-v1``) map to the current gymnasium
version of the same task.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RETURN_PROC_MODES = ("centered_rank", "normalized", "raw")
OPTIMIZERS = ("adam", "sgd")
NONLINEARITIES = ("tanh", "relu", "elu", "sigmoid", "identity")
POLICY_TYPES = ("MujocoPolicy", "MLPPolicy", "AtariPolicy")
ATARI_POLICY = "AtariPolicy"
CURRENT_MUJOCO_VERSION = "v5"
MUJOCO_TASKS = (
    "Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
    "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d",
)


class ConfigError(ValueError):
    """A config that cannot be used; the message says what to change."""


# Smallest square input of the Atari network: conv 8x8 stride 4 must leave at least 4x4 for conv 4x4 stride 2.
MIN_SCREEN_SIZE = 20


@dataclass(frozen=True)
class ESSettings:
    """ES hyperparameters under the paper code's names (section ``config``)."""

    noise_stdev: float = 0.02
    episodes_per_batch: int = 40
    timesteps_per_batch: int = 0
    calc_obstat_prob: float = 0.01
    eval_prob: float = 0.003
    l2coeff: float = 0.005
    snapshot_freq: int = 20
    return_proc_mode: str = "centered_rank"
    episode_cutoff_mode: str | int = "env_default"


@dataclass(frozen=True)
class OptimizerSettings:
    """Section ``optimizer``: ``type`` and its ``args``."""

    type: str = "adam"
    stepsize: float = 0.01
    momentum: float = 0.9


@dataclass(frozen=True)
class PolicySettings:
    """Section ``policy``: ``type`` and its ``args``."""

    type: str = "MujocoPolicy"
    hidden_dims: tuple[int, ...] = (64, 64)
    nonlin_type: str = "tanh"
    connection_type: str = "ff"
    ac_noise_std: float = 0.01
    ac_bins: str = "continuous:"


@dataclass(frozen=True)
class RunSettings:
    """Section ``run``: what the paper's code took from its launcher.

    ``generations`` and ``timesteps`` are budgets (the run stops at the first reached; neither
    means run until interrupted); ``workers`` is the number of local evaluator processes (None:
    one per core); ``eval_episodes`` overrides the number of evaluation episodes per generation
    that ``eval_prob`` implies.
    """

    seed: int = 0
    generations: int | None = None
    timesteps: int | None = None
    noise_table_size: int = 25_000_000
    workers: int | None = None
    eval_episodes: int | None = None


@dataclass(frozen=True)
class AtariSettings:
    """Section ``atari``: ALE preprocessing and the reference batch of virtual batch normalization.

    The defaults are the standard preprocessing (Machado et al. 2018 and the DQN/A3C papers): up
    to 30 no-op starts, an action repeated on 4 frames with the max over the last two, 84x84
    grayscale, a stack of the last 4 observations, the episode ending on game over.

    Args:
        noop_max: at most this many no-op actions after a reset (a uniform draw in [1, noop_max]); 0: none.
        frame_skip: emulator frames per agent step (the action is repeated on each).
        screen_size: side of the square grayscale observation, in pixels.
        stack: number of consecutive observations stacked along the first axis.
        terminal_on_life_loss: end the episode when a life is lost (False: on game over only).
        repeat_action_probability: ALE's sticky actions (0: deterministic emulator; v5's default is 0.25).
        reference_batch_size: observations in the reference batch of virtual batch normalization.

    Raises:
        ConfigError: a value of the wrong type or out of range (one line naming ``atari.<name>``).
    """

    noop_max: int = 30
    frame_skip: int = 4
    screen_size: int = 84
    stack: int = 4
    terminal_on_life_loss: bool = False
    repeat_action_probability: float = 0.0
    reference_batch_size: int = 128

    def __post_init__(self) -> None:
        checks = (
            ("noop_max", _is_int(self.noop_max) and self.noop_max >= 0, "an integer >= 0"),
            ("frame_skip", _is_int(self.frame_skip) and self.frame_skip >= 1, "an integer >= 1"),
            ("screen_size", _is_int(self.screen_size) and self.screen_size >= MIN_SCREEN_SIZE,
             f"an integer >= {MIN_SCREEN_SIZE} (the network's smallest input)"),
            ("stack", _is_int(self.stack) and self.stack >= 1, "an integer >= 1"),
            ("terminal_on_life_loss", isinstance(self.terminal_on_life_loss, bool), "true or false"),
            ("repeat_action_probability", _is_number(self.repeat_action_probability) and 0 <= self.repeat_action_probability <= 1,
             "a number in [0, 1]"),
            ("reference_batch_size", _is_int(self.reference_batch_size) and self.reference_batch_size >= 2,
             "an integer >= 2 (statistics need at least two observations)"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"atari.{name} must be {expected}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Config:
    """A whole run configuration."""

    env_id: str = "HalfCheetah-v5"
    env_module: str | None = None
    exp_prefix: str = "esfast"
    es: ESSettings = field(default_factory=ESSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    run: RunSettings = field(default_factory=RunSettings)
    atari: AtariSettings | None = None

    @property
    def pop_pairs(self) -> int:
        """Antithetic pairs per generation: half of ``episodes_per_batch``."""
        return self.es.episodes_per_batch // 2

    def eval_episodes(self) -> int:
        """Evaluation episodes of the unperturbed policy per generation."""
        if self.run.eval_episodes is not None:
            return self.run.eval_episodes
        if self.es.eval_prob <= 0:
            return 0
        return max(1, round(self.es.eval_prob * self.es.episodes_per_batch))

    def timestep_limit(self) -> tuple[int | None, float | None, float | None]:
        """(limit, raise threshold, raise ratio) from ``episode_cutoff_mode``.

        ``env_default``: no limit beyond the environment's own; an int: a fixed limit;
        ``adaptive:L,T,R``: start at L steps and multiply by R whenever more than a fraction T of
        a generation's episodes reach the limit (the paper's adaptive cutoff).
        """
        mode = self.es.episode_cutoff_mode
        if isinstance(mode, int):
            return mode, None, None
        if mode == "env_default":
            return None, None, None
        limit, threshold, ratio = mode.split(":", 1)[1].split(",")
        return int(limit), float(threshold), float(ratio)

    def to_dict(self) -> dict[str, Any]:
        """The config in its JSON layout (what ``config.json`` of a run holds)."""
        policy = dataclasses.asdict(self.policy)
        policy_type = policy.pop("type")
        policy["hidden_dims"] = list(policy["hidden_dims"])
        optimizer = dataclasses.asdict(self.optimizer)
        optimizer_type = optimizer.pop("type")
        if optimizer_type != "sgd":
            optimizer.pop("momentum")
        data = {
            "env_id": self.env_id,
            "env_module": self.env_module,
            "exp_prefix": self.exp_prefix,
            "config": dataclasses.asdict(self.es),
            "optimizer": {"type": optimizer_type, "args": optimizer},
            "policy": {"type": policy_type, "args": policy},
            "run": dataclasses.asdict(self.run),
        }
        if self.atari is not None:
            data["atari"] = dataclasses.asdict(self.atari)
        return data


_SECTIONS: dict[str, type] = {"config": ESSettings, "run": RunSettings}
_TOP_KEYS = ("env_id", "env_module", "exp_prefix", "config", "optimizer", "policy", "run", "atari")


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown(key: str, where: str, known: list[str] | tuple[str, ...]) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown config key '{where}{key}'{hint}")


def _check_keys(data: dict[str, Any], known: list[str] | tuple[str, ...], where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where.rstrip('.')}' must be a JSON object")
    for key in data:
        if key not in known:
            raise _unknown(key, where, known)


def map_env_id(env_id: str) -> str:
    """Maps an old gym MuJoCo id (``Humanoid-v1``) to the current gymnasium task, saying so."""
    match = re.fullmatch(r"([A-Za-z0-9]+)-v([0-4])", env_id)
    if match and match.group(1) in MUJOCO_TASKS:
        new = f"{match.group(1)}-{CURRENT_MUJOCO_VERSION}"
        logger.warning("environment %s is from the 2017 gym; using %s, the current version of the same task", env_id, new)
        return new
    return env_id


def config_from_dict(data: dict[str, Any]) -> Config:
    """Builds and validates a :class:`Config` from the JSON layout.

    Raises:
        ConfigError: unknown keys (with the closest known one), wrong types or values.
    """
    _check_keys(data, _TOP_KEYS, "")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        part = data.get(name, {})
        _check_keys(part, _names(cls), f"{name}.")
        sections[name] = cls(**part)
    optimizer = data.get("optimizer", {})
    _check_keys(optimizer, ("type", "args"), "optimizer.")
    optimizer_args = optimizer.get("args", {})
    _check_keys(optimizer_args, ("stepsize", "momentum"), "optimizer.args.")
    policy = data.get("policy", {})
    _check_keys(policy, ("type", "args"), "policy.")
    policy_args = dict(policy.get("args", {}))
    _check_keys(policy_args, [n for n in _names(PolicySettings) if n != "type"], "policy.args.")
    if "hidden_dims" in policy_args and isinstance(policy_args["hidden_dims"], list):
        policy_args["hidden_dims"] = tuple(policy_args["hidden_dims"])
    policy_type = policy.get("type", PolicySettings.type)
    atari = None
    if "atari" in data:
        if policy_type != ATARI_POLICY:
            raise ConfigError(f"config section 'atari' needs policy.type '{ATARI_POLICY}', got {policy_type!r}")
        _check_keys(data["atari"], _names(AtariSettings), "atari.")
        atari = AtariSettings(**data["atari"])
    elif policy_type == ATARI_POLICY:
        atari = AtariSettings()
    config = Config(
        env_id=map_env_id(data.get("env_id", Config.env_id)),
        env_module=data.get("env_module"),
        exp_prefix=data.get("exp_prefix", Config.exp_prefix),
        es=sections["config"],
        optimizer=OptimizerSettings(type=optimizer.get("type", "adam"), **optimizer_args),
        policy=PolicySettings(type=policy_type, **policy_args),
        run=sections["run"],
        atari=atari,
    )
    validate(config)
    return config


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(config: Config) -> None:
    """Checks types and ranges of every setting.

    Raises:
        ConfigError: naming the setting and what it must be.
    """
    es, opt, pol, run = config.es, config.optimizer, config.policy, config.run
    _require(isinstance(config.env_id, str) and bool(config.env_id), "env_id must be a non-empty string")
    _require(config.env_module is None or isinstance(config.env_module, str), "env_module must be a module name or null")
    _require(_is_number(es.noise_stdev) and es.noise_stdev > 0, f"config.noise_stdev must be a positive number, got {es.noise_stdev!r}")
    _require(_is_int(es.episodes_per_batch) and es.episodes_per_batch >= 2,
             f"config.episodes_per_batch must be an integer >= 2 (two episodes per antithetic pair), got {es.episodes_per_batch!r}")
    _require(_is_int(es.timesteps_per_batch) and es.timesteps_per_batch >= 0, "config.timesteps_per_batch must be an integer >= 0")
    for name in ("calc_obstat_prob", "eval_prob"):
        value = getattr(es, name)
        _require(_is_number(value) and 0 <= value <= 1, f"config.{name} must be a number in [0, 1], got {value!r}")
    _require(_is_number(es.l2coeff) and es.l2coeff >= 0, f"config.l2coeff must be a number >= 0, got {es.l2coeff!r}")
    _require(_is_int(es.snapshot_freq) and es.snapshot_freq >= 0, "config.snapshot_freq must be an integer >= 0 (0: only latest.npz)")
    _require(es.return_proc_mode in RETURN_PROC_MODES,
             f"config.return_proc_mode must be one of {', '.join(RETURN_PROC_MODES)}, got {es.return_proc_mode!r}")
    mode = es.episode_cutoff_mode
    ok = (_is_int(mode) and mode > 0) or mode == "env_default" or (
        isinstance(mode, str) and re.fullmatch(r"adaptive:\d+,[0-9.]+,[0-9.]+", mode) is not None)
    _require(ok, f"config.episode_cutoff_mode must be 'env_default', a positive integer or 'adaptive:LIMIT,THRESHOLD,RATIO', got {mode!r}")
    _require(opt.type in OPTIMIZERS, f"optimizer.type must be one of {', '.join(OPTIMIZERS)}, got {opt.type!r}")
    _require(_is_number(opt.stepsize) and opt.stepsize > 0, f"optimizer.args.stepsize must be a positive number, got {opt.stepsize!r}")
    _require(_is_number(opt.momentum) and 0 <= opt.momentum < 1, "optimizer.args.momentum must be in [0, 1)")
    _require(pol.type in POLICY_TYPES, f"policy.type must be one of {', '.join(POLICY_TYPES)}, got {pol.type!r}")
    _require(isinstance(pol.hidden_dims, tuple) and all(_is_int(h) and h > 0 for h in pol.hidden_dims),
             f"policy.args.hidden_dims must be a list of positive integers, got {pol.hidden_dims!r}")
    _require(pol.nonlin_type in NONLINEARITIES, f"policy.args.nonlin_type must be one of {', '.join(NONLINEARITIES)}, got {pol.nonlin_type!r}")
    _require(pol.type != ATARI_POLICY or pol.nonlin_type == "relu",
             f"policy.args.nonlin_type must be 'relu' for {ATARI_POLICY} (the paper's network), got {pol.nonlin_type!r}")
    _require(pol.connection_type == "ff", f"policy.args.connection_type must be 'ff', got {pol.connection_type!r}")
    _require(_is_number(pol.ac_noise_std) and pol.ac_noise_std >= 0, "policy.args.ac_noise_std must be a number >= 0")
    _require(isinstance(pol.ac_bins, str) and re.fullmatch(r"continuous:|uniform:\d+|custom:[-+0-9.eE,\s]+", pol.ac_bins) is not None,
             f"policy.args.ac_bins must be 'continuous:', 'uniform:N' or 'custom:v1,v2,...', got {pol.ac_bins!r}")
    _require(_is_int(run.seed) and 0 <= run.seed < 2**63, f"run.seed must be an integer in [0, 2**63), got {run.seed!r}")
    for name in ("generations", "timesteps", "workers", "eval_episodes"):
        value = getattr(run, name)
        low = 0 if name == "eval_episodes" else 1
        _require(value is None or (_is_int(value) and value >= low), f"run.{name} must be an integer >= {low} or null, got {value!r}")
    _require(_is_int(run.noise_table_size) and run.noise_table_size >= 1, "run.noise_table_size must be a positive integer")


def load_config(path: str | Path) -> Config:
    """Reads a JSON config file.

    Raises:
        ConfigError: missing file, malformed JSON (with line and column) or a bad setting.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"config {path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a JSON object")
    return config_from_dict(data)


def _leaf_paths(data: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        if isinstance(value, dict):
            paths.extend(_leaf_paths(value, f"{prefix}{key}."))
        else:
            paths.append(prefix + key)
    return paths


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Applies ``key=value`` overrides (``--set``); values are JSON, or plain strings.

    A key is a dotted path (``config.noise_stdev``, ``policy.args.hidden_dims``) or its last
    part alone when that is unique (``noise_stdev``).

    Raises:
        ConfigError: malformed override, unknown or ambiguous key, or a bad resulting value.
    """
    data = config.to_dict()
    leaves = _leaf_paths(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        matches = [p for p in leaves if p == key] or [p for p in leaves if p.rsplit(".", 1)[-1] == key]
        if not matches:
            close = difflib.get_close_matches(key, leaves + [p.rsplit(".", 1)[-1] for p in leaves], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        if len(matches) > 1:
            raise ConfigError(f"config key '{key}' is ambiguous: {', '.join(matches)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        *parents, last = matches[0].split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return config_from_dict(data)
