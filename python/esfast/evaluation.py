"""Where episodes run: the seam between the algorithm and the processes that evaluate it.

The trainer describes a generation as a :class:`GenerationSpec` (θ travels separately, once) plus
a list of :class:`PairTask` and :class:`EvalTask`; an :class:`Evaluator` returns one
:class:`PairResult` per pair task and one :class:`EvalResult` per eval task, in any order. A task
carries everything that makes its result reproducible (offset, episode seed, whether to record
observations), so the result does not depend on which process ran it.

Evaluators here: :class:`SerialEvaluator` (this process) and :class:`PoolEvaluator` (local worker
processes sharing the noise table and θ through shared memory).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import multiprocessing
import os
import signal
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from esfast import core
from esfast.config import PolicySettings
from esfast.policies import MLPPolicy
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
    """What a process needs to run tasks of a run: the environment, the policy, the noise table."""

    env_id: str
    env_module: str | None
    policy: PolicySettings
    table_name: str | None
    table_size: int
    table_seed: int


class EpisodeRunner:
    """Runs tasks in this process: owns an environment, a policy and perturbation buffers."""

    def __init__(self, setup: WorkerSetup, table: core.NoiseTable | None = None) -> None:
        self.env = make_env(setup.env_id, setup.env_module)
        self.policy = MLPPolicy(self.env.observation_space, self.env.action_space, setup.policy)
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


# Pool workers -------------------------------------------------------------------------------

_worker_runner: EpisodeRunner | None = None
_worker_theta: np.memmap | None = None


def _init_pool_worker(setup: WorkerSetup, theta_path: str, num_params: int) -> None:
    global _worker_runner, _worker_theta
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    _worker_runner = EpisodeRunner(setup)
    _worker_theta = np.memmap(theta_path, dtype=np.float32, mode="r", shape=(num_params,))


def _run_chunk(spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]) -> tuple[list[PairResult], list[EvalResult]]:
    assert _worker_runner is not None and _worker_theta is not None
    theta = np.asarray(_worker_theta)
    return [_worker_runner.run_pair(theta, spec, t) for t in pairs], [_worker_runner.run_eval(theta, spec, t) for t in evals]


class PoolEvaluator:
    """Runs tasks in ``processes`` local worker processes.

    The noise table must be a shared table (workers attach to it by name); θ is written once per
    generation to a shared-memory file that workers map read-only, so it is never pickled.
    """

    def __init__(self, setup: WorkerSetup, num_params: int, processes: int) -> None:
        if not setup.table_name:
            raise ValueError("PoolEvaluator needs a shared noise table (setup.table_name)")
        directory = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))
        self.theta_path = directory / f"esfast-theta-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.theta = np.memmap(self.theta_path, dtype=np.float32, mode="w+", shape=(num_params,))
        # Removed by close(), and also at garbage collection or interpreter exit if close() never runs.
        self._remove_theta = weakref.finalize(self, self.theta_path.unlink, missing_ok=True)
        self.processes = processes
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker,
            initargs=(setup, str(self.theta_path), num_params),
        )

    def evaluate(
        self, theta: NDArray[np.float32], spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]
    ) -> tuple[list[PairResult], list[EvalResult]]:
        self.theta[:] = theta
        chunks = max(1, min(len(pairs) + len(evals), 4 * self.processes))
        pair_results: list[PairResult] = []
        eval_results: list[EvalResult] = []
        try:
            # A worker that died between generations breaks the pool before submit; during one, at result.
            futures = [self.pool.submit(_run_chunk, spec, pairs[i::chunks], evals[i::chunks]) for i in range(chunks)]
            for future in concurrent.futures.as_completed(futures):
                done_pairs, done_evals = future.result()
                pair_results.extend(done_pairs)
                eval_results.extend(done_evals)
        except concurrent.futures.process.BrokenProcessPool:
            raise WorkerError("a local worker process died (killed, or out of memory)") from None
        return pair_results, eval_results

    def close(self, *, interrupted: bool = False) -> None:
        """Stops the workers: after their current chunk, or at once when ``interrupted``."""
        if interrupted:
            # Workers ignore SIGINT; stop them now rather than after their episodes finish.
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
        del self.theta
        self._remove_theta()
