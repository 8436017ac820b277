"""Hostile peers for the master's tests: each speaks the protocol from a thread of the test process.

A :class:`Peer` connects a DEALER to the master, says HELLO (and, if asked, sends the honest
fingerprint so that it is admitted), and then calls its ``on_message`` for every message it reads
and its ``on_tick`` about every 0.1 s, until :meth:`Peer.stop`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import zmq
from cluster import fingerprint, hello

from esfast.distributed.protocol import Message, decode, encode

SLOW_REACH_ENV = ("EsfastTest/SlowReach-v0", "custom_envs")


class Peer:
    """A peer of the master at ``address`` named ``name`` (``name:pid`` to the master).

    Args:
        admitted: send the honest FINGERPRINT of SlowReach after HELLO.
        reads: read what the master sends (False: never, as a peer whose queue fills up).
        credit: send READY with this credit after WELCOME, and again at every tick.
    """

    def __init__(
        self, address: str, name: str, pid: int = 9, *, procs: int = 1, admitted: bool = True, reads: bool = True, credit: int = 0
    ) -> None:
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(address)
        self.reads = reads
        self.credit = credit
        self.received: list[Message] = []
        self.running = True
        self.lock = threading.Lock()
        self.send(hello(name, pid, procs))
        if admitted:
            self.send(fingerprint(*SLOW_REACH_ENV))
        if credit and not reads:
            self.send(Message("READY", {"credit": credit}))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Peer:
        self.thread.start()
        return self

    def send(self, message: Message) -> None:
        with self.lock:
            self.dealer.send_multipart(encode(message))

    def send_raw(self, frames: list[bytes]) -> None:
        with self.lock:
            self.dealer.send_multipart(frames)

    def on_message(self, message: Message) -> None:
        """What the peer does with a message of the master (here: READY after WELCOME)."""
        if message.type == "WELCOME" and self.credit:
            self.send(Message("READY", {"credit": self.credit}))

    def on_tick(self) -> None:
        """What the peer does every 0.1 s or so."""
        if self.credit and not self.reads:
            self.send(Message("READY", {"credit": self.credit}))

    def _run(self) -> None:
        while self.running:
            frames = None
            if self.reads:
                with self.lock:  # the socket is used by one thread at a time
                    if self.dealer.poll(100):
                        frames = self.dealer.recv_multipart()
            else:
                threading.Event().wait(0.1)
            if frames is not None:
                message = decode(frames)
                self.received.append(message)
                self.on_message(message)
            self.on_tick()

    def stop(self) -> None:
        self.running = False
        if self.thread.is_alive():
            self.thread.join(10)
        self.dealer.close()
        self.context.term()


def pair_results(tasks: list[dict[str, Any]], make: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Result objects for the pair tasks among ``tasks``, each made by ``make``."""
    return [make(task) for task in tasks if task["kind"] == "pair"]
