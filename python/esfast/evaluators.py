"""Where episodes run: the seam between the algorithm and the processes that evaluate it.

An :class:`Evaluator` takes a generation (θ, its :class:`~esfast.tasks.GenerationSpec` and its
tasks) and returns every task's result. :class:`SerialEvaluator` runs them in this process;
:class:`esfast.distributed.master.Master` hands them to worker hosts over ZeroMQ
(``esfast train`` runs one master with one worker host on this machine).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from esfast import core
from esfast.runner import EpisodeRunner
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, WorkerSetup

__all__ = ["Evaluator", "SerialEvaluator"]


class Evaluator(Protocol):
    """Runs a generation's tasks somewhere and returns their results (any order)."""

    def evaluate(
        self, theta: NDArray[np.float32], spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]
    ) -> tuple[list[PairResult], list[EvalResult]]:
        """Every task's result: one per pair task, one per eval task.

        Raises:
            WorkerError: a task failed where it ran.
        """
        ...

    def close(self, *, interrupted: bool = False) -> None:
        """Releases what the evaluator holds (processes, sockets); ``interrupted`` says why."""
        ...

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
