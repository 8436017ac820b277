"""Where episodes run: the seam between the algorithm and the processes that evaluate it.

The trainer describes a generation as a :class:`GenerationSpec` (θ travels separately, once) plus
a list of :class:`PairTask` and :class:`EvalTask`; an :class:`Evaluator` returns one
:class:`PairResult` per pair task and one :class:`EvalResult` per eval task, in any order. A task
carries everything that makes its result reproducible (offset, episode seed, whether to record
observations), so the result does not depend on which process ran it.

Evaluators: :class:`SerialEvaluator` here (this process) and :class:`esfast.master.Master`, which
hands the tasks to worker hosts over ZeroMQ (``esfast train`` runs one on this machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from esfast import core
from esfast.config import Config, ConfigError, PolicySettings, config_from_dict
from esfast.policies import MLPPolicy, PolicyError
from esfast.rollout import make_env, run_episode


class WorkerError(RuntimeError):
    """A worker process died or failed, so the generation could not be evaluated."""


@dataclass(frozen=True)
class GenerationSpec:
    """What every task of a generation shares, except θ."""

    generation: int
    sigma: float
    obs_mean: NDArray[np.float32]
    obs_std: NDArray[np.float32]
    timestep_limit: int | None


@dataclass(frozen=True)
class PairTask:
    """Evaluate θ + σε and θ − σε, ε = table[offset : offset + num_params], with one episode seed."""

    pair: int
    offset: int
    episode_seed: int
    record_obs: bool


@dataclass(frozen=True)
class EvalTask:
    """Evaluate the unperturbed θ without action noise."""

    index: int
    episode_seed: int


@dataclass
class PairResult:
    pair: int
    returns: tuple[float, float]
    lengths: tuple[int, int]
    obs_sum: NDArray[np.float64] | None
    obs_sumsq: NDArray[np.float64] | None
    obs_count: int


@dataclass
class EvalResult:
    index: int
    ret: float
    length: int


@dataclass(frozen=True)
class WorkerSetup:
    """What a process needs to run tasks of a run: the environment, the policy, the noise table.

    ``table_name`` names the master's shared table, which processes on the master's machine
    (``table_host``) attach to instead of generating their own.
    """

    env_id: str
    env_module: str | None
    policy: PolicySettings
    num_params: int
    obs_dim: int
    table_size: int
    table_seed: int
    table_name: str | None = None
    table_host: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``run`` object of a ``WELCOME`` message."""
        policy = Config(policy=self.policy).to_dict()["policy"]
        return {"env_id": self.env_id, "env_module": self.env_module, "policy": policy, "num_params": self.num_params,
                "obs_dim": self.obs_dim, "table_size": self.table_size, "table_seed": self.table_seed,
                "table_name": self.table_name, "table_host": self.table_host}

    @classmethod
    def from_wire(cls, run: object) -> WorkerSetup:
        """Parses and validates a ``run`` object.

        Raises:
            ValueError: a malformed run object (the message says which field).
        """
        keys = {"env_id", "env_module", "policy", "num_params", "obs_dim", "table_size", "table_seed", "table_name", "table_host"}
        if not isinstance(run, dict) or set(run) != keys:
            raise ValueError(f"run description must have exactly the fields {sorted(keys)}")
        for name in ("num_params", "obs_dim", "table_size", "table_seed"):
            value = run[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "table_seed" else 1):
                raise ValueError(f"run field {name!r} must be a positive integer, got {value!r:.100}")
        for name in ("table_name", "table_host", "env_module"):
            if run[name] is not None and not isinstance(run[name], str):
                raise ValueError(f"run field {name!r} must be a string or null")
        try:
            config = config_from_dict({"env_id": run["env_id"], "env_module": run["env_module"], "policy": run["policy"]})
        except (ConfigError, TypeError) as error:
            raise ValueError(f"run description: {error}") from None
        return cls(config.env_id, config.env_module, config.policy, run["num_params"], run["obs_dim"], run["table_size"],
                   run["table_seed"], run["table_name"], run["table_host"])


class EpisodeRunner:
    """Runs tasks in this process: owns an environment, a policy and perturbation buffers."""

    def __init__(self, setup: WorkerSetup, table: core.NoiseTable | None = None) -> None:
        self.env = make_env(setup.env_id, setup.env_module)
        self.policy = MLPPolicy(self.env.observation_space, self.env.action_space, setup.policy)
        if (self.policy.num_params, self.policy.obs_dim) != (setup.num_params, setup.obs_dim):
            raise PolicyError(
                f"{setup.env_id} gives a policy of {self.policy.num_params} parameters for {self.policy.obs_dim} observations here; "
                f"the run has {setup.num_params} and {setup.obs_dim} (different gymnasium or environment versions?)"
            )
        if table is None:
            table = (
                core.NoiseTable.attach(setup.table_name, timeout=60.0, threads=1)
                if setup.table_name
                else core.NoiseTable(setup.table_size, setup.table_seed)
            )
        self.table = table
        # Parameter buffers with an actor bound to each, made once: a task only fills the buffers.
        self.plus = np.empty(self.policy.num_params, dtype=np.float32)
        self.minus = np.empty(self.policy.num_params, dtype=np.float32)
        self.center = np.empty(self.policy.num_params, dtype=np.float32)
        ones = np.ones(self.policy.obs_dim, dtype=np.float32)
        self.actors = {
            name: self.policy.actor(buffer, np.zeros_like(ones), ones)
            for name, buffer in (("plus", self.plus), ("minus", self.minus), ("center", self.center))
        }
        continuous = not self.policy.discrete and self.policy.bins is None
        self.action_noise_std = setup.policy.ac_noise_std if continuous else 0.0

    def run_pair(self, theta: NDArray[np.float32], spec: GenerationSpec, task: PairTask) -> PairResult:
        core.perturb_pair(theta, self.table, task.offset, spec.sigma, out_plus=self.plus, out_minus=self.minus)
        episodes = []
        for name in ("plus", "minus"):
            actor = self.actors[name]
            actor.set_normalization(spec.obs_mean, spec.obs_std)
            episodes.append(
                run_episode(
                    self.env,
                    actor,
                    seed=task.episode_seed,
                    timestep_limit=spec.timestep_limit,
                    action_noise_std=self.action_noise_std,
                    record_obs=task.record_obs,
                )
            )
        plus, minus = episodes
        if task.record_obs:
            obs_sum = plus.obs_sum + minus.obs_sum
            obs_sumsq = plus.obs_sumsq + minus.obs_sumsq
        else:
            obs_sum = obs_sumsq = None
        return PairResult(task.pair, (plus.ret, minus.ret), (plus.length, minus.length), obs_sum, obs_sumsq, plus.obs_count + minus.obs_count)

    def run_eval(self, theta: NDArray[np.float32], spec: GenerationSpec, task: EvalTask) -> EvalResult:
        np.copyto(self.center, theta)
        actor = self.actors["center"]
        actor.set_normalization(spec.obs_mean, spec.obs_std)
        episode = run_episode(self.env, actor, seed=task.episode_seed, timestep_limit=spec.timestep_limit)
        return EvalResult(task.index, episode.ret, episode.length)

    def close(self) -> None:
        self.env.close()


class Evaluator(Protocol):
    """Runs a generation's tasks somewhere and returns their results (any order)."""

    def evaluate(
        self, theta: NDArray[np.float32], spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]
    ) -> tuple[list[PairResult], list[EvalResult]]: ...

    def close(self, *, interrupted: bool = False) -> None: ...

    def generation_stats(self) -> dict[str, Any]:
        """Counters of the last generation for its log record (hosts, re-issued tasks, ...)."""
        ...


class SerialEvaluator:
    """Runs every task in this process, one after another."""

    def __init__(self, setup: WorkerSetup, table: core.NoiseTable) -> None:
        self.runner = EpisodeRunner(setup, table)

    def evaluate(
        self, theta: NDArray[np.float32], spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]
    ) -> tuple[list[PairResult], list[EvalResult]]:
        return [self.runner.run_pair(theta, spec, t) for t in pairs], [self.runner.run_eval(theta, spec, t) for t in evals]

    def close(self, *, interrupted: bool = False) -> None:
        self.runner.close()

    def generation_stats(self) -> dict[str, Any]:
        return {}
