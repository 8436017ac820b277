"""Who runs which task of a generation: the master's bookkeeping, without sockets.

One :class:`GenerationScheduler` per generation. Hosts pull tasks with a credit; a host that goes
silent gives its unfinished tasks back to the queue; once the queue is empty, idle hosts receive
copies of the longest-outstanding tasks, so one slow host cannot stall a generation. The first
result for a task wins; later ones, and results of other generations, are counted and dropped.
Since a task's result depends only on the task, none of this changes what the update sees.

A host may report only on tasks it was given (or given a copy of): anything else is refused. A
task that failed on a host goes back to the queue for the others, never to that host again.

A *check* asks for one more copy of a task that has a result, for a host of another source
(:mod:`~esfast.distributed.audit`): checks are handed out before anything else, and the
generation (or round) is done only when every task has a result and no check is open.

A generation may be evaluated in several rounds (the trainer's variable batch): each round is a
scheduler of its own whose task list continues the earlier rounds' (``first_id``), so that a late
result of an earlier round can never be taken for a task of this one. Given tasks, failures,
checks and results are the round's: a result for an earlier round's task is stale (whoever sends
it), and checks sample only this round's tasks.
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
    UNASSIGNED = "unassigned"  # the host was never given the task


@dataclass
class SchedulerStats:
    """Counters of one generation, logged with it."""

    hosts: set[str] = field(default_factory=set)
    reissued: int = 0  # tasks put back in the queue because their host was lost
    duplicated: int = 0  # extra copies handed out near the end of the generation
    duplicates_dropped: int = 0
    stale_dropped: int = 0
    unknown_dropped: int = 0
    unassigned_dropped: int = 0  # results for tasks their sender was never given
    failed: int = 0  # tasks that failed on a host (and went to another)


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
        self.given: dict[int, set[str]] = {}  # task id -> every host that received it (or a copy)
        self.exposed: dict[int, set[str]] = {}  # task id -> hosts given it since its result was last discarded
        self.results: dict[int, Result] = {}
        self.producers: dict[int, str] = {}  # task id -> the host whose result was accepted
        self.failed: dict[int, dict[str, str]] = {}  # task id -> host it failed on -> that host's peer
        self.checks: dict[int, frozenset[str]] = {}  # open checks: task id -> sources that may not take it
        self.check_holders: dict[int, dict[str, float]] = {}  # task id -> host holding a check copy -> since
        self.sources: dict[str, str] = {}  # host -> its source, as it said when it asked for work
        self.stats = SchedulerStats()

    @property
    def complete_results(self) -> bool:
        """Every task of this round (from ``first_id`` on) has a result (checks may still be open)."""
        return len(self.results) == len(self.tasks) - self.first_id

    @property
    def done(self) -> bool:
        return self.complete_results and not self.checks

    def assign(self, host: str, credit: int, now: float, *, copy_after: float = 0.0, source: str | None = None) -> list[tuple[int, Task]]:
        """Up to ``credit`` tasks for ``host``: checks it may take first, then queued tasks, then
        copies of outstanding ones.

        Args:
            host: who asks.
            credit: how many tasks it can take.
            now: the current time (any monotonic clock).
            copy_after: copy only tasks (and checks) outstanding for at least this long.
            source: who vouches for the host's results (default: the host itself); a check is
                given only to a host of a source it does not exclude.
        """
        self.sources[host] = host if source is None else source
        given = self._checks(host, credit, now, copy_after) if self.checks else []
        skipped: list[int] = []  # failed on this host: left for the others, in their place
        failed = self.failed
        while self.pending and len(given) < credit:
            task_id = self.pending.popleft()
            if task_id in self.results:
                continue
            if failed and host in failed.get(task_id, ()):
                skipped.append(task_id)
                continue
            self._give(task_id, host, now)
            given.append((task_id, self.tasks[task_id]))
        self.pending.extendleft(reversed(skipped))
        if len(given) < credit and self.duplicate_tail and len(self.pending) == len(skipped):
            given.extend(self._copies(host, credit - len(given), now, copy_after))
        if given:
            self.stats.hosts.add(host)
        return given

    def _may_check(self, host: str, task_id: int) -> bool:
        """A host may take a check of a task it was not given (since the task's result was last
        discarded), if its source is not excluded."""
        return self.sources[host] not in self.checks[task_id] and host not in self.exposed.get(task_id, ())

    def _checks(self, host: str, credit: int, now: float, copy_after: float) -> list[tuple[int, Task]]:
        """Check copies for ``host``: open checks nobody holds, then those held for longer than ``copy_after``."""
        given: list[tuple[int, Task]] = []
        for fresh in (True, False):
            for task_id in list(self.checks):
                if len(given) >= credit:
                    return given
                holders = self.check_holders.get(task_id, {})
                if not self._may_check(host, task_id):
                    continue
                if (not holders) if fresh else (holders and min(holders.values()) <= now - copy_after):
                    self.check_holders.setdefault(task_id, {})[host] = now
                    self.given.setdefault(task_id, set()).add(host)
                    self.exposed.setdefault(task_id, set()).add(host)
                    given.append((task_id, self.tasks[task_id]))
        return given

    def request_check(self, task_id: int, exclude: frozenset[str]) -> None:
        """Asks for one more copy of finished task ``task_id`` (of this round), for a host of a source not in ``exclude``."""
        if not self.first_id <= task_id < len(self.tasks):
            raise ValueError(f"task {task_id} is not a task of this round ({self.first_id} to {len(self.tasks) - 1})")
        self.checks[task_id] = exclude
        self.check_holders.pop(task_id, None)

    def close_check(self, task_id: int) -> None:
        """The check of ``task_id`` has its opinion (or is given up)."""
        self.checks.pop(task_id, None)
        self.check_holders.pop(task_id, None)

    def check_takers(self, task_id: int, hosts: dict[str, str]) -> bool:
        """Whether any of ``hosts`` (host -> source) holds, or may take, the open check of ``task_id``."""
        if self.check_holders.get(task_id):
            return True
        exclude = self.checks[task_id]
        return any(source not in exclude and host not in self.exposed.get(task_id, ()) for host, source in hosts.items())

    def replace(self, task_id: int, host: str, result: Result) -> None:
        """Gives task ``task_id`` another result (the one its first host contradicted)."""
        self.results[task_id] = result
        self.producers[task_id] = host

    def discard(self, host: str, keep: set[int]) -> list[int]:
        """Takes back the results ``host`` produced in this generation, except those in ``keep``
        (confirmed by another source): their tasks go back to the front of the queue, in order,
        and their checks close. The host is forgotten as a holder (see :meth:`host_lost`).

        Returns:
            The tasks whose results were discarded.
        """
        discarded = sorted(t for t, producer in self.producers.items() if producer == host and t not in keep)
        for task_id in reversed(discarded):
            del self.results[task_id]
            del self.producers[task_id]
            self.close_check(task_id)
            self.exposed.pop(task_id, None)  # a host that checked the discarded result may check the new one
            self.pending.appendleft(task_id)
        self.host_lost(host)
        return discarded

    def _give(self, task_id: int, host: str, now: float) -> None:
        # Most tasks are given once, to one host: new containers then, without setdefault's spare ones.
        if (holders := self.holders.get(task_id)) is None:
            self.holders[task_id] = {host: now}
        else:
            holders[host] = now
        if (given := self.given.get(task_id)) is None:
            self.given[task_id] = {host}
        else:
            given.add(host)
        if (exposed := self.exposed.get(task_id)) is None:
            self.exposed[task_id] = {host}
        else:
            exposed.add(host)

    def _copies(self, host: str, count: int, now: float, copy_after: float) -> list[tuple[int, Task]]:
        """Copies of outstanding tasks that ``host`` does not hold, longest outstanding first."""
        candidates = sorted(
            (min(holders.values()), task_id)
            for task_id, holders in self.holders.items()
            if task_id not in self.results
            and host not in holders
            and host not in self.failed.get(task_id, ())
            and holders
            and min(holders.values()) <= now - copy_after
        )
        copies = []
        for _, task_id in candidates[:count]:
            self._give(task_id, host, now)
            self.stats.duplicated += 1
            copies.append((task_id, self.tasks[task_id]))
        return copies

    def was_given(self, host: str, task_id: int) -> bool:
        """Whether ``host`` received task ``task_id`` (or a copy) in this generation."""
        return host in self.given.get(task_id, ())

    def complete(self, host: str, generation: int, task_id: int, result: Result) -> Outcome:
        """Records a result reported by ``host``; the first result of a task wins. A result for a
        task the host was never given is refused (:attr:`Outcome.UNASSIGNED`)."""
        if generation != self.generation:
            self.stats.stale_dropped += 1
            return Outcome.STALE
        if not (isinstance(task_id, int) and 0 <= task_id < len(self.tasks)):
            self.stats.unknown_dropped += 1
            return Outcome.UNKNOWN
        if task_id < self.first_id:  # a late copy of an earlier round's task: that round is over
            self.stats.stale_dropped += 1
            return Outcome.STALE
        if not self.was_given(host, task_id):
            self.stats.unassigned_dropped += 1
            return Outcome.UNASSIGNED
        return self.record(host, task_id, result)

    def record(self, host: str, task_id: int, result: Result) -> Outcome:
        """:meth:`complete` for a result the caller has checked: of this generation and round, of
        a task ``host`` was given (ACCEPTED or DUPLICATE). The master checks a whole message at
        once, so its results skip the per-result checks here."""
        holders = self.holders.get(task_id)
        if task_id in self.results:
            if holders is not None:
                holders.pop(host, None)
            if (checkers := self.check_holders.get(task_id)) is not None:
                checkers.pop(host, None)
            self.stats.duplicates_dropped += 1
            return Outcome.DUPLICATE
        if (checkers := self.check_holders.get(task_id)) is not None:
            checkers.pop(host, None)
        self.results[task_id] = result
        self.producers[task_id] = host
        if holders is not None:
            del self.holders[task_id]  # holders keeps outstanding tasks only
        return Outcome.ACCEPTED

    def fail(self, host: str, task_id: int, peer: str) -> bool:
        """Task ``task_id`` failed on ``host`` (of ``peer``: the machine or key it speaks for): it
        goes back to the front of the queue for other hosts, unless another holds it, and is never
        given to ``host`` again in this generation.

        Returns:
            False (and nothing changes) if ``host`` was not given the task or it has a result.
        """
        if (
            not (self.first_id <= task_id < len(self.tasks))
            or not self.was_given(host, task_id)
            or task_id in self.results
            or host in self.failed.get(task_id, ())
        ):
            return False
        self.failed.setdefault(task_id, {})[host] = peer
        self.stats.failed += 1
        holders = self.holders.get(task_id, {})
        if holders.pop(host, None) is not None and not holders:
            self.holders.pop(task_id, None)
            self.pending.appendleft(task_id)
        return True

    def release(self, host: str, task_ids: list[int]) -> None:
        """Takes back tasks assigned to ``host`` that never reached it: each goes back to the front
        of the queue, in order, unless another host holds it or it has a result. Copies handed out
        are no longer counted."""
        for task_id in reversed(task_ids):
            if self.check_holders.get(task_id, {}).pop(host, None) is not None:  # a check copy: the check stays open
                self.given.get(task_id, set()).discard(host)
                self.exposed.get(task_id, set()).discard(host)
                continue
            holders = self.holders.get(task_id, {})
            if holders.pop(host, None) is None:
                continue
            self.given.get(task_id, set()).discard(host)  # it never reached the host
            self.exposed.get(task_id, set()).discard(host)
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
        for check_holders in self.check_holders.values():  # its check copies go to others
            check_holders.pop(host, None)
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
