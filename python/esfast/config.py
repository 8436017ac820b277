"""Run configuration: the paper code's JSON layout, plus the settings it left to the command line.

A config is a JSON object with the sections of the paper's experiment files, so those files load
unchanged, and one more section, ``run``, for what esfast adds::

    {
      "env_id": "HalfCheetah-v5",
      "env_module": null,               # module imported before gymnasium.make (custom envs)
      "env_kwargs": {},                 # keyword arguments of gymnasium.make (the environment's options)
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

Every value is checked for its type and range before anything starts (the bounds are the
``MAX_*`` constants below; docs/configs.md says why each is where it is), so a bad value ends in
one line naming the key, never in a hang, an overflow or a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from esfast.errors import ConfigError

logger = logging.getLogger(__name__)

RETURN_PROC_MODES = ("centered_rank", "normalized", "raw")
OPTIMIZERS = ("adam", "sgd")
NONLINEARITIES = ("tanh", "relu", "elu", "sigmoid", "identity")
POLICY_TYPES = ("MujocoPolicy", "MLPPolicy", "AtariPolicy")
ATARI_POLICY = "AtariPolicy"
CURRENT_MUJOCO_VERSION = "v5"
MUJOCO_TASKS = (
    "Ant",
    "HalfCheetah",
    "Hopper",
    "Humanoid",
    "HumanoidStandup",
    "InvertedDoublePendulum",
    "InvertedPendulum",
    "Pusher",
    "Reacher",
    "Swimmer",
    "Walker2d",
)


# Smallest square input of the Atari network: conv 8x8 stride 4 must leave at least 4x4 for conv 4x4 stride 2.
MIN_SCREEN_SIZE = 20
DEFAULT_CONFIG = "halfcheetah"  # the shipped config esfast train and esfast.train use without one

# Bounds of the settings; docs/configs.md gives each one's reason. Every value is checked against
# them before a process starts or a byte of the noise table is generated.
MAX_COUNT = 2**53  # generations, timesteps, episode lengths, counts on the wire: exact as doubles
MAX_EPISODES_PER_BATCH = 2**24  # 2**23 antithetic pairs: tasks, offsets and returns of a generation stay in memory
MAX_PAIRS_PER_GENERATION = MAX_EPISODES_PER_BATCH // 2  # also when timesteps_per_batch adds rounds of pairs
MAX_TIMESTEPS_PER_BATCH = MAX_EPISODES_PER_BATCH  # episodes take a step at least: reached within MAX_PAIRS_PER_GENERATION
MAX_NOISE_TABLE_SIZE = 2**40  # samples; the noise table binding's limit
MAX_WORKERS = 4096  # evaluator processes of a host, as the wire protocol allows (MAX_PROCS_PER_HOST)
MAX_EVAL_EPISODES = MAX_EPISODES_PER_BATCH
MAX_SEED = 2**63  # exclusive
MIN_SCALE, MAX_SCALE = 1e-8, 1e3  # noise_stdev and stepsize
MAX_COEFFICIENT = 1e3  # l2coeff, ac_noise_std and return_shift
MAX_HIDDEN_WIDTH = 2**16
MAX_HIDDEN_LAYERS = 64
MAX_HIDDEN_WEIGHTS = 2**30  # weights between consecutive hidden layers (4 GB of float32)
MAX_BINS = 1024  # action bins per action dimension
MAX_LIMIT_RATIO = 1e3  # adaptive episode cutoff: growth factor
MAX_NOOP = 10_000
MAX_FRAME_SKIP = 100
MAX_SCREEN_SIZE = 512
MAX_STACK = 64
MAX_REFERENCE_BATCH_BYTES = 2**28  # the VBN batch goes to every worker host and into every checkpoint
MAX_ENV_KWARGS = 64  # options of env_kwargs
MAX_ENV_KWARG_ITEMS = 64  # values in a list of env_kwargs
MAX_ENV_KWARG_CHARACTERS = 200  # of a string of env_kwargs
# gymnasium.make's own arguments, which are not the environment's options: why each is not one of env_kwargs
RESERVED_ENV_KWARGS = {
    "render_mode": "esfast play sets it (--render, --video)",
    "max_episode_steps": "the step limit is config.episode_cutoff_mode",
    "autoreset": "esfast's rollouts reset every episode themselves",
    "apply_api_compatibility": "esfast's rollouts need gymnasium's own API",
    "disable_env_checker": "esfast keeps gymnasium's default",
}

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"  # a plain decimal (no nan, inf, sign or underscores)
_CUSTOM_BIN = r"\s*[-+]?" + _NUMBER + r"\s*"


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
    return_shift: float = 0.0
    elite_fraction: float = 1.0


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
    that ``eval_prob`` implies; ``tensorboard`` writes TensorBoard event files besides the log
    (the optional extra ``esfast[tensorboard]``).
    """

    seed: int = 0
    generations: int | None = None
    timesteps: int | None = None
    noise_table_size: int = 25_000_000
    workers: int | None = None
    eval_episodes: int | None = None
    tensorboard: bool = False


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
        checks = (  # (name, at least the low bound, what it must be, high bound)
            ("noop_max", _is_int(self.noop_max) and self.noop_max >= 0, "an integer >= 0", MAX_NOOP),
            ("frame_skip", _is_int(self.frame_skip) and self.frame_skip >= 1, "an integer >= 1", MAX_FRAME_SKIP),
            (
                "screen_size",
                _is_int(self.screen_size) and self.screen_size >= MIN_SCREEN_SIZE,
                f"an integer >= {MIN_SCREEN_SIZE} (the network's smallest input)",
                MAX_SCREEN_SIZE,
            ),
            ("stack", _is_int(self.stack) and self.stack >= 1, "an integer >= 1", MAX_STACK),
            ("terminal_on_life_loss", isinstance(self.terminal_on_life_loss, bool), "true or false", None),
            ("repeat_action_probability", _number_in(self.repeat_action_probability, 0, 1), "a number in [0, 1]", None),
            (
                "reference_batch_size",
                _is_int(self.reference_batch_size) and self.reference_batch_size >= 2,
                "an integer >= 2 (statistics need at least two observations)",
                None,
            ),  # high: the batch's bytes, below
        )
        for name, ok, expected, high in checks:
            value = getattr(self, name)
            if not ok:
                raise ConfigError(f"atari.{name} must be {expected}, got {_show(value)}")
            if high is not None and value > high:
                raise ConfigError(f"atari.{name} must be at most {high}, got {_show(value)}")
        size = self.reference_batch_size * self.stack * self.screen_size**2
        if size > MAX_REFERENCE_BATCH_BYTES:
            raise ConfigError(
                f"atari.reference_batch_size x stack x screen_size**2 must be at most {_bound(MAX_REFERENCE_BATCH_BYTES)} bytes"
                f" (the batch goes to every worker host and into every checkpoint), got {self.reference_batch_size} x {self.stack}"
                f" x {self.screen_size}**2 = {size}"
            )


@dataclass(frozen=True)
class Config:
    """A whole run configuration."""

    env_id: str = "HalfCheetah-v5"
    env_module: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
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
        if self.env_kwargs:  # only when set, so that the configs of runs from before it existed read the same
            data["env_kwargs"] = dict(self.env_kwargs)
        if self.atari is not None:
            data["atari"] = dataclasses.asdict(self.atari)
        return data


_SECTIONS: dict[str, type] = {"config": ESSettings, "run": RunSettings}
_TOP_KEYS = ("env_id", "env_module", "env_kwargs", "exp_prefix", "config", "optimizer", "policy", "run", "atari")


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
        ConfigError: unknown keys (with the closest known one), wrong types or values (one line
            naming the key).
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
    policy_args = policy.get("args", {})
    _check_keys(policy_args, [n for n in _names(PolicySettings) if n != "type"], "policy.args.")
    policy_args = dict(policy_args)
    if "hidden_dims" in policy_args and isinstance(policy_args["hidden_dims"], list):
        policy_args["hidden_dims"] = tuple(policy_args["hidden_dims"])
    policy_type = policy.get("type", PolicySettings.type)
    atari = None
    if "atari" in data:
        if policy_type != ATARI_POLICY:
            raise ConfigError(f"config section 'atari' needs policy.type '{ATARI_POLICY}', got {_show(policy_type)}")
        _check_keys(data["atari"], _names(AtariSettings), "atari.")
        atari = AtariSettings(**data["atari"])
    elif policy_type == ATARI_POLICY:
        atari = AtariSettings()
    env_id = data.get("env_id", Config.env_id)
    config = Config(
        env_id=map_env_id(env_id) if isinstance(env_id, str) else env_id,
        env_module=data.get("env_module"),
        env_kwargs=data.get("env_kwargs", {}),
        exp_prefix=data.get("exp_prefix", Config.exp_prefix),
        es=sections["config"],
        optimizer=OptimizerSettings(type=optimizer.get("type", "adam"), **optimizer_args),
        policy=PolicySettings(type=policy_type, **policy_args),
        run=sections["run"],
        atari=atari,
    )
    validate(config)
    return config


def _check_env_kwargs(value: object) -> None:
    """Requires ``env_kwargs`` to be an object of at most :data:`MAX_ENV_KWARGS` options named like
    Python arguments (none of :data:`RESERVED_ENV_KWARGS`), each a JSON scalar or a short list of
    them, so that the options travel to every worker host and into every checkpoint as they are.

    Raises:
        ConfigError: one line naming the option.
    """
    if not isinstance(value, dict):
        raise ConfigError(f"env_kwargs must be a JSON object of gymnasium.make's keyword arguments, got {_show(value)}")
    if len(value) > MAX_ENV_KWARGS:
        raise ConfigError(f"env_kwargs must have at most {MAX_ENV_KWARGS} options, got {len(value)}")
    for name, option in value.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise ConfigError(f"env_kwargs option names must be Python identifiers, got {_show(name)}")
        if name in RESERVED_ENV_KWARGS:
            why = RESERVED_ENV_KWARGS[name]
            raise ConfigError(f"env_kwargs.{name} is gymnasium.make's own argument, not an option of the environment: {why}")
        items = option if isinstance(option, list) else [option]
        if len(items) > MAX_ENV_KWARG_ITEMS or not all(_is_env_scalar(item) for item in items):
            raise ConfigError(
                f"env_kwargs.{name} must be a number, a string of at most {MAX_ENV_KWARG_CHARACTERS} characters, true, false, null"
                f" or a list of at most {MAX_ENV_KWARG_ITEMS} of them, got {_show(option)}"
            )


def _is_env_scalar(value: object) -> bool:
    if value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_ENV_KWARG_CHARACTERS and value.isprintable()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_in(value: object, low: int, high: int) -> bool:
    """An int (not a bool) in [low, high]."""
    return _is_int(value) and low <= value <= high  # type: ignore[operator]


def _number_in(value: object, low: float, high: float) -> bool:
    """An int or float (not a bool) in [low, high]: NaN and the infinities never are, for finite bounds."""
    return _is_number(value) and low <= value <= high  # type: ignore[operator]


def _bound(value: float) -> str:
    """A bound as messages show it: ``2**24`` for the large powers of two, else the number."""
    if isinstance(value, int) and value > 2**16 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return re.sub(r"e([-+])0*([0-9])", r"e\1\2", f"{value:g}") if isinstance(value, float) else str(value)


def _show(value: object, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(value: object, name: str, low: int, high: int, *, nullable: bool = False, note: str = "", why: str = "") -> None:
    """Requires an integer in [low, high] (or null if ``nullable``); ``note`` explains the low end, ``why`` the high one."""
    if nullable and value is None:
        return
    _require(
        _is_int(value) and value >= low,  # type: ignore[operator]
        f"{name} must be an integer >= {low}{note}{' or null' if nullable else ''}, got {_show(value)}",
    )
    _require(value <= high, f"{name} must be at most {_bound(high)}{why}, got {_show(value)}")  # type: ignore[operator]


def _check_cutoff_mode(mode: object) -> None:
    name = "config.episode_cutoff_mode"
    if _is_int(mode):
        _count(mode, name, 1, MAX_COUNT, note=" (steps)")
        return
    if mode == "env_default":
        return
    match = re.fullmatch(rf"adaptive:([0-9]+),({_NUMBER}),({_NUMBER})", mode) if isinstance(mode, str) else None
    _require(match is not None, f"{name} must be 'env_default', a positive integer or 'adaptive:LIMIT,THRESHOLD,RATIO', got {_show(mode)}")
    assert match is not None
    limit, threshold, ratio = int(match.group(1)), float(match.group(2)), float(match.group(3))
    _require(
        1 <= limit <= MAX_COUNT and 0 <= threshold <= 1 and 1 < ratio <= MAX_LIMIT_RATIO,
        f"{name} 'adaptive:LIMIT,THRESHOLD,RATIO' needs LIMIT in [1, {_bound(MAX_COUNT)}], THRESHOLD in [0, 1] and"
        f" RATIO in (1, {_bound(MAX_LIMIT_RATIO)}] (the factor the limit grows by), got {_show(mode)}",
    )


def _check_hidden_dims(dims: object) -> None:
    name = "policy.args.hidden_dims"
    _require(
        isinstance(dims, tuple) and len(dims) <= MAX_HIDDEN_LAYERS and all(_int_in(h, 1, MAX_HIDDEN_WIDTH) for h in dims),
        f"{name} must be a list of positive integers, each <= {MAX_HIDDEN_WIDTH}, at most {MAX_HIDDEN_LAYERS} of them,"
        f" got {_show(list(dims) if isinstance(dims, tuple) else dims)}",
    )
    assert isinstance(dims, tuple)
    weights = sum(a * b for a, b in itertools.pairwise(dims))
    _require(
        weights <= MAX_HIDDEN_WEIGHTS,
        f"{name} gives {weights} weights between hidden layers, more than {_bound(MAX_HIDDEN_WEIGHTS)}, got {_show(list(dims))}",
    )


def _check_ac_bins(ac_bins: object) -> None:
    ok = False
    if isinstance(ac_bins, str) and ":" in ac_bins:
        kind, _, arg = ac_bins.partition(":")
        if kind == "continuous":
            ok = arg == ""
        elif kind == "uniform":
            ok = re.fullmatch(r"[0-9]{1,9}", arg) is not None and 2 <= int(arg) <= MAX_BINS
        elif kind == "custom":
            values = arg.split(",")
            ok = 2 <= len(values) <= MAX_BINS and all(re.fullmatch(_CUSTOM_BIN, v) is not None and -1 <= float(v) <= 1 for v in values)
    _require(
        ok,
        f"policy.args.ac_bins must be 'continuous:', 'uniform:N' (N in [2, {MAX_BINS}]) or 'custom:v1,v2,...'"
        f" (2 to {MAX_BINS} numbers in [-1, 1]), got {_show(ac_bins)}",
    )


def _is_name(value: object) -> bool:
    """A non-empty string of printable characters without spaces."""
    return isinstance(value, str) and value != "" and value.isprintable() and not any(c.isspace() for c in value)


def validate(config: Config) -> None:
    """Checks the type and range of every setting (docs/configs.md lists the bounds).

    Raises:
        ConfigError: one line naming the setting, what it must be and what it is.
    """
    es, opt, pol, run = config.es, config.optimizer, config.policy, config.run
    _require(_is_name(config.env_id), f"env_id must be a non-empty string without whitespace (a gymnasium id), got {_show(config.env_id)}")
    _require(
        config.env_module is None
        or (isinstance(config.env_module, str) and all(part.isidentifier() for part in config.env_module.split("."))),
        f"env_module must be a module name (such as my_envs or package.envs) or null, got {_show(config.env_module)}",
    )
    _check_env_kwargs(config.env_kwargs)
    _require(
        not (config.env_kwargs and config.atari is not None),
        f"env_kwargs is not used with policy.type {ATARI_POLICY}: its environment's settings are the config's atari section",
    )
    _require(
        _is_name(config.exp_prefix) and len(config.exp_prefix) <= 200 and not any(c in config.exp_prefix for c in "/\\"),
        f"exp_prefix must be a name of 1 to 200 characters without spaces or path separators, got {_show(config.exp_prefix)}",
    )
    _require(
        _number_in(es.noise_stdev, MIN_SCALE, MAX_SCALE),
        f"config.noise_stdev must be a positive number in [{_bound(MIN_SCALE)}, {_bound(MAX_SCALE)}], got {_show(es.noise_stdev)}",
    )
    _count(es.episodes_per_batch, "config.episodes_per_batch", 2, MAX_EPISODES_PER_BATCH, note=" (two episodes per antithetic pair)")
    _require(
        es.episodes_per_batch % 2 == 0,
        f"config.episodes_per_batch must be even: episodes come in antithetic pairs (θ + σε, θ − σε), got {es.episodes_per_batch}",
    )
    _count(
        es.timesteps_per_batch,
        "config.timesteps_per_batch",
        0,
        MAX_TIMESTEPS_PER_BATCH,
        note=" (0: episodes_per_batch alone sizes a generation)",
        why=f" (a generation has at most {_bound(MAX_PAIRS_PER_GENERATION)} pairs, which take at least that many steps)",
    )
    for name in ("calc_obstat_prob", "eval_prob"):
        value = getattr(es, name)
        _require(_number_in(value, 0, 1), f"config.{name} must be a number in [0, 1], got {_show(value)}")
    _require(
        _number_in(es.l2coeff, 0, MAX_COEFFICIENT),
        f"config.l2coeff must be a number in [0, {_bound(MAX_COEFFICIENT)}], got {_show(es.l2coeff)}",
    )
    _require(
        _number_in(es.return_shift, 0, MAX_COEFFICIENT),
        f"config.return_shift must be a number in [0, {_bound(MAX_COEFFICIENT)}], got {_show(es.return_shift)}",
    )
    _require(
        _number_in(es.elite_fraction, 0, 1) and es.elite_fraction > 0,
        f"config.elite_fraction must be a number in (0, 1], got {_show(es.elite_fraction)}",
    )
    _count(es.snapshot_freq, "config.snapshot_freq", 0, MAX_COUNT, note=" (0: only latest.npz)")
    _require(
        isinstance(es.return_proc_mode, str) and es.return_proc_mode in RETURN_PROC_MODES,
        f"config.return_proc_mode must be one of {', '.join(RETURN_PROC_MODES)}, got {_show(es.return_proc_mode)}",
    )
    _check_cutoff_mode(es.episode_cutoff_mode)
    _require(
        isinstance(opt.type, str) and opt.type in OPTIMIZERS,
        f"optimizer.type must be one of {', '.join(OPTIMIZERS)}, got {_show(opt.type)}",
    )
    _require(
        _number_in(opt.stepsize, MIN_SCALE, MAX_SCALE),
        f"optimizer.args.stepsize must be a positive number in [{_bound(MIN_SCALE)}, {_bound(MAX_SCALE)}], got {_show(opt.stepsize)}",
    )
    _require(
        _number_in(opt.momentum, 0, 1) and opt.momentum < 1,
        f"optimizer.args.momentum must be a number in [0, 1), got {_show(opt.momentum)}",
    )
    _require(
        isinstance(pol.type, str) and pol.type in POLICY_TYPES,
        f"policy.type must be one of {', '.join(POLICY_TYPES)}, got {_show(pol.type)}",
    )
    _check_hidden_dims(pol.hidden_dims)
    _require(
        isinstance(pol.nonlin_type, str) and pol.nonlin_type in NONLINEARITIES,
        f"policy.args.nonlin_type must be one of {', '.join(NONLINEARITIES)}, got {_show(pol.nonlin_type)}",
    )
    _require(
        pol.type != ATARI_POLICY or pol.nonlin_type == "relu",
        f"policy.args.nonlin_type must be 'relu' for {ATARI_POLICY} (the paper's network), got {_show(pol.nonlin_type)}",
    )
    _require(pol.connection_type == "ff", f"policy.args.connection_type must be 'ff', got {_show(pol.connection_type)}")
    _require(
        _number_in(pol.ac_noise_std, 0, MAX_COEFFICIENT),
        f"policy.args.ac_noise_std must be a number in [0, {_bound(MAX_COEFFICIENT)}], got {_show(pol.ac_noise_std)}",
    )
    _check_ac_bins(pol.ac_bins)
    _require(_int_in(run.seed, 0, MAX_SEED - 1), f"run.seed must be an integer in [0, 2**63), got {_show(run.seed)}")
    _count(run.generations, "run.generations", 1, MAX_COUNT, nullable=True)
    _count(run.timesteps, "run.timesteps", 1, MAX_COUNT, nullable=True)
    _count(run.workers, "run.workers", 1, MAX_WORKERS, nullable=True, why=" (evaluator processes a worker host may announce)")
    _count(run.eval_episodes, "run.eval_episodes", 0, MAX_EVAL_EPISODES, nullable=True, why=" (a batch's worth)")
    _count(run.noise_table_size, "run.noise_table_size", 1, MAX_NOISE_TABLE_SIZE, why=" samples (the noise table's limit)")
    _require(isinstance(run.tensorboard, bool), f"run.tensorboard must be true or false, got {_show(run.tensorboard)}")


def shipped_configs() -> dict[str, Path]:
    """Configs that ship with esfast, by name (file name without ``.json``)."""
    installed = resources.files("esfast") / "configs"
    source_tree = Path(__file__).resolve().parents[2] / "configs"  # editable installs
    for directory in (Path(str(installed)), source_tree):
        if directory.is_dir():
            return {path.stem: path for path in sorted(directory.glob("*.json"))}
    return {}


def shipped_config_for_env(env_id: str) -> str | None:
    """The name of the shipped config for ``env_id`` (None: there is none).

    Only each file's ``env_id`` is read, so nothing is validated or logged; when several shipped
    configs name the environment, the first by name is the one.
    """
    for name, path in shipped_configs().items():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):  # not ours to report here: resolve_config says what is wrong with it
            continue
        if isinstance(data, dict) and data.get("env_id") == env_id:
            return name
    return None


def resolve_config(name: str | None) -> Config:
    """A config from a file path or a shipped config's name (default: HalfCheetah)."""
    name = name or DEFAULT_CONFIG
    path = Path(name)
    if path.suffix == ".json" or path.exists():
        return load_config(path)
    shipped = shipped_configs()
    if name in shipped:
        return load_config(shipped[name])
    raise ConfigError(f"no config file {name!r} and no shipped config of that name (shipped: {', '.join(shipped) or 'none'})")


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
    except (ValueError, RecursionError) as error:  # an integer of thousands of digits, nesting deeper than Python's stack
        raise ConfigError(f"config {path} is not valid JSON: {error}") from None
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
    part alone when that is unique (``noise_stdev``); ``env_kwargs.NAME`` sets an option of the
    environment, a new one too, and only by that full path. An override of ``env_id`` with another
    environment drops the config's own ``env_kwargs`` (they are its environment's options), saying
    so in a log line; those the overrides set are kept.

    Raises:
        ConfigError: malformed override, unknown or ambiguous key, or a bad resulting value.
    """
    data = config.to_dict()
    # to_dict leaves momentum out of Adam configs (the paper's layout); it may still be set, e.g.
    # together with optimizer.type=sgd.
    data["optimizer"]["args"].setdefault("momentum", config.optimizer.momentum)
    own_kwargs = data.pop("env_kwargs", {})
    env_kwargs: dict[str, Any] = {}
    leaves = _leaf_paths(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        if key.startswith("env_kwargs."):
            env_kwargs[key.removeprefix("env_kwargs.")] = _override_value(raw)
            continue
        matches = [p for p in leaves if p == key] or [p for p in leaves if p.rsplit(".", 1)[-1] == key]
        if not matches:
            close = difflib.get_close_matches(key, leaves + [p.rsplit(".", 1)[-1] for p in leaves], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        if len(matches) > 1:
            raise ConfigError(f"config key '{key}' is ambiguous: {', '.join(matches)}")
        node = data
        *parents, last = matches[0].split(".")
        for part in parents:
            node = node[part]
        node[last] = _override_value(raw)
    if own_kwargs and data["env_id"] != config.env_id:
        logger.info("env_kwargs %s dropped: they are options of %s, not of %s", json.dumps(own_kwargs), config.env_id, data["env_id"])
        own_kwargs = {}
    env_kwargs = {**own_kwargs, **env_kwargs}
    if env_kwargs:
        data["env_kwargs"] = env_kwargs
    return config_from_dict(data)


def _override_value(raw: str) -> Any:
    """An override's value: JSON, or the text itself when it is not JSON."""
    try:
        return json.loads(raw)  # NaN and Infinity parse too: validate refuses them, naming the key
    except (ValueError, RecursionError):  # not JSON (JSONDecodeError is a ValueError): a plain string
        return raw
