"""Audits: another host repeats finished tasks, and results are compared bit for bit.

Every episode is a pure function of (θ, offset, episode seed, config), so two honest hosts give
the same bits for the same task. With ``--audit FRACTION`` the master samples that fraction of
the tasks whose result it has accepted (at random, after the result arrived, so that no host can
know in advance) and gives each to a host of another *source* (another key under ``--keys``,
another connection without). Copies of a task that come back anyway (tail copies) are compared
too. An opinion that differs is a mismatch, logged with both hosts and the task; under
``--audit-action evict`` a third source decides: the host it contradicts is evicted, and its
results of the generation that no other source confirmed are run again, so the generation's
results are those of honest hosts. The generation ends only when its audits have.

:class:`AuditBook` is that bookkeeping for one generation, without sockets: it is told each
opinion and says what follows (:class:`Ruling`); the master dispatches the copies it asks for.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from esfast.tasks import PairResult, Result

__all__ = ["AUDIT_ACTIONS", "AuditBook", "Opinion", "Ruling", "describe", "same_result"]

AUDIT_ACTIONS = ("log", "evict")


class Opinion(NamedTuple):
    """What one host said of a task: its result, or None if it failed or reported the impossible."""

    host: str  # the scheduler's host id (the connection)
    source: str  # who vouches for it: its key's name under --keys, else the connection
    result: Result | None


class Ruling(NamedTuple):
    """What follows an opinion.

    ``compared``: it was compared with the task's result (an audit); ``mismatch``: and differed;
    ``third``: a third source must repeat the task (the sources to exclude); ``evict``: the host
    to evict; ``replace``: the opinion whose result the task now has (the evicted host's was wrong);
    ``undecided``: three sources disagree, nobody is evicted.
    """

    compared: bool = False
    mismatch: bool = False
    third: frozenset[str] = frozenset()
    evict: Opinion | None = None
    replace: Opinion | None = None
    undecided: bool = False


def same_result(a: Result | None, b: Result | None) -> bool:
    """Whether two results are equal bit for bit (returns, lengths, observation counts and sums)."""
    if a is None or b is None:
        return a is b
    return _key(a) == _key(b)


def _key(result: Result) -> tuple[object, ...]:
    if isinstance(result, PairResult):
        sums = tuple(None if a is None else np.ascontiguousarray(a, dtype="<f8").tobytes() for a in (result.obs_sum, result.obs_sumsq))
        returns = np.asarray(result.returns, dtype="<f8").tobytes()
        return ("pair", result.pair, returns, tuple(result.lengths), result.obs_count, sums)
    return ("eval", result.index, np.float64(result.ret).tobytes(), result.length)


def describe(result: Result | None) -> str:
    """A short text of a result for a log line (observation sums as a digest)."""
    if result is None:
        return "a failure"
    if isinstance(result, PairResult):
        sums = ""
        if result.obs_sum is not None and result.obs_sumsq is not None:
            digest = hashlib.sha256(np.ascontiguousarray(result.obs_sum).tobytes() + np.ascontiguousarray(result.obs_sumsq).tobytes())
            sums = f", observation sums {digest.hexdigest()[:12]}"
        return f"returns ({result.returns[0]!r}, {result.returns[1]!r}), lengths {tuple(result.lengths)}{sums}"
    return f"return {result.ret!r}, length {result.length}"


@dataclass
class _Dispute:
    accepted: Opinion  # the result the task has
    dissent: Opinion  # the opinion that differed


@dataclass
class AuditBook:
    """One generation's audits.

    Args:
        fraction: the share of accepted results to audit (0: only copies that come back anyway).
        action: ``"log"`` (count and log mismatches) or ``"evict"`` (ask a third source and
            evict the host it contradicts).
        rng: where the sample comes from (default: the operating system's entropy, which no peer
            can predict).
    """

    fraction: float = 0.0
    action: str = "log"
    rng: random.Random = field(default_factory=random.SystemRandom)
    audits: int = 0  # opinions compared with the task's result
    mismatches: int = 0
    verified: set[int] = field(default_factory=set)  # tasks whose result a second source confirmed
    disputes: dict[int, _Dispute] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in AUDIT_ACTIONS:
            raise ValueError(f"audit action must be one of {', '.join(AUDIT_ACTIONS)}, got {self.action!r}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"the audit fraction must be in [0, 1], got {self.fraction!r}")

    def sample(self) -> bool:
        """Whether to audit a result just accepted."""
        return self.fraction > 0 and self.rng.random() < self.fraction

    def opinion(self, task_id: int, accepted: Opinion, new: Opinion) -> Ruling:
        """A further opinion on a task that has a result (``accepted``: who gave it, and what).

        An opinion of the source of the accepted result, or of one already heard in a dispute,
        is not independent and is ignored (``compared`` False).
        """
        dispute = self.disputes.get(task_id)
        heard = {accepted.source} | ({dispute.dissent.source} if dispute is not None else set())
        if new.source in heard:
            return Ruling()
        self.audits += 1
        if dispute is None:
            if same_result(accepted.result, new.result):
                self.verified.add(task_id)
                return Ruling(compared=True)
            self.mismatches += 1
            if self.action != "evict":
                return Ruling(compared=True, mismatch=True)
            self.disputes[task_id] = _Dispute(accepted, new)
            return Ruling(compared=True, mismatch=True, third=frozenset(heard | {new.source}))
        # A third source on a disputed task decides.
        del self.disputes[task_id]
        if same_result(dispute.accepted.result, new.result):
            self.verified.add(task_id)
            return Ruling(compared=True, evict=dispute.dissent)
        self.mismatches += 1
        if same_result(dispute.dissent.result, new.result) and dispute.dissent.result is not None:
            self.verified.add(task_id)
            return Ruling(compared=True, mismatch=True, evict=dispute.accepted, replace=dispute.dissent)
        return Ruling(compared=True, mismatch=True, undecided=True)

    def drop_host(self, host: str) -> list[int]:
        """An evicted host's word no longer counts: the disputes it raised end (the results they
        disputed stand). Returns those tasks."""
        ended = [task_id for task_id, dispute in self.disputes.items() if dispute.dissent.host == host]
        for task_id in ended:
            del self.disputes[task_id]
        return ended

    def forget(self, task_id: int) -> None:
        """The task's result was discarded (its host was evicted): what was said of it no longer holds."""
        self.verified.discard(task_id)
        self.disputes.pop(task_id, None)
