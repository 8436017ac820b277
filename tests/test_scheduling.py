"""The master's task bookkeeping: pulling, losses, tail duplicates, stale and duplicate results."""

from __future__ import annotations

import numpy as np
import pytest

from esfast.distributed.scheduling import GenerationScheduler, Outcome


def scheduler(n: int = 5, **kwargs: bool) -> GenerationScheduler[str, float]:
    return GenerationScheduler(3, [f"t{i}" for i in range(n)], **kwargs)


def test_hosts_pull_in_order_up_to_their_credit() -> None:
    s = scheduler()
    assert s.assign("a", 2, now=0.0) == [(0, "t0"), (1, "t1")]
    assert s.assign("b", 2, now=0.0) == [(2, "t2"), (3, "t3")]
    assert s.assign("a", 5, now=1.0)[0] == (4, "t4")
    assert s.stats.hosts == {"a", "b"}


def test_results_come_back_in_task_order_whatever_the_completion_order() -> None:
    s = scheduler(4, duplicate_tail=False)
    for host in "ab":
        s.assign(host, 2, now=0.0)
    for task_id in (3, 0, 2, 1):
        assert s.complete("a" if task_id < 2 else "b", 3, task_id, float(task_id)) is Outcome.ACCEPTED
    assert s.done and s.ordered_results() == [0.0, 1.0, 2.0, 3.0]


def test_first_result_wins_and_others_are_counted() -> None:
    s = scheduler(1)
    s.assign("a", 1, now=0.0)
    s.assign("b", 1, now=1.0)  # queue empty: b gets a copy of task 0
    assert s.stats.duplicated == 1
    assert s.complete("b", 3, 0, 2.0) is Outcome.ACCEPTED
    assert s.complete("a", 3, 0, 1.0) is Outcome.DUPLICATE
    assert s.ordered_results() == [2.0] and s.stats.duplicates_dropped == 1


def test_stale_and_unknown_results_are_dropped() -> None:
    s = scheduler(2)
    s.assign("a", 2, now=0.0)
    assert s.complete("a", 2, 0, 1.0) is Outcome.STALE
    assert s.complete("a", 3, 7, 1.0) is Outcome.UNKNOWN
    assert s.complete("a", 3, -1, 1.0) is Outcome.UNKNOWN
    assert (s.stats.stale_dropped, s.stats.unknown_dropped) == (1, 2)
    assert not s.done
    with pytest.raises(RuntimeError, match="2 tasks have no result"):
        s.ordered_results()


def test_a_lost_host_gives_back_its_unfinished_tasks() -> None:
    s = scheduler(4, duplicate_tail=False)
    s.assign("a", 3, now=0.0)
    s.assign("b", 1, now=0.0)
    s.complete("a", 3, 0, 0.0)
    assert s.host_lost("a") == 2 and s.stats.reissued == 2
    again = s.assign("b", 5, now=1.0)
    assert sorted(task_id for task_id, _ in again) == [1, 2]
    for task_id in (1, 2, 3):
        s.complete("b", 3, task_id, float(task_id))
    assert s.done and s.ordered_results() == [0.0, 1.0, 2.0, 3.0]


def test_a_lost_host_whose_tasks_others_hold_requeues_nothing() -> None:
    s = scheduler(1)
    s.assign("a", 1, now=0.0)
    s.assign("b", 1, now=1.0)  # copy
    assert s.host_lost("a") == 0
    assert s.assign("c", 1, now=2.0) == [(0, "t0")]  # a copy for c, since only b holds it


def test_tail_copies_go_to_the_longest_outstanding_tasks_first() -> None:
    s = scheduler(3)
    s.assign("a", 1, now=0.0)
    s.assign("b", 1, now=5.0)
    s.assign("c", 1, now=9.0)
    copies = s.assign("d", 2, now=10.0)
    assert [task_id for task_id, _ in copies] == [0, 1]
    assert s.assign("a", 5, now=11.0) == [(1, "t1"), (2, "t2")]  # never a copy of its own task


def test_random_schedules_always_complete_with_the_same_results() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 30))
        s = scheduler(n, duplicate_tail=bool(trial % 2))
        hosts = ["h0", "h1", "h2"]
        held: dict[str, list[int]] = {h: [] for h in hosts}
        now = 0.0
        while not s.done:
            now += 1
            host = hosts[int(rng.integers(len(hosts)))]
            action = rng.random()
            if action < 0.4:
                held[host] += [task_id for task_id, _ in s.assign(host, int(rng.integers(1, 4)), now)]
            elif action < 0.9 and held[host]:
                task_id = held[host].pop(int(rng.integers(len(held[host]))))
                s.complete(host, 3, task_id, float(task_id))
            elif action >= 0.97:
                s.host_lost(host)
                held[host] = []
        assert s.ordered_results() == [float(i) for i in range(n)]


def test_tail_copies_wait_until_tasks_are_old_enough() -> None:
    s = scheduler(2)
    s.assign("a", 2, now=0.0)
    assert s.assign("b", 2, now=1.0, copy_after=5.0) == []
    assert s.assign("b", 1, now=5.0, copy_after=5.0) == [(0, "t0")]
    assert s.stats.duplicated == 1
    s.complete("b", 3, 0, 0.5)
    assert 0 not in s.holders  # only outstanding tasks are held
    assert s.complete("a", 3, 0, 0.7) is Outcome.DUPLICATE and s.results[0] == 0.5


def test_tasks_that_never_reached_their_host_go_back_to_the_front() -> None:
    scheduler = GenerationScheduler(0, list("abcd"))
    assert [i for i, _ in scheduler.assign("w1", 3, 0.0)] == [0, 1, 2]
    scheduler.release("w1", [1, 2])
    assert list(scheduler.pending) == [1, 2, 3] and set(scheduler.holders) == {0}
    assert [i for i, _ in scheduler.assign("w2", 2, 1.0)] == [1, 2]


def test_a_released_copy_is_not_counted_and_the_original_holder_keeps_it() -> None:
    scheduler = GenerationScheduler(0, list("ab"))
    scheduler.assign("w1", 2, 0.0)
    copies = scheduler.assign("w2", 1, 5.0, copy_after=1.0)
    assert [i for i, _ in copies] == [0] and scheduler.stats.duplicated == 1
    scheduler.release("w2", [0])
    assert scheduler.stats.duplicated == 0 and not scheduler.pending and set(scheduler.holders[0]) == {"w1"}
    scheduler.release("w2", [1])  # never held by w2: nothing changes
    assert set(scheduler.holders[1]) == {"w1"}


def test_a_result_counts_only_from_a_host_given_the_task() -> None:
    s = scheduler(3, duplicate_tail=False)
    s.assign("a", 1, now=0.0)
    assert s.complete("b", 3, 0, 9.0) is Outcome.UNASSIGNED and s.stats.unassigned_dropped == 1
    assert s.complete("a", 3, 1, 9.0) is Outcome.UNASSIGNED  # a task a holds none of
    assert s.complete("a", 3, 0, 1.0) is Outcome.ACCEPTED and s.producers == {0: "a"}
    s.assign("b", 1, now=0.0)
    s.release("b", [1])  # never reached b: b was not given it after all
    assert not s.was_given("b", 1) and s.complete("b", 3, 1, 9.0) is Outcome.UNASSIGNED


def test_a_failed_task_goes_to_another_host_never_back_to_its_own() -> None:
    s = scheduler(3, duplicate_tail=True)
    assert s.assign("a", 2, now=0.0) == [(0, "t0"), (1, "t1")]
    assert not s.fail("b", 0, "peer-b")  # b was not given it
    assert s.fail("a", 0, "peer-a") and not s.fail("a", 0, "peer-a") and s.stats.failed == 1
    assert s.failed == {0: {"a": "peer-a"}} and list(s.pending) == [0, 2]
    assert s.assign("a", 5, now=10.0) == [(2, "t2")]  # not task 0 again, nor a copy of it
    assert list(s.pending) == [0]
    assert s.assign("b", 1, now=10.0) == [(0, "t0")]
    s.complete("b", 3, 0, 1.0)
    assert not s.fail("b", 0, "peer-b")  # it has a result


def test_checks_go_first_to_hosts_of_another_source_and_hold_the_generation() -> None:
    s = scheduler(2, duplicate_tail=False)
    s.assign("a", 2, now=0.0, source="A")
    s.complete("a", 3, 0, 1.0)
    s.complete("a", 3, 1, 2.0)
    assert s.complete_results and s.done
    s.request_check(0, frozenset({"A"}))
    assert not s.done
    assert s.assign("a2", 5, now=1.0, source="A") == []  # the same source: not an independent check
    assert s.assign("b", 5, now=1.0, source="B") == [(0, "t0")] and s.was_given("b", 0)
    assert s.assign("c", 5, now=1.5, source="C", copy_after=10.0) == []  # held by b, not for long
    assert s.assign("c", 5, now=20.0, source="C", copy_after=10.0) == [(0, "t0")]  # b is slow: another copy
    assert s.complete("b", 3, 0, 1.0) is Outcome.DUPLICATE
    s.close_check(0)
    assert s.done and s.ordered_results() == [1.0, 2.0]


def test_discarded_results_run_again_and_confirmed_ones_stay() -> None:
    s = scheduler(3, duplicate_tail=False)
    s.assign("liar", 3, now=0.0)
    for task_id in range(3):
        s.complete("liar", 3, task_id, 9.0)
    s.request_check(2, frozenset({"liar"}))
    s.replace(1, "honest", 1.0)
    assert s.discard("liar", keep={0}) == [2] and list(s.pending) == [2] and not s.checks
    assert s.results == {0: 9.0, 1: 1.0} and s.assign("honest", 3, now=1.0) == [(2, "t2")]


def test_a_later_round_continues_the_ids_and_drops_results_of_earlier_ones() -> None:
    """A generation in rounds: this round's tasks are ids 3 and 4 of the generation's list; a late
    result of an earlier round's task is stale, never taken for one of this round's."""
    s = GenerationScheduler(3, [f"t{i}" for i in range(5)], first_id=3)
    assert s.assign("a", 5, now=0.0) == [(3, "t3"), (4, "t4")]
    assert s.complete("b", 3, 0, 9.0) is Outcome.STALE and s.stats.stale_dropped == 1
    assert s.complete("a", 3, 4, 4.0) is Outcome.ACCEPTED and not s.done
    assert s.host_lost("a") == 1 and s.assign("b", 5, now=1.0) == [(3, "t3")]
    assert s.complete("b", 3, 3, 3.0) is Outcome.ACCEPTED
    assert s.done and s.ordered_results() == [3.0, 4.0]
    assert GenerationScheduler(3, ["t0"], first_id=1).done
    with pytest.raises(ValueError, match=r"first_id must be in \[0, 1\], got 2"):
        GenerationScheduler(3, ["t0"], first_id=2)


def test_a_later_round_gives_checks_failures_and_discards_only_of_its_own_tasks() -> None:
    """Round 2 of a generation (ids 2 and 3): a result for round 1's task 0 is stale even from a
    host never given it (stale is judged first), and given, failed, checked and discarded tasks
    are the round's only."""
    s = GenerationScheduler(3, [f"t{i}" for i in range(4)], duplicate_tail=False, first_id=2)
    assert s.complete("x", 3, 0, 9.0) is Outcome.STALE and s.stats.stale_dropped == 1 and s.stats.unassigned_dropped == 0
    assert s.complete("x", 3, 2, 9.0) is Outcome.UNASSIGNED and s.stats.unassigned_dropped == 1
    assert not s.fail("x", 1, "peer-x")  # an earlier round's task: nothing changes
    assert s.assign("a", 2, now=0.0, source="A") == [(2, "t2"), (3, "t3")]
    s.complete("a", 3, 2, 2.0)
    s.complete("a", 3, 3, 3.0)
    assert s.complete_results and s.done
    with pytest.raises(ValueError, match="not a task of this round"):
        s.request_check(1, frozenset({"A"}))
    s.request_check(3, frozenset({"A"}))
    assert not s.done and s.assign("b", 5, now=1.0, source="B") == [(3, "t3")]
    assert s.discard("a", keep=set()) == [2, 3] and not s.checks and list(s.pending) == [2, 3]
    assert s.assign("b", 5, now=2.0, source="B") == [(2, "t2"), (3, "t3")]  # the round's tasks run again
    assert s.complete("b", 3, 2, 2.0) is Outcome.ACCEPTED and s.complete("b", 3, 3, 3.0) is Outcome.ACCEPTED
    assert s.done and s.ordered_results() == [2.0, 3.0]
