"""A worker host's evaluator processes: started, fed over pipes, restarted when they die.

:class:`EvaluatorPool` owns the processes and their pipes and nothing else: which job goes where
is :class:`~esfast.distributed.host_queue.HostQueue`'s decision. Evaluators are started with
``spawn`` (no state of the host is inherited) and single-threaded BLAS, since each one is a core's
worth of work.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import zmq

from esfast.distributed.evaluator import Job, Reply, evaluator_main
from esfast.errors import EvaluatorsFailing
from esfast.tasks import WorkerSetup

__all__ = ["RESPAWN_LIMIT", "RESPAWN_WINDOW", "Died", "EvaluatorPool"]

RESPAWN_LIMIT = 5  # evaluator deaths a host survives within RESPAWN_WINDOW seconds
RESPAWN_WINDOW = 60.0
STOP_TIMEOUT = 5.0  # seconds evaluators get to finish their episode when told to stop
# Each evaluator is one core's worth of work: BLAS thread pools in N evaluators would fight over
# the same cores (docs/atari.md has the slowdown measured with them).
SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class Died(NamedTuple):
    """The evaluator process exited (``exit_code``) and a new one took its number."""

    exit_code: int | None


@dataclass
class _Process:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection


class EvaluatorPool:
    """``size`` evaluator processes serving ``setup`` with θ from ``theta_path``.

    Args:
        setup: the run; its table is the one named ``table_name`` (the host's).
        theta_path: the host's θ slots.
        size: how many processes.
        poller: the host's poller; each pipe is registered on it for reading.
    """

    def __init__(self, setup: WorkerSetup, theta_path: str, size: int, poller: zmq.Poller) -> None:
        self.setup = setup
        self.theta_path = theta_path
        self.poller = poller
        self.context = multiprocessing.get_context("spawn")
        self.deaths: deque[float] = deque()
        for variable in SINGLE_THREADED:  # read by numpy's BLAS when the evaluator imports it
            os.environ.setdefault(variable, "1")
        self.processes = [self._spawn(index) for index in range(size)]

    def _spawn(self, index: int) -> _Process:
        """Starts evaluator ``index``; the first one also fingerprints the environment (its :class:`Ready` carries it)."""
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=evaluator_main, args=(child_end, self.setup, self.theta_path, os.getpid(), index == 0), daemon=True
        )
        process.start()
        child_end.close()
        self.poller.register(parent_end.fileno(), zmq.POLLIN)
        return _Process(process, parent_end)

    def send(self, index: int, job: Job) -> None:
        """Sends ``job`` to evaluator ``index``; a dead one is noticed by :meth:`replies`."""
        try:
            self.processes[index].conn.send(job)
        except OSError:
            pass  # it died: replies() sees the closed pipe

    def replies(self, events: dict[object, int]) -> Iterator[tuple[int, Reply | Died]]:
        """What the evaluators with pending input (``events`` from the poller) sent, as
        (evaluator, reply); :class:`Died` for an evaluator that died, which is replaced.

        Raises:
            EvaluatorsFailing: too many deaths in a short time.
        """
        for index, entry in enumerate(self.processes):
            if entry.conn.fileno() not in events:
                continue
            try:
                while entry.conn.poll():
                    yield index, entry.conn.recv()
            except (EOFError, OSError):
                yield index, Died(self._replace(index))

    def _replace(self, index: int) -> int | None:
        entry = self.processes[index]
        entry.process.join(1.0)
        code = entry.process.exitcode
        self._close(entry)
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESPAWN_WINDOW:
            self.deaths.popleft()
        if len(self.deaths) > RESPAWN_LIMIT:
            self.processes.pop(index)
            raise EvaluatorsFailing(
                f"{len(self.deaths)} evaluator processes died within {RESPAWN_WINDOW:.0f} s (last exit code {code}); giving up"
            )
        self.processes[index] = self._spawn(index)
        return code

    def _close(self, entry: _Process) -> None:
        self.poller.unregister(entry.conn.fileno())
        entry.conn.close()

    def stop(self) -> None:
        """Tells every evaluator to stop; terminates those still in an episode after STOP_TIMEOUT."""
        for entry in self.processes:
            try:
                entry.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for entry in self.processes:
            entry.process.join(max(0.0, deadline - time.monotonic()))
            if entry.process.is_alive():  # mid-episode: stop it now
                entry.process.terminate()
                entry.process.join()
            self._close(entry)
        self.processes = []
