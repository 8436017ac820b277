"""The master's socket: one bound ZeroMQ ``ROUTER`` that worker hosts connect to.

:class:`Router` owns the ZeroMQ context and the socket, and with them

- CURVE under keys: pyzmq's authenticator answers the handshakes (ZAP) from its own thread with
  :class:`~esfast.distributed.keys.KeyCheck`, so a peer whose key is not listed never gets a
  message through, and every connection is encrypted;
- the limits on what a peer can make ZeroMQ buffer: messages of at most the largest one a host
  sends (a ``RESULT`` of ``MAX_RESULTS_PER_MESSAGE`` pairs with observation sums), ``RECEIVE_HWM``
  of them per peer, handshakes within ``HANDSHAKE_SECONDS``, connections capped by
  :class:`~esfast.distributed.connections.ConnectionGuard`;
- sends that never block and never drop in silence (``ROUTER_MANDATORY``): :meth:`Router.send`
  says whether the socket took the message, so the master knows what each host has received.

It knows nothing of the protocol's messages; :mod:`esfast.distributed.master` does.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from esfast.distributed.connections import HANDSHAKE_SECONDS, ConnectionGuard
from esfast.distributed.keys import KeyCheck, MasterKeys
from esfast.distributed.protocol import MAX_HEADER_BYTES, MAX_RESULTS_PER_MESSAGE

__all__ = ["MAX_MESSAGE_BYTES", "RECEIVE_HWM", "STOP_LINGER_MS", "Router", "largest_message"]

logger = logging.getLogger(__name__)

RECEIVE_HWM = 128  # messages ZeroMQ queues per peer before it stops reading that peer
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the largest message taken from a peer, whatever the run
STOP_LINGER_MS = 2000  # how long close() lets the last messages (STOP) drain


def largest_message(obs_dim: int) -> int:
    """The largest message a worker host of a run with ``obs_dim`` observations sends, in bytes
    (a ``RESULT`` of ``MAX_RESULTS_PER_MESSAGE`` pairs with their observation sums), at most
    :data:`MAX_MESSAGE_BYTES`."""
    return min(MAX_HEADER_BYTES + MAX_RESULTS_PER_MESSAGE * 2 * 8 * obs_dim + 4096, MAX_MESSAGE_BYTES)


class Router:
    """A ``ROUTER`` socket bound to ``bind``, in a context of its own.

    Args:
        bind: ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555`` (port 0: any free port).
        keys: the master's CURVE keys: only workers whose public keys are listed connect; None:
            any peer that reaches ``bind`` may, in plain text.
        max_message_bytes: the largest message taken from a peer (:func:`largest_message`).

    Not thread-safe: one thread at a time uses the socket (the master hands it over between
    generations).

    Raises:
        OSError: the endpoint cannot be bound (address in use, bad address). Whatever fails, nothing
            is left open.
    """

    def __init__(self, bind: str, *, keys: MasterKeys | None, max_message_bytes: int) -> None:
        self.context = zmq.Context()
        self.auth: ThreadAuthenticator | None = None
        self.key_check: KeyCheck | None = None
        socket: zmq.Socket[bytes] | None = None
        try:
            if keys is not None:
                self.key_check = KeyCheck(keys)
                self.auth = ThreadAuthenticator(self.context, log=logging.getLogger("esfast.distributed.auth"))
                self.auth.start()
                self.auth.configure_curve_callback("*", credentials_provider=self.key_check)
            socket = self.context.socket(zmq.ROUTER)
            if keys is not None:
                socket.curve_secretkey = keys.secret
                socket.curve_publickey = keys.public
                socket.curve_server = True
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
            socket.setsockopt(zmq.HANDSHAKE_IVL, int(1000 * HANDSHAKE_SECONDS))
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            try:
                socket.bind(bind)
            except zmq.ZMQError as error:
                hint = " (is another master running? choose another port with --bind)" if error.errno == zmq.EADDRINUSE else ""
                raise OSError(f"cannot bind {bind}: {error.strerror}{hint}") from None
            self.guard = ConnectionGuard(socket)
        except BaseException:
            if socket is not None:
                socket.close()
            self._stop_context()
            raise
        self.socket: zmq.Socket[bytes] = socket
        self.endpoint: str = socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def send(self, identity: bytes, frames: list[Any]) -> bool:
        """Sends ``frames`` to the peer ``identity`` without blocking; False if the socket refused
        (the peer's queue is full, or it has disconnected). The caller decides what that means."""
        try:
            self.socket.send_multipart([identity, *frames], copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            logger.debug("a message to a worker host was not sent: its queue is full")
            return False
        except zmq.ZMQError as error:
            if error.errno != zmq.EHOSTUNREACH:
                raise
            logger.debug("a message to a worker host was not sent: it has disconnected")
            return False
        return True

    def receive(self) -> list[zmq.Frame] | None:
        """The next message (the peer's identity frame first) without blocking; None if none waits."""
        try:
            return self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None

    def close(self) -> None:
        """Closes the socket, letting what was sent drain for up to :data:`STOP_LINGER_MS`, then the context."""
        self.guard.close()
        self.socket.setsockopt(zmq.LINGER, STOP_LINGER_MS)
        self.socket.close()
        self._stop_context()

    def _stop_context(self) -> None:
        if self.auth is not None:
            self.auth.stop()
        self.context.term()
