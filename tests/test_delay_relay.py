"""The delay relay of the namespace-host tests, on 127.0.0.1: order, delay, stalls, resets in the middle of a THETA."""

from __future__ import annotations

import random
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from cluster import TESTS, Process
from delay_relay import GREETING_BYTES, DelayRelay, MessageStart, ZmtpScanner, frame_bytes
from zmq.utils.monitor import recv_monitor_message

from esfast.distributed.protocol import Message, decode, encode, theta_message
from esfast.tasks import GenerationSpec

DELAY, JITTER = 0.020, 0.005


@pytest.fixture
def target() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def relay(target: socket.socket) -> Iterator[DelayRelay]:
    with DelayRelay(("127.0.0.1", 0), target.getsockname(), delay=DELAY, jitter=JITTER, seed=1) as running:
        yield running


def _pair(relay: DelayRelay, target: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection((relay.host, relay.port))
    server, _ = target.accept()
    for sock in (client, server):
        sock.settimeout(10)
    return client, server


def _receive(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"connection closed after {len(data)} of {count} bytes"
        data += chunk
    return bytes(data)


def test_bytes_keep_their_order_both_ways_under_jitter(relay: DelayRelay, target: socket.socket) -> None:
    client, server = _pair(relay, target)
    rng = random.Random(0)
    chunks = [rng.randbytes(rng.randint(1, 3000)) for _ in range(300)]
    expected = b"".join(chunks)

    def send(sock: socket.socket) -> None:
        for chunk in chunks:
            sock.sendall(chunk)
            time.sleep(rng.random() * 0.002)  # many chunks a jitter apart: a relay that reordered would show it

    senders = [threading.Thread(target=send, args=(sock,)) for sock in (client, server)]
    for sender in senders:
        sender.start()
    assert _receive(server, len(expected)) == expected
    assert _receive(client, len(expected)) == expected
    for sender in senders:
        sender.join()
    client.close()
    server.close()
    # The relay thread counts a chunk just after handing it to the kernel, so the last chunk can
    # arrive before it is counted: wait (bounded) for the count, then compare it exactly.
    deadline = time.monotonic() + 10
    while relay.bytes_relayed < 2 * len(expected) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert relay.connections == 1 and relay.bytes_relayed == 2 * len(expected)
    # Each chunk read drew its own delay, uniform over delay ± jitter: spread over the whole range.
    drawn = relay.delays_drawn
    assert len(drawn) >= 100 and all(DELAY - JITTER <= d <= DELAY + JITTER for d in drawn), len(drawn)
    assert min(drawn) < DELAY - 0.8 * JITTER and max(drawn) > DELAY + 0.8 * JITTER and len(set(drawn)) == len(drawn)


def test_every_chunk_waits_at_least_the_delay_less_the_jitter(relay: DelayRelay, target: socket.socket) -> None:
    client, server = _pair(relay, target)
    for _ in range(5):
        sent = time.monotonic()
        client.sendall(b"ping")
        assert _receive(server, 4) == b"ping"
        assert time.monotonic() - sent >= DELAY - JITTER
        server.sendall(b"pong")
        sent = time.monotonic()
        assert _receive(client, 4) == b"pong"
        assert time.monotonic() - sent >= DELAY - JITTER
    client.close()
    server.close()


def test_a_stall_holds_both_directions_then_delivers_in_order(relay: DelayRelay, target: socket.socket) -> None:
    client, server = _pair(relay, target)
    relay.stall(0.5)
    stalled = time.monotonic()
    client.sendall(b"up-1")
    server.sendall(b"down-1")
    client.sendall(b"up-2")
    assert _receive(server, 8) == b"up-1up-2"
    assert time.monotonic() - stalled >= 0.5
    assert _receive(client, 6) == b"down-1"
    client.close()
    server.close()


def _greeting() -> bytes:
    return b"\xff" + bytes(8) + b"\x7f" + bytes([3, 1]) + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)


def _frames_on_the_wire(frames: list[bytes], *, command: bool = False) -> bytes:
    wire = bytearray()
    for index, frame in enumerate(frames):
        flags = (0x04 if command else 0) | (0x01 if index < len(frames) - 1 else 0)
        if len(frame) > 255:
            wire += bytes([flags | 0x02]) + len(frame).to_bytes(8, "big")
        else:
            wire += bytes([flags, len(frame)])
        wire += frame
    return bytes(wire)


def _theta_frames(num_params: int, generation: int) -> list[bytes]:
    theta = np.arange(num_params, dtype=np.float32)
    spec = GenerationSpec(generation, 0.02, np.zeros(3, dtype=np.float32), np.ones(3, dtype=np.float32), None)
    return [bytes(frame) for frame in encode(theta_message(theta, spec))]


def test_the_scanner_finds_each_message_header_in_any_chunking() -> None:
    ready = _frames_on_the_wire([b"\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"], command=True)
    heartbeat = [bytes(f) for f in encode(Message("HEARTBEAT"))]
    theta = _theta_frames(1000, 7)
    parts = [_greeting(), ready, _frames_on_the_wire(heartbeat), _frames_on_the_wire(theta), _frames_on_the_wire(heartbeat)]
    stream = b"".join(parts)
    whole = ZmtpScanner().feed(stream)
    scanner = ZmtpScanner()
    bytewise = [found for i in range(len(stream)) for found in scanner.feed(stream[i : i + 1])]
    theta_at = GREETING_BYTES + len(ready) + len(parts[2])
    assert [(m.offset, m.header["type"], m.size) for m in whole] == [
        (GREETING_BYTES + len(ready), "HEARTBEAT", len(parts[2])),
        (theta_at, "THETA", sum(frame_bytes(len(f)) for f in theta)),
        (theta_at + len(parts[3]), "HEARTBEAT", len(parts[4])),
    ]
    assert bytewise == whole
    assert isinstance(whole[1], MessageStart) and whole[1].header["generation"] == 7
    assert ZmtpScanner().feed(b"GET / HTTP/1.1\r\n" * 10) == []  # not ZMTP: not followed


def _wait_for_event(monitor: zmq.Socket[bytes], event: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if monitor.poll(100) and recv_monitor_message(monitor)["event"] == event:
            return
    raise AssertionError(f"no ZeroMQ event {event} within {timeout} s")


def test_a_reset_in_the_middle_of_a_theta_cuts_both_peers_off() -> None:
    context = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    monitors: list[zmq.Socket[bytes]] = []
    try:
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
            monitors.append(sock.get_monitor_socket(zmq.EVENT_DISCONNECTED))
        port = router.bind_to_random_port("tcp://127.0.0.1")
        with DelayRelay(("127.0.0.1", 0), ("127.0.0.1", port), delay=DELAY, jitter=JITTER) as relay:
            dealer.connect(f"tcp://127.0.0.1:{relay.port}")
            dealer.send(b"hello")
            identity, _ = router.recv_multipart()
            done = relay.reset_mid_message("THETA")
            theta = _theta_frames(250_000, 3)  # 1 MB: many chunks
            heartbeat = [bytes(f) for f in encode(Message("HEARTBEAT"))]
            router.send_multipart([identity, *heartbeat])
            router.send_multipart([identity, *theta])
            assert done.wait(30), "the relay never reset the connection"
            [reset] = relay.resets
            assert reset.message == "THETA" and reset.generation == 3
            assert reset.size == sum(frame_bytes(len(f)) for f in theta)
            assert 0 < reset.forwarded < reset.size and reset.forwarded == reset.size // 2, reset  # acknowledged by the receiver
            for monitor in monitors:  # both ends saw their connection go
                _wait_for_event(monitor, zmq.EVENT_DISCONNECTED)
            assert dealer.poll(5000), "the message before the THETA did not arrive"
            assert decode(dealer.recv_multipart()).type == "HEARTBEAT"
            assert not dealer.poll(500), "half a THETA must never arrive as a message"
            dealer.send(b"again")  # ZeroMQ connects again by itself: a new connection, a new peer for the router
            again, _ = router.recv_multipart()
            assert again != identity and relay.connections == 2
    finally:
        for sock in (*monitors, dealer, router):
            sock.close(linger=0)
        context.term()


def test_a_client_accepted_before_the_target_listens_waits_for_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with DelayRelay(("127.0.0.1", 0), ("127.0.0.1", port)) as relay:
        client = socket.create_connection((relay.host, relay.port))
        client.settimeout(10)
        client.sendall(b"early")
        time.sleep(0.2)  # the relay tries the target and finds nobody, more than once
        with socket.create_server(("127.0.0.1", port)) as target:
            server, _ = target.accept()
            server.settimeout(10)
            assert _receive(server, 5) == b"early"
            server.sendall(b"late")
            assert _receive(client, 4) == b"late"
            server.close()
        client.close()
        assert relay.connections == 1


def test_the_relay_runs_as_a_program_until_sigterm(target: socket.socket, tmp_path: Path) -> None:
    host, port = target.getsockname()
    command = [sys.executable, str(TESTS / "delay_relay.py"), "--listen", "127.0.0.1:0", "--target", f"{host}:{port}", "--delay-ms", "20"]
    program = Process(command, tmp_path / "relay.log")
    try:
        program.wait_for("listening on 127.0.0.1:")
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", program.output)
        assert found is not None
        client = socket.create_connection(("127.0.0.1", int(found.group(1))))
        client.settimeout(10)
        server, _ = target.accept()
        server.settimeout(10)
        sent = time.monotonic()
        client.sendall(b"through")
        assert _receive(server, 7) == b"through" and time.monotonic() - sent >= 0.020
        client.close()
        server.close()
        program.signal(signal.SIGTERM)
        assert program.wait(10) == 0, program.output
    finally:
        program.stop()
