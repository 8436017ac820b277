"""The master's connections, bounded so that it keeps the file descriptors it needs.

Every TCP connection a ZeroMQ ``ROUTER`` accepts takes one of the process's file descriptors, and
ZeroMQ accepts as many as peers open: 300 idle connections to a master limited to 256 descriptors
left it none to write its next checkpoint with. :class:`ConnectionGuard` therefore

- raises the process's soft descriptor limit to its hard limit (at most ``MAX_DESCRIPTOR_LIMIT``);
- watches the socket's connections through a ZeroMQ monitor (a thread of its own, which owns the
  monitor socket) and shuts down, at once, every connection accepted beyond a cap: the limit less
  ``RESERVED_DESCRIPTORS`` for checkpoints, logs and the process's own files, and at most
  ``MAX_CONNECTIONS``. ZeroMQ sees the connection end and closes it itself;
- logs handshakes that fail, with their cause (a peer without keys, with another master's key or
  one the master does not list, one that hangs up or times out mid-handshake), at a bounded rate.

A peer that opens a connection and never completes the handshake is dropped by ZeroMQ after
``HANDSHAKE_SECONDS`` (the master sets it on its socket).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import threading

import zmq
from zmq.utils.monitor import recv_monitor_message

from esfast.distributed.log_limit import LogLimiter

__all__ = ["HANDSHAKE_SECONDS", "MAX_CONNECTIONS", "RESERVED_DESCRIPTORS", "ConnectionGuard", "connection_cap", "handshake_failure"]

logger = logging.getLogger(__name__)

RESERVED_DESCRIPTORS = 64  # kept free of connections: checkpoints, logs, the process's own files
MAX_CONNECTIONS = 2048  # connections at once, whatever the descriptor limit
MAX_DESCRIPTOR_LIMIT = 65536  # the soft limit is raised up to this (and the hard limit)
HANDSHAKE_SECONDS = 10.0  # a connection must complete its ZeroMQ handshake within this
_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32  # a guess where /proc is missing: a few dozen at start


def connection_cap() -> int:
    """Raises the soft descriptor limit as far as allowed; the connections the master may keep open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_DESCRIPTOR_LIMIT if hard == resource.RLIM_INFINITY else min(hard, MAX_DESCRIPTOR_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    limit = MAX_DESCRIPTOR_LIMIT if soft == resource.RLIM_INFINITY else soft
    return max(1, min(MAX_CONNECTIONS, limit - RESERVED_DESCRIPTORS - _open_descriptors()))


class ConnectionGuard:
    """Caps the TCP connections of ``sock`` (a bound ``ROUTER``) from a thread of its own.

    Args:
        sock: the master's socket; its monitor is enabled here and disabled by :meth:`close`.
        cap: connections kept at most (default: :func:`connection_cap`).
    """

    def __init__(self, sock: zmq.Socket[bytes], *, cap: int | None = None) -> None:
        self.socket = sock
        self.cap = connection_cap() if cap is None else cap
        self.open: set[int] = set()  # descriptors of the accepted connections still open
        self.refused = 0  # connections shut down for the cap, since the start
        self.failed_handshakes = 0
        self.log = LogLimiter(logger, burst=5, interval=60.0)
        self.monitor = sock.get_monitor_socket(_EVENTS)
        self.wake_read, self.wake_write = os.pipe()
        self.thread = threading.Thread(target=self._run, name="esfast-master-connections", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(self.wake_read, zmq.POLLIN)
        while True:
            events = dict(poller.poll())
            if self.wake_read in events:
                return
            while self.monitor.poll(0):
                event = recv_monitor_message(self.monitor)
                self._event(event["event"], event["value"])

    def _event(self, kind: int, value: int) -> None:
        if kind == zmq.EVENT_ACCEPTED:
            if len(self.open) < self.cap:
                self.open.add(value)
            elif _shut_down(value):
                self.refused += 1
                self.log.warning(
                    "cap", "refused a connection: %d are open, the most this master keeps (its file descriptors)", len(self.open)
                )
        elif kind == zmq.EVENT_DISCONNECTED:
            self.open.discard(value)
        else:
            self.failed_handshakes += 1
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return  # the key check logs those, with the key
            self.log.warning(
                "handshake",
                "refused a connection (%d so far): %s; nothing it sent was read",
                self.failed_handshakes,
                handshake_failure(kind, value),
            )

    def close(self) -> None:
        """Stops the thread and the socket's monitor (call before the socket is closed)."""
        os.write(self.wake_write, b"x")
        self.thread.join()
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        os.close(self.wake_read)
        os.close(self.wake_write)


def handshake_failure(kind: int, value: int) -> str:
    """Why a connection's ZeroMQ handshake failed, from its monitor event ``kind`` and ``value``.

    ``value`` is a ZMTP protocol error for ``EVENT_HANDSHAKE_FAILED_PROTOCOL`` and the ``errno`` of
    the connection for ``EVENT_HANDSHAKE_FAILED_NO_DETAIL`` (``EAGAIN`` when the handshake timed out).
    """
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "it speaks another ZeroMQ security mechanism (keys on one side only?)"
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "its CURVE handshake did not decrypt (it holds another master's key?)"
        return f"it broke ZeroMQ's handshake (protocol error {value:#x}: not a worker host?)"
    if value in (errno.EAGAIN, errno.ETIMEDOUT):
        return f"it did not complete its handshake within {HANDSHAKE_SECONDS:g} s"
    return "it closed the connection before its handshake ended"


def _shut_down(descriptor: int) -> bool:
    """Ends the TCP connection on ``descriptor`` without closing the descriptor, which is ZeroMQ's.

    Anything that is not a connected stream socket (the number was reused for a file meanwhile) is
    left alone.
    """
    try:
        connection = socket.socket(fileno=descriptor)
    except OSError:
        return False
    try:
        if connection.type != socket.SOCK_STREAM or connection.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return False
        connection.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        connection.detach()
