"""A TCP relay that delays, stalls and resets the connections it carries (the namespace-host tests' network).

A :class:`DelayRelay` listens on one address (in the tests: a namespace host's link address in the
root namespace) and opens one connection to its target (the master on 127.0.0.1) for every
connection it accepts, copying bytes both ways. Each chunk it reads is released ``delay ± jitter``
seconds after it arrived (uniform jitter, seeded), but never before the chunk read before it in the
same direction: bytes keep their order, as on a network path whose queue varies, and the delay is
one-way (a round trip through the relay costs twice ``delay``).

It can also

- hold every connection for a while (:meth:`DelayRelay.stall`): nothing moves either way, bytes
  that arrive meanwhile wait, then go in order;
- reset a connection in the middle of a message (:meth:`DelayRelay.reset_mid_message`): the relay
  follows the ZMTP 3 framing of what the master sends (plain text: without keys ZeroMQ uses its
  NULL mechanism), recognizes a message by the ``type`` of its JSON header frame
  (docs/protocol.md, "Frames"), forwards the first half of that message's bytes, waits until the
  receiver's kernel has acknowledged them, and closes both of the connection's sockets with
  ``SO_LINGER`` 0, so that both peers see a reset (RST), not an orderly close.

Run as a program, so that the relay does not share a benchmark's interpreter lock with its master::

    python tests/delay_relay.py --listen HOST:PORT --target HOST:PORT [--delay-ms 20] [--jitter-ms 5]

It prints ``listening on HOST:PORT`` (the port the system gave for port 0) and relays until SIGTERM.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import fcntl
import json
import random
import selectors
import signal
import socket
import struct
import sys
import termios
import threading
import time
from collections import deque
from typing import Any, NamedTuple

GREETING_BYTES = 64  # ZMTP 3: signature (10), version (2), mechanism (20), as-server (1), filler (31)
FLAG_MORE, FLAG_LONG, FLAG_COMMAND = 0x01, 0x02, 0x04
HEADER_LIMIT = 64 * 1024  # a header frame beyond this is not esfast's (MAX_HEADER_BYTES)
CHUNK_BYTES = 64 * 1024
QUEUE_LIMIT = 16 * 1024 * 1024  # bytes waiting in one direction before the relay stops reading its source
ACK_TIMEOUT = 10.0  # seconds to wait for the receiver to acknowledge the bytes before a reset
DELAYS_KEPT = 10_000  # delays recorded for the tests (DelayRelay.delays_drawn)


class Reset(NamedTuple):
    """A connection the relay reset in the middle of a message."""

    message: str  # the message's type
    generation: int | None  # its generation field, if it has one
    size: int  # the message's bytes on the wire (every frame's flags, size and body)
    forwarded: int  # bytes of it the receiver had acknowledged when the connection was reset


class MessageStart(NamedTuple):
    """The first frame of a message seen in a ZMTP stream, once its header frame is complete."""

    offset: int  # stream offset of the message's first byte
    header: dict[str, Any]  # its JSON header
    size: int  # its bytes on the wire, computed from the header's array descriptions
    header_end: int  # stream offset just after its header frame


def frame_bytes(body: int) -> int:
    """Bytes of a ZMTP 3 frame with ``body`` bytes: flags, a 1- or 8-byte size, the body."""
    return 1 + (1 if body <= 255 else 8) + body


class ZmtpScanner:
    """Follows one direction of a ZMTP 3 stream and reports the messages whose header is esfast's.

    Fed with the stream's bytes in order (any chunking), :meth:`feed` returns a
    :class:`MessageStart` for every message whose first frame is a JSON object with a ``type``.
    Bodies of other frames are skipped, not kept. A stream that does not begin with a ZMTP 3
    greeting is not followed further.
    """

    def __init__(self) -> None:
        self.position = 0  # stream bytes fed so far
        self.greeting = bytearray()
        self.lost = False
        self.state = "flags"
        self.flags = 0
        self.size_field = bytearray()
        self.remaining = 0  # body bytes still to come
        self.body: bytearray | None = None  # the body being kept (a message's first frame)
        self.in_message = False  # the last data frame said MORE
        self.frame_start = 0
        self.message_start = 0

    def feed(self, data: bytes | memoryview) -> list[MessageStart]:
        found: list[MessageStart] = []
        view = memoryview(data)
        index = 0
        while index < len(view) and not self.lost:
            at = self.position + index
            if len(self.greeting) < GREETING_BYTES:
                take = min(GREETING_BYTES - len(self.greeting), len(view) - index)
                self.greeting += view[index : index + take]
                index += take
                if len(self.greeting) == GREETING_BYTES and (self.greeting[0] != 0xFF or self.greeting[9] != 0x7F or self.greeting[10] < 3):
                    self.lost = True
            elif self.state == "flags":
                self.flags = view[index]
                self.frame_start = at
                self.size_field.clear()
                self.state = "size"
                index += 1
            elif self.state == "size":
                need = 8 if self.flags & FLAG_LONG else 1
                take = min(need - len(self.size_field), len(view) - index)
                self.size_field += view[index : index + take]
                index += take
                if len(self.size_field) == need:
                    self.remaining = int.from_bytes(self.size_field, "big")
                    first = not self.flags & FLAG_COMMAND and not self.in_message
                    if first:
                        self.message_start = self.frame_start
                    self.body = bytearray() if first and self.remaining <= HEADER_LIMIT else None
                    self.state = "body"
                    if self.remaining == 0:
                        self._frame_done(found)
            else:
                take = min(self.remaining, len(view) - index)
                if self.body is not None:
                    self.body += view[index : index + take]
                self.remaining -= take
                index += take
                if self.remaining == 0:
                    self._frame_done(found)
        self.position += len(view)
        return found

    def _frame_done(self, found: list[MessageStart]) -> None:
        self.state = "flags"
        if self.flags & FLAG_COMMAND:
            return
        self.in_message = bool(self.flags & FLAG_MORE)
        body, self.body = self.body, None
        if body is None:
            return
        try:
            header = json.loads(bytes(body))
        except ValueError:
            return
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            return
        size = frame_bytes(len(body))
        for description in header.get("arrays", []):
            count = 1
            for extent in description["shape"]:
                count *= extent
            size += frame_bytes(count * int(description["dtype"][2:]))
        found.append(MessageStart(self.message_start, header, size, self.frame_start + frame_bytes(len(body))))


class _Direction:
    """Bytes going one way through a relayed connection: waiting (with release times), then sending."""

    def __init__(self, source: socket.socket, sink: socket.socket, scanned: bool) -> None:
        self.source, self.sink = source, sink
        self.waiting: deque[tuple[float, bytes]] = deque()
        self.waiting_bytes = 0
        self.out = bytearray()
        self.last_release = 0.0
        self.eof = False
        self.moved = 0  # stream bytes handed to ``out`` so far
        self.scanner = ZmtpScanner() if scanned else None


class _Link:
    """One relayed connection: ``inner`` (the accepted client) and ``outer`` (to the target)."""

    def __init__(self, number: int, inner: socket.socket, outer: socket.socket) -> None:
        self.number = number
        self.inner, self.outer = inner, outer
        self.up = _Direction(inner, outer, scanned=False)
        self.down = _Direction(outer, inner, scanned=True)
        self.cut_at: int | None = None  # stream offset (downstream) at which the connection is reset
        self.cut_pending: MessageStart | None = None  # the message to cut, found
        self.cut_message: MessageStart | None = None  # the message being cut: its first half has been handed over
        self.cut_since = 0.0
        self.closed = False


class DelayRelay:
    """Relays TCP connections from ``listen`` to ``target`` with a delay; see the module docstring.

    Args:
        listen: (address, port) to listen on; port 0: any free port (see :attr:`port`).
        target: (address, port) to connect to, once per accepted connection.
        delay: one-way delay in seconds, each direction.
        jitter: half-width in seconds of the uniform jitter added to each chunk's delay.
        seed: the jitter's random seed.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], *, delay: float = 0.0, jitter: float = 0.0, seed: int = 0) -> None:
        if jitter < 0 or delay - jitter < 0:
            raise ValueError(f"delay {delay} s and jitter {jitter} s must give delays of at least 0")
        self.target = target
        self.delay, self.jitter = delay, jitter
        self.random = random.Random(seed)
        self.listener = socket.create_server(listen)
        self.listener.setblocking(False)
        self.host, self.port = self.listener.getsockname()[:2]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.links: list[_Link] = []
        self.unconnected: list[socket.socket] = []  # accepted before the target listened: tried again every loop
        self.interest: dict[socket.socket, int] = {}
        self.lock = threading.Lock()  # guards the controls set from other threads
        self.stalled_until = 0.0
        self.armed: str | None = None  # the type of message to reset a connection in
        self.resets: list[Reset] = []
        self.reset_done = threading.Event()
        self.connections = 0  # accepted so far
        self.delays_drawn: list[float] = []  # the first DELAYS_KEPT chunks' delays, drawn before the order is kept
        self.bytes_relayed = 0  # both directions
        self.running = True
        self.thread = threading.Thread(target=self._run, name=f"delay-relay-{self.port}", daemon=True)
        self.thread.start()

    def __enter__(self) -> DelayRelay:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # Controls (any thread) ----------------------------------------------------------------

    def stall(self, seconds: float) -> None:
        """Holds every byte of every connection, both ways, for ``seconds`` from now."""
        with self.lock:
            self.stalled_until = max(self.stalled_until, time.monotonic() + seconds)

    def reset_mid_message(self, message: str = "THETA") -> threading.Event:
        """Resets the connection that carries the next ``message`` from the target, in its middle.

        Returns:
            An event set once the reset happened; :attr:`resets` then says where.
        """
        with self.lock:
            self.armed = message
            self.reset_done.clear()
        return self.reset_done

    def stop(self) -> None:
        """Stops relaying and closes every connection and the listener."""
        self.running = False
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join()
        for link in self.links:
            self._close(link)
        for inner in self.unconnected:
            inner.close()
        self.selector.close()
        self.listener.close()

    # The loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while self.running:
            self.unconnected = [inner for inner in self.unconnected if not self._reach(inner)]
            now = time.monotonic()
            for link in list(self.links):
                self._move(link, now)
            self.links = [link for link in self.links if not link.closed]
            for key, mask in self.selector.select(self._timeout(time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    self._accept()
                    continue
                link = key.data
                if link.closed:
                    continue
                if mask & selectors.EVENT_READ:
                    self._read(link, link.up if sock is link.inner else link.down)
                if mask & selectors.EVENT_WRITE and not link.closed:
                    self._flush(link, link.down if sock is link.inner else link.up)

    def _timeout(self, now: float) -> float:
        due = [d.waiting[0][0] for link in self.links for d in (link.up, link.down) if d.waiting]
        if any(link.cut_at is not None and link.cut_message is not None and not link.down.out for link in self.links):
            due.append(now + 0.005)  # polling the receiver's acknowledgements before a reset
        if not due:
            return 0.05
        return min(0.05, max(0.0, max(min(due), self.stalled_until) - now))

    def _accept(self) -> None:
        try:
            inner, _ = self.listener.accept()
        except BlockingIOError:
            return
        if not self._reach(inner):
            self.unconnected.append(inner)

    def _reach(self, inner: socket.socket) -> bool:
        """Connects ``inner`` to the target (or drops it if its client has closed it); False if
        the target does not listen yet.

        A client accepted meanwhile waits, as on a network where the far end is slow to answer,
        rather than see its connection reset (which a ZeroMQ client under CURVE keys counts as a
        failed handshake).
        """
        try:
            if inner.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                inner.close()  # the client gave up waiting: no connection to the target for it
                return True
        except BlockingIOError:
            pass  # nothing sent yet
        except OSError:
            inner.close()
            return True
        try:
            outer = socket.create_connection(self.target, timeout=2.0)
        except OSError:
            return False
        try:
            for sock in (inner, outer):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the client reset its connection meanwhile
            inner.close()
            outer.close()
            return True
        link = _Link(self.connections, inner, outer)
        self.connections += 1
        self.links.append(link)
        for sock in (inner, outer):
            self.selector.register(sock, selectors.EVENT_READ, link)
            self.interest[sock] = selectors.EVENT_READ
        return True

    def _read(self, link: _Link, direction: _Direction) -> None:
        try:
            data = direction.source.recv(CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self._close(link)
            return
        if not data:
            direction.eof = True
        else:
            now = time.monotonic()
            delay = self.delay + self.random.uniform(-self.jitter, self.jitter)
            if len(self.delays_drawn) < DELAYS_KEPT:
                self.delays_drawn.append(delay)
            release = max(now + delay, direction.last_release)
            direction.last_release = release
            direction.waiting.append((release, data))
            direction.waiting_bytes += len(data)
        self._update_interest(link)

    def _move(self, link: _Link, now: float) -> None:
        """Hands the chunks that are due to their sockets, watching downstream for the armed message."""
        if link.closed:
            return
        if now >= self.stalled_until:
            for direction in (link.up, link.down):
                while direction.waiting and direction.waiting[0][0] <= now and link.cut_message is None:
                    _, data = direction.waiting.popleft()
                    direction.waiting_bytes -= len(data)
                    if direction is link.down:
                        data = self._watch(link, data, now)
                    direction.out += data
                    direction.moved += len(data)
                if direction.out:
                    self._flush(link, direction)
                if link.closed:
                    return
        if link.cut_message is not None and not link.down.out:
            self._reset_when_acknowledged(link, now)
            return
        for direction in (link.up, link.down):
            if direction.eof and not direction.waiting and not direction.out:
                self._close(link)
                return
        self._update_interest(link)

    def _watch(self, link: _Link, data: bytes, now: float) -> bytes:
        """``data`` as far as it may go downstream: up to the cut point of an armed reset."""
        scanner = link.down.scanner
        assert scanner is not None
        for start in scanner.feed(data):
            with self.lock:
                if self.armed is not None and start.header["type"] == self.armed and link.cut_at is None:
                    self.armed = None
                    link.cut_at = max(start.offset + start.size // 2, start.header_end)  # at least its header goes through
                    link.cut_pending = start
        if link.cut_at is not None and link.down.moved + len(data) > link.cut_at:
            link.cut_message = link.cut_pending
            link.cut_since = now
            link.down.waiting.clear()
            return data[: link.cut_at - link.down.moved]
        return data

    def _reset_when_acknowledged(self, link: _Link, now: float) -> None:
        start = link.cut_message
        assert start is not None and link.cut_at is not None
        unacknowledged = array.array("i", [0])
        with contextlib.suppress(OSError):
            fcntl.ioctl(link.inner.fileno(), termios.TIOCOUTQ, unacknowledged)
        if unacknowledged[0] > 0 and now - link.cut_since < ACK_TIMEOUT:
            return
        forwarded = link.cut_at - start.offset - unacknowledged[0]
        generation = start.header.get("generation")
        self.resets.append(Reset(start.header["type"], generation if isinstance(generation, int) else None, start.size, forwarded))
        for sock in (link.inner, link.outer):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._close(link)
        self.reset_done.set()

    def _flush(self, link: _Link, direction: _Direction) -> None:
        try:
            sent = direction.sink.send(direction.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(link)
            return
        del direction.out[:sent]
        self.bytes_relayed += sent
        self._update_interest(link)

    def _update_interest(self, link: _Link) -> None:
        if link.closed:
            return
        for sock, source_of, sink_of in ((link.inner, link.up, link.down), (link.outer, link.down, link.up)):
            events = 0
            if not source_of.eof and source_of.waiting_bytes < QUEUE_LIMIT and link.cut_message is None:
                events |= selectors.EVENT_READ
            if sink_of.out:
                events |= selectors.EVENT_WRITE
            current = self.interest.get(sock, 0)
            if events == current:
                continue
            if not current:
                self.selector.register(sock, events, link)
            elif not events:
                self.selector.unregister(sock)
            else:
                self.selector.modify(sock, events, link)
            self.interest[sock] = events

    def _close(self, link: _Link) -> None:
        if link.closed:
            return
        link.closed = True
        for sock in (link.inner, link.outer):
            if self.interest.pop(sock, 0):
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(sock)
            sock.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """``python tests/delay_relay.py``: relays until SIGTERM or Ctrl-C; returns the exit status."""
    parser = argparse.ArgumentParser(description="A TCP relay that delays every chunk (tests/delay_relay.py).")
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to listen on (port 0: any)")
    parser.add_argument("--target", type=_address, required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per direction (default 0)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform jitter, ± this (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="the jitter's seed (default 0)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with DelayRelay(args.listen, args.target, delay=args.delay_ms / 1000, jitter=args.jitter_ms / 1000, seed=args.seed) as relay:
        print(f"listening on {relay.host}:{relay.port}", flush=True)
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
