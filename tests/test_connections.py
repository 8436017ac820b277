"""The master's connections: a cap that keeps descriptors free, enforced on a real socket."""

from __future__ import annotations

import errno
import logging
import resource
import socket
import time
from collections.abc import Callable

import pytest
import zmq

from esfast.distributed.connections import MAX_CONNECTIONS, ConnectionGuard, connection_cap, handshake_failure


def test_the_cap_leaves_descriptors_free() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = connection_cap()
    after, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert after >= soft and 1 <= cap <= min(MAX_CONNECTIONS, after - 64)


def test_connections_beyond_the_cap_are_shut_down_and_others_kept() -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    guard = ConnectionGuard(router, cap=3)
    connections = []
    try:
        for _ in range(6):
            connections.append(socket.create_connection(("127.0.0.1", port)))
        deadline = time.monotonic() + 10
        while guard.refused < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert guard.refused == 3 and len(guard.open) == 3
        closed = [_ends(connection) for connection in connections]
        assert sum(closed) == 3 and closed[:3] == [False] * 3  # the first three kept their place
        connections[0].close()  # one leaves: the next one is kept
        deadline = time.monotonic() + 10
        while len(guard.open) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        connections.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.3)
        assert guard.refused == 3 and len(guard.open) == 3
    finally:
        for connection in connections:
            connection.close()
        guard.close()
        router.close()
        context.term()


def test_failed_handshakes_are_logged_with_their_cause(caplog: pytest.LogCaptureFixture) -> None:
    """A peer that hangs up mid-handshake, one without keys and one holding another master's key
    each get a line of their own on a master under CURVE keys."""
    context = zmq.Context()
    public, secret = zmq.curve_keypair()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.curve_server = True
    router.curve_publickey, router.curve_secretkey = public, secret
    port = router.bind_to_random_port("tcp://127.0.0.1")
    guard = ConnectionGuard(router)
    peers: list[zmq.Socket[bytes]] = []
    try:
        with caplog.at_level(logging.WARNING, logger="esfast.distributed.connections"):
            socket.create_connection(("127.0.0.1", port)).close()
            _wait_for(lambda: guard.failed_handshakes >= 1)
            keyless = context.socket(zmq.DEALER)
            peers.append(keyless)
            keyless.connect(f"tcp://127.0.0.1:{port}")
            _wait_for(lambda: guard.failed_handshakes >= 2)
            other_public, _ = zmq.curve_keypair()
            misled = context.socket(zmq.DEALER)
            peers.append(misled)
            misled.curve_serverkey = other_public
            misled.curve_publickey, misled.curve_secretkey = zmq.curve_keypair()
            misled.connect(f"tcp://127.0.0.1:{port}")
            _wait_for(lambda: guard.failed_handshakes >= 3)
        lines = [record.getMessage() for record in caplog.records]
        assert lines[0] == "refused a connection (1 so far): it closed the connection before its handshake ended; nothing it sent was read"
        assert "(2 so far): it speaks another ZeroMQ security mechanism (keys on one side only?)" in lines[1]
        assert "(3 so far): its CURVE handshake did not decrypt (it holds another master's key?)" in lines[2]
    finally:
        for peer in peers:
            peer.close(linger=0)
        guard.close()
        router.close()
        context.term()


def test_a_handshake_that_times_out_is_named() -> None:
    """The monitor reports a handshake that ran out of time as ``EAGAIN`` (no detail)."""
    assert handshake_failure(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, errno.EAGAIN) == "it did not complete its handshake within 10 s"
    assert "protocol error 0x10000003" in handshake_failure(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 0x10000003)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the monitor reported nothing within 10 s"
        time.sleep(0.02)


def _ends(connection: socket.socket) -> bool:
    """Whether the master ended the connection: end-of-file after ZeroMQ's greeting, or a reset."""
    connection.settimeout(0.3)
    try:
        while connection.recv(64):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True
