"""The Python API for notebooks and scripts: :func:`train` a policy, :func:`load_policy` to use it.

    result = esfast.train("halfcheetah", out="runs/cheetah", generations=50, noise_stdev=0.01)
    result = esfast.train(env_id="CartPole-v1", generations=40)  # its shipped config, or its kind's defaults
    policy = esfast.load_policy(result.checkpoint)
    action = policy.act(observation)

:func:`train` is ``esfast train`` as a function: the same configs, overrides, run directory and
trainer (:class:`esfast.training.Trainer`), plus callbacks that see each generation's log record
and may stop the run. :func:`load_policy` is the policy of ``esfast play``, for the caller's own
loop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esfast.checkpoint import load_checkpoint
from esfast.config import Config, apply_overrides, resolve_config, validate
from esfast.env_defaults import config_for_env
from esfast.envs import make_env
from esfast.envs.rollout import Episode, run_episode
from esfast.errors import CheckpointError, ConfigError, PolicyError
from esfast.policies import Actor, ObStat, Policy, make_policy
from esfast.run_directory import RunDirectory, default_run_path
from esfast.training import EvaluatorFactory, Trainer

__all__ = ["Callback", "LoadedPolicy", "TrainingResult", "load_policy", "train"]

# Called after each generation with its log record and the trainer; a true value stops the run.
Callback = Callable[[dict[str, Any], Trainer], object]

# Keyword arguments of train() that name run.* settings; generations= and timesteps= replace the
# config's budget, as --generations and --timesteps do.
_RUN_KEYS = {"generations": "run.generations", "timesteps": "run.timesteps", "seed": "run.seed", "workers": "run.workers"}
_BUDGETS = ("generations", "timesteps")


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train` leaves: the run directory and the state its last generation ended in.

    Attributes:
        out_dir: the run directory (``config.json``, ``log.jsonl``, ``checkpoints/``).
        checkpoint: ``out_dir/checkpoints/latest.npz``, the last generation's checkpoint.
        config: the run's resolved config.
        generation: generations completed.
        timesteps_total: environment steps of the population's episodes, over the whole run.
        theta: the final parameters, float32 of shape (num_params,).
        last_record: the last generation's log record (None if no generation ran).
        stopped: whether a callback stopped the run (False: the budget or ``seconds`` ended it).
    """

    out_dir: Path
    checkpoint: Path
    config: Config
    generation: int
    timesteps_total: int
    theta: NDArray[np.float32]
    last_record: dict[str, Any] | None
    stopped: bool

    def load_policy(self) -> LoadedPolicy:
        """The policy of :attr:`checkpoint` (see :func:`load_policy`)."""
        return load_policy(self.checkpoint)


def train(
    config_or_name: Config | str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    callbacks: Iterable[Callback] | Callback = (),
    seconds: float | None = None,
    evaluator: EvaluatorFactory | None = None,
    **overrides: Any,
) -> TrainingResult:
    """Trains a policy as ``esfast train`` does, from Python.

    Progress goes to the ``esfast.training`` logger, one line per generation (shown with
    ``logging.basicConfig(level=logging.INFO)``). Ctrl-C raises KeyboardInterrupt once the worker
    processes have stopped, with the checkpoint of the last completed generation in place.

    Args:
        config_or_name: a :class:`~esfast.config.Config`, a JSON config file or the name of a
            shipped config (``"halfcheetah"``, ``"pong"``, ...). None (the default): as
            ``esfast train`` without a config, with ``env_id=`` the environment's shipped config
            or the defaults for its kind (:func:`esfast.env_defaults.config_for_env`), without
            it the ``halfcheetah`` config. A config given with ``env_id=`` is that config on
            that environment.
        out: the run directory, which must not hold a run yet (default:
            ``runs/<exp_prefix>-<time>``, as ``esfast train``).
        callbacks: called in order after every generation, once its checkpoint and log record
            are written, as ``callback(record, trainer)`` with the log record (a dict: the
            fields of ``log.jsonl``) and the :class:`~esfast.training.Trainer`; when any returns
            a true value, the run stops after that generation. A single callable is one callback.
            A record's returns are those of the generation's episodes, run with the θ it started
            from; the trainer's θ and the checkpoint are those after its update.
        seconds: also stop after the generation under way when this much wall time has passed.
        evaluator: where episodes run (see :class:`~esfast.training.Trainer`); None: worker
            processes on this machine, ``workers`` of them (default: one per core), which import
            ``env_module`` themselves; :class:`esfast.evaluators.SerialEvaluator`: this process.
        **overrides: config settings by name, with Python values: ``generations``,
            ``timesteps``, ``seed`` and ``workers`` set ``run.*`` (``generations`` or
            ``timesteps`` replaces the config's budget, as ``--generations`` and ``--timesteps``
            do; both: the first reached ends the run); any other key is what ``--set`` takes, a
            unique name (``noise_stdev=0.01``, ``hidden_dims=[32, 32]``, ``env_id="Hopper-v5"``)
            or a dotted path (``**{"policy.args.hidden_dims": [32]}``).

    Returns:
        The run directory, final generation, θ and last log record (:class:`TrainingResult`).

    Raises:
        ConfigError: an unknown config or key, a value that is not JSON or out of range.
        ValueError: ``seconds`` that is not a positive number.
        TypeError: a config that is not a Config, str or path, or a callback that is not callable.
        RunExistsError, RunLockedError, EnvError, PolicyError, CheckpointError: as
            :class:`~esfast.training.Trainer` raises them.
        KeyboardInterrupt, TrainingDiverged, WorkerError: as :meth:`Trainer.train` raises them;
            the run directory keeps the last completed generation.
    """
    real = isinstance(seconds, (int, float, np.integer, np.floating)) and not isinstance(seconds, bool)
    if seconds is not None and not (real and seconds > 0):  # NaN is not > 0
        raise ValueError(f"seconds must be a positive number or None, got {seconds!r}")
    chain = (callbacks,) if callable(callbacks) else tuple(callbacks)
    for callback in chain:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables taking (record, trainer), got {callback!r}")
    config = _resolve(config_or_name, overrides)
    out_dir = Path(out) if out is not None else default_run_path(config.exp_prefix)
    stopped = False
    with Trainer(config, out_dir, evaluator=evaluator) as trainer:

        def on_generation(record: dict[str, Any]) -> bool:
            nonlocal stopped
            answers = [callback(record, trainer) for callback in chain]  # every callback sees every record
            stopped = any(answers)
            return stopped

        trainer.train(seconds=seconds, on_generation=on_generation if chain else None)
        return TrainingResult(
            out_dir=out_dir,
            checkpoint=trainer.run_dir.latest,
            config=config,
            generation=trainer.generation,
            timesteps_total=trainer.timesteps_total,
            theta=trainer.theta.copy(),
            last_record=trainer.last_record,
            stopped=stopped,
        )


def _resolve(config_or_name: Config | str | os.PathLike[str] | None, overrides: dict[str, Any]) -> Config:
    """The config :func:`train` runs: the named one (None: as ``esfast train`` chooses it) with the
    keyword overrides applied, validated."""
    items = dict(overrides)
    if isinstance(config_or_name, Config):
        config = config_or_name
    elif config_or_name is None and isinstance(overrides.get("env_id"), str):  # esfast train --env ID
        config = config_for_env(items.pop("env_id"), overrides.get("env_module"))
    elif config_or_name is None:
        config = resolve_config(None)
    elif isinstance(config_or_name, (str, os.PathLike)):
        config = resolve_config(os.fspath(config_or_name))
    else:
        raise TypeError(
            f"config_or_name must be a Config, a config file or a shipped config's name, got {config_or_name!r} (or None: see env_id)"
        )
    for budget in _BUDGETS:  # one budget given: the config's other one no longer applies
        other = _BUDGETS[1 - _BUDGETS.index(budget)]
        if overrides.get(budget) is not None and other not in overrides:
            items[other] = None
    settings = []
    for key, value in items.items():
        try:
            text = json.dumps(value, default=_plain, allow_nan=True)
        except (TypeError, ValueError):
            raise ConfigError(f"config override {key}={value!r} is not a JSON value (numbers, strings, lists, None)") from None
        settings.append(f"{_RUN_KEYS.get(key, key)}={text}")
    config = apply_overrides(config, settings) if settings else config
    validate(config)
    return config


def _plain(value: object) -> object:
    """numpy scalars and arrays as the Python values json writes."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(type(value).__name__)


class LoadedPolicy:
    """A checkpoint's policy with its observation normalization: acts as in evaluation episodes.

    Not for concurrent calls from several threads (the actor owns its buffers).

    Attributes:
        config: the run's config.
        policy: the architecture (:class:`~esfast.policies.Policy`).
        theta: the parameters, float32 of shape (num_params,), read-only.
        obs_mean, obs_std: the observation statistics the policy normalizes with, float32 of shape
            (policy.obs_stat_dim,) (empty for the Atari network, normalized by its reference batch).
        reference_batch: the Atari network's reference batch of virtual batch normalization,
            uint8 of shape (N, stack, height, width); None for other policies.
        timestep_limit: the step limit of the run's evaluation episodes at the checkpoint, which
            :meth:`run_episode` applies (a loop of the caller's own may stop there too): the
            config's ``episode_cutoff_mode`` as a number of steps (a fixed cutoff, or an adaptive
            one as it stood at that generation); None for ``env_default``, where only the
            environment's own limit applies.
        generation: the checkpoint's generation.
        checkpoint: the file it was loaded from.
    """

    def __init__(
        self,
        config: Config,
        policy: Policy,
        theta: NDArray[np.float32],
        obstat: ObStat,
        *,
        reference_batch: NDArray[np.uint8] | None,
        timestep_limit: int | None,
        generation: int,
        checkpoint: Path,
    ) -> None:
        self.config = config
        self.policy = policy
        parameters = np.array(theta, dtype=np.float32)  # the actor's own copy, viewed below read-only
        self.theta = parameters.view()
        self.theta.flags.writeable = False
        self.obs_mean = obstat.mean
        self.obs_std = obstat.std
        self.reference_batch = reference_batch
        self.timestep_limit = timestep_limit
        self.generation = generation
        self.checkpoint = checkpoint
        self._actor: Actor = policy.actor(parameters)
        self._actor.prepare(self.obs_mean, self.obs_std)

    def act(self, observation: Any) -> Any:
        """The action for one observation of :meth:`make_env`'s environment, without action noise.

        Returns:
            An ``int`` for discrete actions (the Atari network, ``Discrete`` spaces); otherwise a
            new float32 array of the action space's shape, within its bounds.

        Raises:
            TypeError, ValueError: an observation of another shape or type than the environment's.
        """
        return self._actor(observation)

    def run_episode(self, env: gym.Env[Any, Any], *, seed: int) -> Episode:
        """One episode as the run's evaluation episodes go: reset with ``seed``, no action noise,
        until the environment ends it or :attr:`timestep_limit` steps are taken.

        Args:
            env: an environment from :meth:`make_env` (possibly wrapped, e.g. to record it).
            seed: the episode's seed.

        Returns:
            Its return and length (:class:`~esfast.envs.rollout.Episode`).
        """
        return run_episode(env, self._actor, seed=seed, timestep_limit=self.timestep_limit)

    def make_env(self, **kwargs: Any) -> gym.Env[Any, Any]:
        """The run's environment as the policy saw it (Atari with esfast's preprocessing), after
        importing the config's ``env_module``, with its ``env_kwargs``; ``kwargs`` go to ``gymnasium.make`` too (e.g.
        ``render_mode="human"``; not for Atari). The caller closes it.

        Raises:
            EnvError: the environment cannot be made here.
        """
        return make_env(self.config.env_id, self.config.env_module, atari=self.config.atari, env_kwargs=self.config.env_kwargs, **kwargs)

    def __repr__(self) -> str:
        return f"LoadedPolicy({self.config.env_id}, {self.policy.describe()}, generation {self.generation}, {self.checkpoint})"


def load_policy(checkpoint: str | os.PathLike[str]) -> LoadedPolicy:
    """The policy of a checkpoint, for use in the caller's own code: ``load_policy(path).act(observation)``.

    The policy is built from the checkpoint's config and the spaces of its environment (made and
    closed here), with the checkpoint's θ, observation statistics, episode cutoff and, for Atari
    runs, the reference batch of virtual batch normalization: the actor of the run's evaluation
    episodes.

    Args:
        checkpoint: a checkpoint file (``.npz``) or a run directory (its ``checkpoints/latest.npz``).

    Raises:
        CheckpointError: a missing or damaged checkpoint, or one that does not fit the policy its
            config gives here (another number of parameters or observation statistics).
        EnvError: the environment cannot be made here (a missing package or ``env_module``).
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = RunDirectory(path).latest
    state, config = load_checkpoint(path)
    batch = None if config.atari is None else state.get("reference_batch")
    if config.atari is not None and batch is None:
        raise CheckpointError(f"{path} holds a checkpoint of an Atari run without the network's reference batch")
    if batch is not None:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
    env = make_env(config.env_id, config.env_module, atari=config.atari, env_kwargs=config.env_kwargs)
    try:
        try:
            policy = make_policy(env.observation_space, env.action_space, config.policy, batch)
        except PolicyError as error:
            raise CheckpointError(f"{path} does not fit its environment here: {error}") from None
    finally:
        env.close()
    theta = np.asarray(state["theta"], dtype=np.float32)
    if theta.size != policy.num_params:
        raise CheckpointError(
            f"{path} holds a policy of {theta.size} parameters; its config gives {policy.num_params} on {config.env_id} here"
            " (different gymnasium or environment versions?)"
        )
    obstat = ObStat((policy.obs_stat_dim,))
    try:
        obstat.load_state_dict({key: state[f"obstat_{key}"] for key in ("sum", "sumsq", "count")})
    except PolicyError as error:
        raise CheckpointError(f"{path} does not fit its policy: {error}") from None
    limit = int(state["timestep_limit"])  # -1: none (load_checkpoint has checked it)
    return LoadedPolicy(
        config,
        policy,
        theta,
        obstat,
        reference_batch=batch,
        timestep_limit=None if limit < 0 else limit,
        generation=int(state["generation"]),
        checkpoint=path,
    )
