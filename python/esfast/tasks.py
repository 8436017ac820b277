"""What a generation's work is made of: its shared settings, its tasks and their results.

The trainer describes a generation as a :class:`GenerationSpec` (θ travels separately, once) plus
a list of :class:`PairTask` and :class:`EvalTask`; an evaluator (:mod:`esfast.evaluators`)
returns one :class:`PairResult` per pair task and one :class:`EvalResult` per eval task, in any
order. A task carries everything that makes its result reproducible (offset, episode seed,
whether to record observations), so the result does not depend on which process ran it.
:class:`WorkerSetup` describes the run to every process that runs tasks.

These are plain values (numpy arrays and numbers): the wire protocol
(:mod:`esfast.distributed.protocol`) encodes them without importing gymnasium or MuJoCo.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from esfast.config import AtariSettings, PolicySettings

__all__ = ["EvalResult", "EvalTask", "GenerationSpec", "PairResult", "PairTask", "Result", "Task", "WorkerSetup", "reference_digest"]


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
    """What a :class:`PairTask` gave: both returns and lengths, and the observation sums if recorded."""

    pair: int
    returns: tuple[float, float]
    lengths: tuple[int, int]
    obs_sum: NDArray[np.float64] | None
    obs_sumsq: NDArray[np.float64] | None
    obs_count: int


@dataclass
class EvalResult:
    """What an :class:`EvalTask` gave: the return and length of the unperturbed policy's episode."""

    index: int
    ret: float
    length: int


@dataclass(frozen=True)
class WorkerSetup:
    """What a process needs to run tasks of a run: the environment, the policy, the noise table.

    ``table_name`` names the master's shared table, which processes on the master's machine
    (``table_host``) attach to instead of generating their own. ``obs_dim`` is the length of the
    observation statistics (0 for the Atari network); ``atari`` and ``reference_batch`` (with its
    ``reference_digest``) are set for the Atari network only; ``env_kwargs`` are the config's
    options of the environment (``gymnasium.make``'s keyword arguments).
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
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def reference_digest(batch: NDArray[np.uint8]) -> str:
    """A short digest of a reference batch: its shape and bytes."""
    return hashlib.sha256(repr(batch.shape).encode() + np.ascontiguousarray(batch).tobytes()).hexdigest()[:32]


# A generation's tasks are numbered by their index in the generation: pairs first, then the
# evaluation episodes. (generation, task) names a task uniquely within a run.
Task = PairTask | EvalTask
Result = PairResult | EvalResult
