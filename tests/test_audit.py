"""Audits: results compared bit for bit, and what a mismatch leads to."""

from __future__ import annotations

import random

import numpy as np
import pytest

from esfast.distributed.audit import AuditBook, Opinion, Ruling, describe, same_result
from esfast.tasks import EvalResult, PairResult


def pair(ret: float = 1.0, total: float | None = 2.0) -> PairResult:
    sums = None if total is None else np.array([total, 1.0])
    return PairResult(3, (ret, -1.0), (10, 10), sums, None if sums is None else np.square(sums), 0 if total is None else 20)


def test_results_are_compared_bit_for_bit() -> None:
    assert same_result(pair(), pair()) and same_result(EvalResult(0, 1.5, 3), EvalResult(0, 1.5, 3))
    assert not same_result(pair(1.0), pair(np.nextafter(1.0, 2.0)))
    assert not same_result(pair(0.0), pair(-0.0))  # equal numbers, other bits
    assert not same_result(pair(total=2.0), pair(total=None)) and not same_result(pair(total=2.0), pair(total=2.0 + 1e-15))
    assert not same_result(EvalResult(0, 1.5, 3), EvalResult(0, 1.5, 4)) and not same_result(pair(), None)
    assert same_result(None, None)
    assert "returns (1.0, -1.0), lengths (10, 10), observation sums" in describe(pair()) and describe(None) == "a failure"


A, B, C, D = (Opinion(f"w{n}", f"source{n}", pair()) for n in range(1, 5))
WRONG = Opinion("w2", "source2", pair(5.0))


def test_agreement_verifies_and_the_same_source_is_not_heard() -> None:
    book = AuditBook(1.0, "evict")
    assert book.opinion(0, A, Opinion("w9", "source1", pair(5.0))) == Ruling()  # A's own source: not independent
    assert book.opinion(0, A, B) == Ruling(compared=True) and book.verified == {0} and (book.audits, book.mismatches) == (1, 0)


def test_a_mismatch_is_only_counted_under_log() -> None:
    book = AuditBook(0.5, "log")
    assert book.opinion(0, A, WRONG) == Ruling(compared=True, mismatch=True) and not book.disputes and book.mismatches == 1


def test_a_third_source_evicts_the_dissenter() -> None:
    book = AuditBook(1.0, "evict")
    assert book.opinion(0, A, WRONG) == Ruling(compared=True, mismatch=True, third=frozenset({"source1", "source2"}))
    assert book.opinion(0, A, Opinion("w8", "source2", pair())) == Ruling()  # the dissenter's source again: not a third
    assert book.opinion(0, A, C) == Ruling(compared=True, evict=WRONG) and book.verified == {0}


def test_a_third_source_evicts_the_first_host_and_keeps_the_dissent() -> None:
    book = AuditBook(1.0, "evict")
    liar = Opinion("w1", "source1", pair(5.0))
    book.opinion(0, liar, B)
    assert book.opinion(0, liar, C) == Ruling(compared=True, mismatch=True, evict=liar, replace=B)
    assert (book.audits, book.mismatches) == (2, 2)


def test_three_different_results_evict_nobody() -> None:
    book = AuditBook(1.0, "evict")
    book.opinion(0, A, WRONG)
    assert book.opinion(0, A, Opinion("w3", "source3", pair(7.0))).undecided
    book.opinion(1, A, Opinion("w2", "source2", None))  # a failure disputes a result too
    assert book.opinion(1, A, Opinion("w3", "source3", None)).undecided  # two failures do not make a result


def test_the_sample_takes_its_fraction() -> None:
    assert not any(AuditBook(0.0).sample() for _ in range(100)) and all(AuditBook(1.0).sample() for _ in range(100))
    book = AuditBook(0.25, rng=random.Random(0))
    assert 200 < sum(book.sample() for _ in range(1000)) < 300


@pytest.mark.parametrize(("fraction", "action"), [(-0.1, "log"), (1.5, "log"), (0.1, "ban")])
def test_bad_settings_are_refused(fraction: float, action: str) -> None:
    with pytest.raises(ValueError, match="audit"):
        AuditBook(fraction, action)


def test_an_evicted_hosts_disputes_end_and_the_results_they_disputed_stand() -> None:
    book = AuditBook(1.0, "evict")
    book.opinion(0, A, WRONG)  # w2 disputes task 0
    book.opinion(1, Opinion("w2", "source2", pair(5.0)), C)  # task 1's result, w2's, is disputed by w3
    assert book.drop_host("w2") == [0] and set(book.disputes) == {1}
    assert book.opinion(0, A, Opinion("w4", "source4", pair())) == Ruling(compared=True)  # an audit again, not a third opinion
