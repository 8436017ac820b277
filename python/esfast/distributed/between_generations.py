"""The master's socket between generations, while the trainer updates θ and writes checkpoints.

During :meth:`~esfast.distributed.master.Master.evaluate` the caller's thread serves the socket;
between two calls, :class:`BetweenGenerations` runs a thread of its own that owns it: it sends the
master's heartbeats, so hosts never see a silent master, and queues what arrives for the next
generation, bounded in number (:data:`MAX_PENDING_MESSAGES`) and bytes (:data:`PENDING_BYTES`).
Beyond those, a flood waits in ZeroMQ, whose queue per peer is bounded too
(:data:`~esfast.distributed.router.RECEIVE_HWM`), and then in the peer's own. The thread and the
caller never use the socket at once: :meth:`BetweenGenerations.stop` returns once the thread has.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

import zmq

from esfast.distributed.router import Router

__all__ = ["MAX_PENDING_MESSAGES", "PENDING_BYTES", "BetweenGenerations"]

MAX_PENDING_MESSAGES = 100_000  # messages queued between generations, at most
PENDING_BYTES = 256 * 1024 * 1024  # bytes of messages queued between generations, at most


class BetweenGenerations:
    """Serves ``router`` from a thread of its own between :meth:`start` and :meth:`stop`.

    Args:
        router: the master's socket.
        heartbeat: called with ``time.monotonic()`` at every turn of the thread's loop; sends the
            heartbeats that are due.
        timeout_ms: called with the same time; how long the thread may wait for a message before
            the next heartbeat is due, in milliseconds.
    """

    def __init__(self, router: Router, heartbeat: Callable[[float], None], timeout_ms: Callable[[float], int]) -> None:
        self.router = router
        self.heartbeat = heartbeat
        self.timeout_ms = timeout_ms
        self.thread: threading.Thread | None = None
        self.pending: list[list[zmq.Frame]] = []
        self.pending_bytes = 0
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)

    def start(self) -> None:
        """Hands the socket to the thread.

        Raises:
            RuntimeError: the thread runs already (two would share the socket).
        """
        if self.thread is not None:
            raise RuntimeError("the between-generations thread runs already")
        self.thread = threading.Thread(target=self._serve, name="esfast-master-between", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Takes the socket back: returns once the thread has ended (at once if none runs)."""
        if self.thread is not None:
            os.write(self.wake_write, b"x")
            self.thread.join()
            self.thread = None
        with contextlib.suppress(BlockingIOError):  # every wake-up byte, so the next thread does not stop at once
            while os.read(self.wake_read, 64):
                pass

    def take(self) -> list[list[zmq.Frame]]:
        """The messages queued while the thread ran, in the order they arrived; the queue is emptied."""
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        return pending

    def close(self) -> None:
        """Stops the thread and releases its wake-up pipe."""
        self.stop()
        os.close(self.wake_read)
        os.close(self.wake_write)

    def _full(self) -> bool:
        return len(self.pending) >= MAX_PENDING_MESSAGES or self.pending_bytes >= PENDING_BYTES

    def _serve(self) -> None:
        reading = zmq.Poller()  # the socket and the wake-up pipe
        reading.register(self.router.socket, zmq.POLLIN)
        reading.register(self.wake_read, zmq.POLLIN)
        waking = zmq.Poller()  # the pipe alone, once the queue is full: the socket would stay readable
        waking.register(self.wake_read, zmq.POLLIN)
        while True:
            now = time.monotonic()
            self.heartbeat(now)
            events = dict((waking if self._full() else reading).poll(self.timeout_ms(now)))
            if self.wake_read in events:
                return
            while self.router.socket in events and not self._full():
                frames = self.router.receive()
                if frames is None:
                    break
                self.pending.append(frames)
                self.pending_bytes += sum(len(f.buffer) for f in frames)
