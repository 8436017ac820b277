"""Who runs which task of a generation: the master's bookkeeping, without sockets.

One :class:`GenerationScheduler` per generation. Hosts pull tasks with a credit; a host that goes
silent gives its unfinished tasks back to the queue; once the queue is empty, idle hosts receive
copies of the longest-outstanding tasks, so one slow host cannot stall a generation. The first
result for a task wins; later ones, and results of other generations, are counted and dropped.
Since a task's result depends only on the task, none of this changes what the update sees.

A generation may be evaluated in several rounds (the trainer's variable batch): each round is a
scheduler of its own whose task list continues the earlier rounds' (``first_id``), so that a late
result of an earlier round can never be taken for a task of this one.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


class Outcome(enum.Enum):
    """What became of a reported result."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the task already had a result (a re-issued or duplicated copy)
    STALE = "stale"  # for another generation, or for a task of an earlier round of this one
    UNKNOWN = "unknown"  # no such task id


@dataclass
class SchedulerStats:
    """Counters of one generation, logged with it."""

    hosts: set[str] = field(default_factory=set)
    reissued: int = 0  # tasks put back in the queue because their host was lost
    duplicated: int = 0  # extra copies handed out near the end of the generation
    duplicates_dropped: int = 0
    stale_dropped: int = 0
    unknown_dropped: int = 0


class GenerationScheduler(Generic[Task, Result]):
    """Assignment and completion of one generation's tasks (ids are their list indices).

    Args:
        generation: the generation the tasks belong to.
        tasks: the tasks, in the order their results will be returned.
        duplicate_tail: hand copies of outstanding tasks to idle hosts once the queue is empty.
        first_id: the tasks before this index belong to earlier rounds of the generation: they are
            not handed out, and results for them are stale; this scheduler's work is the rest.
    """

    def __init__(self, generation: int, tasks: list[Task], *, duplicate_tail: bool = True, first_id: int = 0) -> None:
        if not 0 <= first_id <= len(tasks):
            raise ValueError(f"first_id must be in [0, {len(tasks)}], got {first_id}")
        self.generation = generation
        self.tasks = tasks
        self.duplicate_tail = duplicate_tail
        self.first_id = first_id
        self.pending: deque[int] = deque(range(first_id, len(tasks)))
        self.holders: dict[int, dict[str, float]] = {}  # task id -> host -> time it was assigned
        self.results: dict[int, Result] = {}
        self.stats = SchedulerStats()

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.tasks) - self.first_id

    def assign(self, host: str, credit: int, now: float, *, copy_after: float = 0.0) -> list[tuple[int, Task]]:
        """Up to ``credit`` tasks for ``host``: queued ones first, then copies of outstanding ones.

        Args:
            host: who asks.
            credit: how many tasks it can take.
            now: the current time (any monotonic clock).
            copy_after: copy only tasks outstanding for at least this long.
        """
        given: list[tuple[int, Task]] = []
        while self.pending and len(given) < credit:
            task_id = self.pending.popleft()
            if task_id in self.results:
                continue
            self.holders.setdefault(task_id, {})[host] = now
            given.append((task_id, self.tasks[task_id]))
        if len(given) < credit and self.duplicate_tail and not self.pending:
            given.extend(self._copies(host, credit - len(given), now, copy_after))
        if given:
            self.stats.hosts.add(host)
        return given

    def _copies(self, host: str, count: int, now: float, copy_after: float) -> list[tuple[int, Task]]:
        """Copies of outstanding tasks that ``host`` does not hold, longest outstanding first."""
        candidates = sorted(
            (min(holders.values()), task_id)
            for task_id, holders in self.holders.items()
            if task_id not in self.results and host not in holders and holders and min(holders.values()) <= now - copy_after
        )
        copies = []
        for _, task_id in candidates[:count]:
            self.holders[task_id][host] = now
            self.stats.duplicated += 1
            copies.append((task_id, self.tasks[task_id]))
        return copies

    def complete(self, host: str, generation: int, task_id: int, result: Result) -> Outcome:
        """Records a result reported by ``host``; the first result of a task wins."""
        if generation != self.generation:
            self.stats.stale_dropped += 1
            return Outcome.STALE
        if not (isinstance(task_id, int) and 0 <= task_id < len(self.tasks)):
            self.stats.unknown_dropped += 1
            return Outcome.UNKNOWN
        if task_id < self.first_id:  # a late copy of an earlier round's task: that round is over
            self.stats.stale_dropped += 1
            return Outcome.STALE
        self.holders.get(task_id, {}).pop(host, None)
        if task_id in self.results:
            self.stats.duplicates_dropped += 1
            return Outcome.DUPLICATE
        self.results[task_id] = result
        self.holders.pop(task_id, None)  # holders keeps outstanding tasks only
        return Outcome.ACCEPTED

    def release(self, host: str, task_ids: list[int]) -> None:
        """Takes back tasks assigned to ``host`` that never reached it: each goes back to the front
        of the queue, in order, unless another host holds it or it has a result. Copies handed out
        are no longer counted."""
        for task_id in reversed(task_ids):
            holders = self.holders.get(task_id, {})
            if holders.pop(host, None) is None:
                continue
            if task_id in self.pending or task_id in self.results:
                continue
            if holders:
                self.stats.duplicated -= 1  # it was a copy
            else:
                self.holders.pop(task_id, None)
                self.pending.appendleft(task_id)

    def host_lost(self, host: str) -> int:
        """Forgets ``host``; its unfinished tasks that no other host holds go back to the queue.

        Returns:
            How many tasks were re-queued.
        """
        requeued = 0
        for task_id, holders in self.holders.items():
            if holders.pop(host, None) is not None and task_id not in self.results and not holders:
                self.pending.appendleft(task_id)
                requeued += 1
        self.stats.reissued += requeued
        return requeued

    def ordered_results(self) -> list[Result]:
        """The results of this scheduler's tasks (from ``first_id`` on), in task order.

        Raises:
            RuntimeError: the generation is not complete.
        """
        if not self.done:
            missing = len(self.tasks) - self.first_id - len(self.results)
            raise RuntimeError(f"generation {self.generation}: {missing} tasks have no result")
        return [self.results[i] for i in range(self.first_id, len(self.tasks))]
