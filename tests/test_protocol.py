"""The wire codec: round trips, zero-copy arrays, and every malformed message refused cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esfast.protocol import MAX_HEADER_BYTES, MESSAGE_TYPES, PROTOCOL_VERSION, Message, ProtocolError, decode, encode

SAMPLES = {
    "HELLO": {"host": "node-1", "pid": 42, "procs": 8},
    "READY": {"credit": 3},
    "RESULT": {"generation": 7, "results": [{"task": 1, "returns": [1.5, -2.0], "lengths": [10, 12], "obs_count": 0, "obs_arrays": None}]},
    "HEARTBEAT": {},
    "BYE": {},
    "WELCOME": {"worker": "w1", "run": {"env_id": "CartPole-v1", "table_size": 1000, "table_seed": 3}},
    "REFUSE": {"reason": "protocol version 2, expected 1"},
    "THETA": {"generation": 3, "sigma": 0.02, "timestep_limit": None},
    "TASKS": {"generation": 3, "tasks": [{"task": 9, "kind": "pair", "pair": 4, "offset": 123, "episode_seed": 5, "record_obs": True}]},
    "WAIT": {"seconds": 0.5},
    "STOP": {"reason": "done"},
}


def test_every_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_round_trip(kind: str) -> None:
    message = Message(kind, SAMPLES[kind])
    decoded = decode(encode(message))
    assert decoded.type == kind and decoded.fields == SAMPLES[kind] and decoded.arrays == ()


def test_arrays_travel_as_raw_frames() -> None:
    theta = np.linspace(-1, 1, 1001, dtype=np.float32)
    mean, std = np.zeros((3, 2)), np.ones(5, dtype=np.int64)
    frames = encode(Message("THETA", SAMPLES["THETA"], (theta, mean, std)))
    assert len(frames) == 4 and bytes(frames[1]) == theta.tobytes()
    header = json.loads(frames[0])
    assert header["v"] == PROTOCOL_VERSION and header["arrays"][1] == {"dtype": "<f8", "shape": [3, 2]}
    decoded = decode([bytes(f) for f in frames])
    np.testing.assert_array_equal(decoded.arrays[0], theta)
    assert decoded.arrays[1].shape == (3, 2) and decoded.arrays[2].dtype == np.int64
    assert not decoded.arrays[0].flags.writeable


def test_decoded_arrays_do_not_copy() -> None:
    payload = bytearray(np.arange(4, dtype=np.float32).tobytes())
    header = json.dumps({"v": 1, "type": "THETA", "generation": 0, "sigma": 1.0, "timestep_limit": 5,
                         "arrays": [{"dtype": "<f4", "shape": [4]}]}).encode()
    array = decode([header, memoryview(payload)]).arrays[0]
    payload[0:4] = np.float32(9).tobytes()
    assert array[0] == 9.0


def header(**fields: object) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "empty message"),
        ([b"\xff\xfe"], "not UTF-8 JSON"),
        ([b"{not json"], "not UTF-8 JSON"),
        ([b"[1, 2]"], "not a JSON object"),
        ([b'{"v": 2, "type": "READY", "credit": 1}'], "protocol version 2, expected 1"),
        ([b'{"type": "READY", "credit": 1}'], "protocol version None"),
        ([header(type="PICKLE")], "unknown message type 'PICKLE'"),
        ([header(type="READY")], "READY lacks field 'credit'"),
        ([header(type="READY", credit="3")], "READY field 'credit' has type str"),
        ([header(type="READY", credit=True)], "READY field 'credit' has type bool"),
        ([header(type="READY", credit=1, extra=2)], "READY has unknown fields"),
        ([b'{"v": 1, "type": "WAIT", "seconds": NaN}'], "non-JSON number NaN"),
        ([header(type="HEARTBEAT"), b"stray"], "describes 0 arrays, message has 1"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [2]}]), b"12345678", b"x"], "describes 1 arrays"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "|O", "shape": [1]}]), b"12345678"], "dtype '|O' not allowed"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [-1]}]), b""], "non-negative ints"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [3]}]), b"12345678"], "8 bytes for shape [3]"),
        ([header(type="HEARTBEAT", arrays="x")], "'arrays' must be a list"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4"}]), b""], "description must be"),
        ([b"{" * 100_000], "exceeds"),
    ],
)
def test_malformed_messages(frames: list[bytes], message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        decode(frames)


def test_random_bytes_never_escape_as_other_errors() -> None:
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(2000):
        frames = [rng.bytes(int(rng.integers(0, 64))) for _ in range(int(rng.integers(1, 4)))]
        if rng.random() < 0.5:
            frames[0] = b'{"v": 1, "type": "' + rng.choice(list(MESSAGE_TYPES)).encode() + b'"' + frames[0][:20] + b"}"
        try:
            decode(frames)
        except ProtocolError:
            refused += 1
    assert refused > 1900  # random bytes almost never form a valid message; none raised anything else


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        encode(Message("NOPE"))
    with pytest.raises(ProtocolError, match="lacks field"):
        encode(Message("READY"))
    with pytest.raises(ProtocolError, match="reserved"):
        encode(Message("HEARTBEAT", {"v": 3}))
    with pytest.raises(ProtocolError, match="not carried"):
        encode(Message("HEARTBEAT", {}, (np.zeros(2, dtype=np.int32),)))
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(Message("REFUSE", {"reason": "x" * (MAX_HEADER_BYTES + 1)}))
