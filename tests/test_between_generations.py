"""The master's socket between generations: heartbeats go on, what arrives is queued (bounded) for the next one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from esfast.distributed import between_generations
from esfast.distributed.between_generations import BetweenGenerations
from esfast.distributed.router import Router


@pytest.fixture
def router() -> Iterator[Router]:
    router = Router("tcp://127.0.0.1:0", keys=None, max_message_bytes=1024)
    yield router
    router.close()


@pytest.fixture
def dealer(router: Router) -> Iterator[zmq.Socket[bytes]]:
    """A peer connected to ``router``."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(router.endpoint)
    yield dealer
    dealer.close()
    context.term()


def _start_and_send(between: BetweenGenerations, dealer: zmq.Socket[bytes], count: int) -> None:
    """Starts the thread, then sends it ``count`` one-byte messages: b"0", b"1", ..."""
    between.start()
    for number in range(count):
        dealer.send(b"%d" % number)


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_heartbeats_go_on_and_messages_wait_in_order(router: Router, dealer: zmq.Socket[bytes]) -> None:
    beats: list[float] = []
    between = BetweenGenerations(router, beats.append, lambda now: 10)
    try:
        _start_and_send(between, dealer, 5)
        _wait_for(lambda: len(between.pending) == 5)
        _wait_for(lambda: len(beats) >= 3)
        between.stop()
        assert between.thread is None and len(beats) >= 3
        assert [frames[1].bytes for frames in between.take()] == [b"0", b"1", b"2", b"3", b"4"]
        assert between.take() == [] and between.pending_bytes == 0
        count = len(beats)
        time.sleep(0.05)
        assert len(beats) == count  # stopped: the caller owns the socket again
        dealer.send(b"late")
        _wait_for(lambda: router.socket.poll(0) != 0)
        frames = router.receive()
        assert frames is not None and frames[1].bytes == b"late"  # left in the socket for the caller
        between.start()  # a second generation's pause: the first's wake-up does not end it at once
        time.sleep(0.05)
        assert between.thread is not None and between.thread.is_alive()
    finally:
        between.close()


@pytest.mark.parametrize("bound", ["MAX_PENDING_MESSAGES", "PENDING_BYTES"])
def test_the_queue_stops_reading_at_its_bound(
    router: Router, dealer: zmq.Socket[bytes], bound: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 3 messages (or 18 bytes: each message here is 1 byte after its 5-byte identity frame) the
    thread leaves the rest in ZeroMQ and only waits for its wake-up and heartbeats, without spinning."""
    monkeypatch.setattr(between_generations, bound, 3 if bound == "MAX_PENDING_MESSAGES" else 3 * 6)
    beats: list[float] = []
    between = BetweenGenerations(router, beats.append, lambda now: 50)
    try:
        _start_and_send(between, dealer, 6)
        _wait_for(lambda: len(between.pending) == 3)
        count = len(beats)
        time.sleep(0.3)
        assert len(beats) - count <= 20  # a turn per 50 ms wait; a spinning loop would turn thousands of times
        between.stop()
        assert [frames[1].bytes for frames in between.take()] == [b"0", b"1", b"2"]
        rest = [router.receive() for _ in range(3)]
        assert [frames[1].bytes for frames in rest if frames is not None] == [b"3", b"4", b"5"]  # waited in ZeroMQ
    finally:
        between.close()


def test_one_thread_at_a_time(router: Router) -> None:
    between = BetweenGenerations(router, lambda now: None, lambda now: 10)
    try:
        between.start()
        with pytest.raises(RuntimeError, match="runs already"):
            between.start()
    finally:
        between.close()
