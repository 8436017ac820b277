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

import hashlib

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from esfast import core
from esfast.config import AtariSettings, Config, ConfigError, PolicySettings, config_from_dict
from esfast.policies import Actor, MLPPolicy, PolicyError, make_policy, obs_stat_dim
from esfast.rollout import make_env, run_episode

if TYPE_CHECKING:
    from esfast.conv_policy import ConvActor


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
    (``table_host``) attach to instead of generating their own. ``obs_dim`` is the length of the
    observation statistics (0 for the Atari network); ``atari`` and ``reference_batch`` (with its
    ``reference_digest``) are set for the Atari network only.
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
    atari: AtariSettings | None = None
    reference_digest: str | None = None
    reference_batch: NDArray[np.uint8] | None = field(default=None, compare=False, repr=False)

    def to_wire(self) -> tuple[dict[str, Any], tuple[NDArray[Any], ...]]:
        """The ``run`` object of a ``WELCOME`` message and its arrays (the reference batch, if any)."""
        config = Config(policy=self.policy, atari=self.atari).to_dict()
        run = {"env_id": self.env_id, "env_module": self.env_module, "policy": config["policy"], "atari": config.get("atari"),
               "num_params": self.num_params, "obs_dim": self.obs_dim, "table_size": self.table_size,
               "table_seed": self.table_seed, "table_name": self.table_name, "table_host": self.table_host,
               "reference_digest": self.reference_digest}
        return run, (() if self.reference_batch is None else (self.reference_batch,))

    @classmethod
    def from_wire(cls, run: object, arrays: tuple[NDArray[Any], ...] = ()) -> WorkerSetup:
        """Parses and validates a ``run`` object and its arrays.

        Raises:
            ValueError: a malformed run object (the message says which field).
        """
        keys = {"env_id", "env_module", "policy", "atari", "num_params", "obs_dim", "table_size", "table_seed", "table_name",
                "table_host", "reference_digest"}
        if not isinstance(run, dict) or set(run) != keys:
            raise ValueError(f"run description must have exactly the fields {sorted(keys)}")
        for name, low in (("num_params", 1), ("obs_dim", 0), ("table_size", 1), ("table_seed", 0)):
            value = run[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"run field {name!r} must be an integer >= {low}, got {value!r:.100}")
        for name in ("table_name", "table_host", "env_module", "reference_digest"):
            if run[name] is not None and not isinstance(run[name], str):
                raise ValueError(f"run field {name!r} must be a string or null")
        sections = {"env_id": run["env_id"], "env_module": run["env_module"], "policy": run["policy"]}
        if run["atari"] is not None:
            sections["atari"] = run["atari"]
        try:
            config = config_from_dict(sections)
        except (ConfigError, TypeError) as error:
            raise ValueError(f"run description: {error}") from None
        batch = None
        if run["reference_digest"] is not None:
            if len(arrays) != 1 or arrays[0].dtype != np.uint8 or reference_digest(arrays[0]) != run["reference_digest"]:
                raise ValueError("the reference batch is missing or does not match its digest")
            batch = arrays[0]
        elif arrays:
            raise ValueError("arrays sent without a reference digest")
        return cls(config.env_id, config.env_module, config.policy, run["num_params"], run["obs_dim"], run["table_size"],
                   run["table_seed"], run["table_name"], run["table_host"], config.atari, run["reference_digest"], batch)


def reference_digest(batch: NDArray[np.uint8]) -> str:
    """A short digest of a reference batch: its shape and bytes."""
    return hashlib.sha256(repr(batch.shape).encode() + np.ascontiguousarray(batch).tobytes()).hexdigest()[:32]


class EpisodeRunner:
    """Runs tasks in this process: owns an environment, a policy and perturbation buffers."""

    def __init__(self, setup: WorkerSetup, table: core.NoiseTable | None = None) -> None:
        self.env = make_env(setup.env_id, setup.env_module, atari=setup.atari)
        self.policy = make_policy(self.env.observation_space, self.env.action_space, setup.policy, setup.reference_batch)
        self.obs_dim = obs_stat_dim(self.policy)
        if (self.policy.num_params, self.obs_dim) != (setup.num_params, setup.obs_dim):
            raise PolicyError(
                f"{setup.env_id} gives a policy of {self.policy.num_params} parameters for {self.obs_dim} observations here; "
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
        self.actors = {name: self._actor(buffer) for name, buffer in (("plus", self.plus), ("minus", self.minus), ("center", self.center))}
        continuous = isinstance(self.policy, MLPPolicy) and not self.policy.discrete and self.policy.bins is None
        self.action_noise_std = setup.policy.ac_noise_std if continuous else 0.0

    def _actor(self, buffer: NDArray[np.float32]) -> Actor | ConvActor:
        if isinstance(self.policy, MLPPolicy):
            ones = np.ones(self.obs_dim, dtype=np.float32)
            return self.policy.actor(buffer, np.zeros_like(ones), ones)
        buffer[:] = 0  # the Atari actor computes its normalization at once: give it defined values
        return self.policy.actor(buffer)

    @staticmethod
    def _prepare(actor: Actor | ConvActor, spec: GenerationSpec) -> None:
        """Readies ``actor`` for an episode with the parameters now in its buffer."""
        if isinstance(actor, Actor):
            actor.set_normalization(spec.obs_mean, spec.obs_std)
        else:
            actor.refresh()  # virtual batch normalization: statistics of the reference batch under these parameters

    def run_pair(self, theta: NDArray[np.float32], spec: GenerationSpec, task: PairTask) -> PairResult:
        core.perturb_pair(theta, self.table, task.offset, spec.sigma, out_plus=self.plus, out_minus=self.minus)
        episodes = []
        for name in ("plus", "minus"):
            actor = self.actors[name]
            self._prepare(actor, spec)
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
        self._prepare(actor, spec)
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
