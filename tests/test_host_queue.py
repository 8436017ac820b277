"""A worker host's queue, credit and job bookkeeping, without processes or sockets."""

from __future__ import annotations

from esfast.distributed.evaluator import Job
from esfast.distributed.host_queue import PREFETCH, HostQueue, QueuedTask, batches
from esfast.tasks import EvalTask, PairTask


def tasks(count: int, start: int = 0) -> list[tuple[int, PairTask]]:
    return [(i, PairTask(i, 10 * i, 100 + i, False)) for i in range(start, start + count)]


def started(procs: int) -> HostQueue:
    queue = HostQueue(procs)
    for index in range(procs):
        queue.evaluator_ready(index)
    return queue


def test_credit_counts_what_is_held_and_asked_for() -> None:
    queue = started(3)
    assert queue.take_credit() == PREFETCH * 3
    assert queue.take_credit() == 0  # asked for, not yet received
    queue.theta_arrived(0)
    assert queue.tasks_arrived(0, tasks(4), 4) == 4
    assert queue.advertised == PREFETCH * 3 - 4 and queue.held() == 4
    assert queue.take_credit() == 0
    queue.assign()
    queue.job_replied(0)
    assert queue.take_credit() == 1


def test_idle_evaluators_get_tasks_first_then_one_waiting_job_each() -> None:
    queue = started(3)
    queue.theta_arrived(5)
    queue.tasks_arrived(5, tasks(5), 5)
    sent = queue.assign()
    assert [index for index, _ in sent] == [0, 1, 2, 0, 1]
    assert [job.task_id for _, job in sent] == [0, 1, 2, 3, 4]
    assert all(job == Job(queue.epoch, 5, job.task_id, job.task) for _, job in sent)
    assert [len(jobs) for jobs in queue.jobs] == [2, 2, 1] and not queue.queue


def test_an_evaluator_not_yet_started_gets_nothing() -> None:
    queue = HostQueue(2)
    queue.evaluator_ready(1)
    queue.theta_arrived(0)
    queue.tasks_arrived(0, tasks(3), 3)
    assert [index for index, _ in queue.assign()] == [1, 1]


def test_tasks_without_their_theta_wait_and_are_asked_for() -> None:
    queue = started(1)
    queue.theta_arrived(0)
    queue.tasks_arrived(1, tasks(2), 2)
    assert queue.assign() == [] and queue.missing_theta() == 1 and queue.held() == 2
    queue.theta_arrived(1)
    assert queue.missing_theta() is None
    assert [job.generation for _, job in queue.assign()] == [1, 1]


def test_stale_tasks_are_dropped_and_their_credit_comes_back() -> None:
    queue = started(1)
    queue.take_credit()
    queue.theta_arrived(3)
    assert queue.tasks_arrived(2, tasks(2), 2) == 0
    assert queue.held() == 0 and queue.take_credit() == PREFETCH
    queue.tasks_arrived(3, tasks(2), 2)
    queue.theta_arrived(4)  # generation 3 is over: its queued tasks go
    assert queue.held() == 0


def test_malformed_tasks_return_their_credit() -> None:
    queue = started(2)
    assert queue.take_credit() == 4
    queue.theta_arrived(0)
    assert queue.tasks_arrived(0, tasks(1), 3) == 1  # two of three did not parse
    assert queue.take_credit() == 2  # 4, less one held and one still asked for


def test_a_dead_evaluator_gives_its_jobs_back_in_order() -> None:
    queue = started(2)
    queue.theta_arrived(0)
    queue.tasks_arrived(0, tasks(5), 5)
    queue.assign()  # evaluator 0: tasks 0, 2; evaluator 1: tasks 1, 3; queued: 4
    assert queue.evaluator_lost(0) == 2
    assert [item.task_id for item in queue.queue] == [0, 2, 4]
    assert not queue.ready[0] and not queue.jobs[0]
    queue.evaluator_ready(0)
    assert [(index, job.task_id) for index, job in queue.assign()] == [(0, 0), (0, 2)]


def test_jobs_of_an_earlier_connection_are_not_reported_or_requeued() -> None:
    queue = started(1)
    queue.theta_arrived(0)
    queue.tasks_arrived(0, [(0, EvalTask(0, 7))], 1)
    queue.assign()
    old = queue.epoch
    queue.reconnected()
    assert queue.generation == -1 and not queue.queue and queue.advertised == 0
    assert queue.held() == 1  # the job still runs in the evaluator
    assert queue.job_replied(0) is None and old < queue.epoch
    queue.theta_arrived(0)
    queue.tasks_arrived(0, tasks(1), 1)
    queue.assign()
    assert queue.evaluator_lost(0) == 1
    assert queue.queue[0] == QueuedTask(0, 0, tasks(1)[0][1])


def test_credit_not_sent_is_not_counted() -> None:
    queue = started(2)
    credit = queue.take_credit()
    queue.credit_not_sent(credit)
    assert queue.take_credit() == credit


def test_batches() -> None:
    assert batches(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert batches([], 3) == []


def test_a_skipped_job_of_the_current_generation_is_queued_again() -> None:
    queue = started(1)
    queue.theta_arrived(2)
    queue.tasks_arrived(2, tasks(2), 2)
    first = queue.assign()[0][1]
    job = queue.job_replied(0)
    assert job == first
    queue.requeue(job)
    assert [item.task_id for item in queue.queue] == [0] and [j.task_id for j in queue.jobs[0]] == [1]
    queue.theta_arrived(3)
    queue.requeue(job)  # of a finished generation now: stale, not queued
    assert not queue.queue
