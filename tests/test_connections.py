"""The master's connections: a cap that keeps descriptors free, enforced on a real socket."""

from __future__ import annotations

import resource
import socket
import time

import zmq

from esfast.distributed.connections import MAX_CONNECTIONS, ConnectionGuard, connection_cap


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
