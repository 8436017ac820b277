"""The master's socket: binding, the size limit on what a peer sends, sends that say whether they went."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from esfast.distributed.router import MAX_MESSAGE_BYTES, Router, largest_message


@pytest.fixture
def router() -> Iterator[Router]:
    router = Router("tcp://127.0.0.1:0", keys=None, max_message_bytes=1024)
    yield router
    router.close()


def _dealer(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.IDENTITY, b"peer")
    dealer.connect(endpoint)
    return dealer


def _receive(router: Router, seconds: float = 5.0) -> list[zmq.Frame] | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (frames := router.receive()) is not None:
            return frames
        time.sleep(0.01)
    return None


def test_a_peer_is_heard_and_answered_and_an_unknown_peer_is_refused(router: Router) -> None:
    assert router.receive() is None  # nothing waits: no blocking
    assert router.send(b"nobody", [b"x"]) is False  # not dropped in silence
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = _dealer(context, router.endpoint)
    try:
        dealer.send_multipart([b"hello", b"world"])
        frames = _receive(router)
        assert frames is not None and [f.bytes for f in frames] == [b"peer", b"hello", b"world"]
        assert router.send(b"peer", [b"welcome"]) is True
        assert dealer.poll(5000) and dealer.recv_multipart() == [b"welcome"]
    finally:
        dealer.close()
        context.term()


def test_a_message_beyond_the_limit_never_arrives(router: Router) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = _dealer(context, router.endpoint)
    try:
        dealer.send(b"small")
        frames = _receive(router)
        assert frames is not None and frames[1].bytes == b"small"  # connected: what follows is the limit's doing
        dealer.send(b"x" * 2048)  # ZeroMQ drops the connection that sent it
        assert _receive(router, seconds=1.0) is None
    finally:
        dealer.close()
        context.term()


def test_a_bound_port_is_one_line_with_a_hint(router: Router) -> None:
    with pytest.raises(
        OSError, match=r"^cannot bind tcp://127\.0\.0\.1:\d+: .*\(is another master running\? choose another port with --bind\)$"
    ):
        Router(router.endpoint, keys=None, max_message_bytes=1024)
    with pytest.raises(OSError, match=r"^cannot bind nonsense://x: "):
        Router("nonsense://x", keys=None, max_message_bytes=1024)


def test_the_largest_message_grows_with_the_observation_and_is_capped() -> None:
    assert largest_message(11) < largest_message(376) <= MAX_MESSAGE_BYTES
    assert largest_message(10**9) == MAX_MESSAGE_BYTES
