"""A worker host's bookkeeping: its queue of tasks, its evaluators' jobs, its credit. No processes.

The host asks the master for as many tasks as it can hold (``PREFETCH`` per evaluator: one
running, one waiting in the evaluator's pipe), counting what it has asked for and not yet
received, and hands queued tasks to evaluators, every idle evaluator first. Tasks of a
generation whose θ the host does not hold stay queued until θ comes (the host asks for it);
tasks of a finished generation are dropped. :class:`HostQueue` is that logic alone, so it is
tested without sockets or processes; :class:`~esfast.distributed.host.WorkerHost` drives it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypeVar

from esfast.distributed.evaluator import Job
from esfast.tasks import Task

__all__ = ["PREFETCH", "HostQueue", "QueuedTask", "batches"]

PREFETCH = 2  # tasks a host holds per evaluator process: one running, one waiting in its pipe

Item = TypeVar("Item")


class QueuedTask(NamedTuple):
    """A task the host holds and no evaluator has yet."""

    generation: int
    task_id: int
    task: Task


class HostQueue:
    """Tasks, jobs and credit of one host with ``procs`` evaluators (see the module docstring).

    Evaluators are numbered ``0 .. procs - 1``; a replaced evaluator keeps its number.
    """

    def __init__(self, procs: int) -> None:
        self.procs = procs
        self.epoch = 0  # the connection: jobs of earlier connections are not reported
        self.generation = -1  # the generation of the θ the host holds
        self.queue: deque[QueuedTask] = deque()
        self.jobs: list[deque[Job]] = [deque() for _ in range(procs)]  # sent to each evaluator, in order
        self.ready = [False] * procs
        self.advertised = 0  # credit asked for and not yet answered with tasks

    # The connection and θ ------------------------------------------------------------------

    def reconnected(self) -> None:
        """A new connection: queued tasks and asked-for credit are forgotten, jobs in evaluators
        will not be reported, and θ is needed again (the master may have restarted)."""
        self.epoch += 1
        self.generation = -1
        self.queue.clear()
        self.advertised = 0

    def theta_arrived(self, generation: int) -> None:
        """θ of ``generation`` is in the slots: queued tasks of older generations go (stale)."""
        self.generation = generation
        self.queue = deque(item for item in self.queue if item.generation >= generation)

    def missing_theta(self) -> int | None:
        """The generation of queued tasks whose θ the host lacks (to ask the master for), or None."""
        newer = [item.generation for item in self.queue if item.generation > self.generation]
        return max(newer) if newer else None

    # Tasks and credit -----------------------------------------------------------------------

    def tasks_arrived(self, generation: int, tasks: Iterable[tuple[int, Task]], count: int) -> int:
        """Queues a TASKS message's tasks (``count`` of them were sent, malformed ones included).

        Tasks of a generation older than the host's θ are dropped (their credit comes back).

        Returns:
            How many were queued.
        """
        self.advertised = max(0, self.advertised - count)
        if generation < self.generation:
            return 0
        before = len(self.queue)
        self.queue.extend(QueuedTask(generation, task_id, task) for task_id, task in tasks)
        return len(self.queue) - before

    def held(self) -> int:
        """Tasks queued here or in evaluators."""
        return len(self.queue) + sum(len(jobs) for jobs in self.jobs)

    def take_credit(self) -> int:
        """Tasks this host can take beyond what it holds and has asked for, counted from now on as
        asked for (the caller sends them to the master as credit)."""
        free = max(0, PREFETCH * self.procs - self.held() - self.advertised)
        self.advertised += free
        return free

    def credit_not_sent(self, credit: int) -> None:
        """Credit from :meth:`take_credit` that did not reach the master."""
        self.advertised = max(0, self.advertised - credit)

    # Evaluators -----------------------------------------------------------------------------

    def assign(self) -> list[tuple[int, Job]]:
        """Jobs to send now, as (evaluator, job): every idle evaluator first, then one waiting job
        each, and only tasks whose θ the host holds. The jobs are recorded as sent."""
        sent: list[tuple[int, Job]] = []
        for depth in range(1, PREFETCH + 1):
            for index in range(self.procs):
                if not self.queue or self.queue[0].generation != self.generation:
                    return sent
                if self.ready[index] and len(self.jobs[index]) < depth:
                    item = self.queue.popleft()
                    job = Job(self.epoch, item.generation, item.task_id, item.task)
                    self.jobs[index].append(job)
                    sent.append((index, job))
        return sent

    def evaluator_ready(self, index: int) -> None:
        """Evaluator ``index`` has started and takes jobs."""
        self.ready[index] = True

    def job_replied(self, index: int) -> Job | None:
        """Evaluator ``index`` answered its oldest job: that job, if its answer is to be reported
        (None if it belongs to an earlier connection)."""
        job = self.jobs[index].popleft()
        return job if job.epoch == self.epoch else None

    def requeue(self, job: Job) -> None:
        """Puts ``job``'s task back at the front of the queue, if it belongs to the current
        generation (an evaluator skipped it without running it)."""
        if job.epoch == self.epoch and job.generation == self.generation:
            self.queue.appendleft(QueuedTask(job.generation, job.task_id, job.task))

    def evaluator_lost(self, index: int) -> int:
        """Evaluator ``index`` died: its unfinished jobs of the current connection and generation go
        back to the front of the queue, in their order; a new evaluator takes its number.

        Returns:
            How many tasks were re-queued.
        """
        jobs = self.jobs[index]
        requeued = [
            QueuedTask(job.generation, job.task_id, job.task)
            for job in jobs
            if job.epoch == self.epoch and job.generation == self.generation
        ]
        self.queue.extendleft(reversed(requeued))
        jobs.clear()
        self.ready[index] = False
        return len(requeued)


def batches(items: Sequence[Item], size: int) -> list[Sequence[Item]]:
    """``items`` in consecutive chunks of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]
