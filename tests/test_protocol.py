"""The wire codec: round trips, zero-copy arrays, and every malformed message refused cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esfast.evaluation import EvalResult, EvalTask, PairResult, PairTask
from esfast.protocol import (
    MAX_HEADER_BYTES,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Message,
    ProtocolError,
    decode,
    encode,
    peek,
    result_message,
    results_from_message,
    task_from_wire,
    task_to_wire,
)

SAMPLES = {
    "HELLO": {"host": "node-1", "pid": 42, "procs": 8, "table": {"seed": 0, "size": 1000}},
    "READY": {"credit": 3},
    "RESULT": {"generation": 7, "results": [{"task": 1, "returns": [1.5, -2.0], "lengths": [10, 12], "obs_count": 0, "obs_arrays": None}], "credit": 2},
    "HEARTBEAT": {},
    "FAILED": {"generation": 7, "task": 3, "error": "ValueError: bad action"},
    "BYE": {},
    "WELCOME": {"worker": "w1", "run": {"env_id": "CartPole-v1", "table_size": 1000, "table_seed": 3}},
    "REFUSE": {"reason": "protocol version 2, expected 1"},
    "THETA": {"generation": 3, "sigma": 0.02, "timestep_limit": None},
    "TASKS": {"generation": 3, "tasks": [{"task": 9, "kind": "pair", "pair": 4, "offset": 123, "episode_seed": 5, "record_obs": True}]},
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
        ([b'{"v": 1, "type": "THETA", "generation": 1, "sigma": NaN, "timestep_limit": null}'], "non-JSON number NaN"),
        ([header(type="HEARTBEAT"), b"stray"], "describes 0 arrays, message has 1"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [2]}]), b"12345678", b"x"], "describes 1 arrays"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "|O", "shape": [1]}]), b"12345678"], "dtype '|O' not allowed"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [-1]}]), b""], "non-negative ints"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [3]}]), b"12345678"], "8 bytes for shape [3]"),
        ([header(type="HEARTBEAT", arrays="x")], "'arrays' must be a list"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4"}]), b""], "description must be"),
        ([b"{" * 100_000], "exceeds"),
        ([b'{"v": 1, "type": "READY", "credit": ' + b"9" * 5000 + b"}"], "integer of 5000 digits"),
        ([b'{"v": 1, "type": "WELCOME", "worker": "w", "run": {"x": 1e400}}'], "not a finite double"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [0, 2**40]}]), b""], "larger than"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [0, 2**31, 2**31]}]), b""], "larger than"),
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


def test_peek_reads_version_and_type_of_messages_decode_refuses() -> None:
    assert peek([b'{"v": 2, "type": "HELLO", "whatever": 1}']) == (2, "HELLO")
    assert peek([b'{"v": ' + b"9" * 5000 + b"}"]) == (None, None)
    assert peek([b"\xff"]) == (None, None) and peek([]) == (None, None) and peek([b"[1]"]) == (None, None)


TASKS = [PairTask(0, 17, 2**62, True), PairTask(1, 0, 5, False), EvalTask(0, 99)]


def test_tasks_round_trip() -> None:
    for task_id, task in enumerate(TASKS):
        wire = decode(encode(Message("TASKS", {"generation": 1, "tasks": [task_to_wire(task_id, task)]})))["tasks"][0]
        assert task_from_wire(wire) == (task_id, task)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"task": 0, "kind": "pickle"}, "task kind must be"),
        ({"task": 0, "kind": "pair", "pair": 0, "offset": 1, "episode_seed": 1}, "expected an object with keys"),
        ({"task": -1, "kind": "eval", "index": 0, "episode_seed": 1}, "'task' must be >= 0"),
        ({"task": 0, "kind": "eval", "index": 0, "episode_seed": 1.5}, "'episode_seed' must be int"),
        ({"task": 0, "kind": "pair", "pair": 0, "offset": 1, "episode_seed": 1, "record_obs": 1}, "'record_obs' must be bool"),
        ({"task": True, "kind": "eval", "index": 0, "episode_seed": 1}, "'task' must be int"),
        ("a string", "task kind must be"),
    ],
)
def test_malformed_tasks(obj: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        task_from_wire(obj)


def test_results_round_trip_with_observation_sums() -> None:
    sums = np.arange(3, dtype=np.float64), np.arange(3, dtype=np.float64) ** 2
    results = [(0, PairResult(0, (1.5, -2.0), (10, 12), *sums, 22)), (1, PairResult(1, (0.0, 3.0), (1, 2), None, None, 0)),
               (2, EvalResult(0, 7.25, 30))]
    decoded = decode([bytes(f) for f in encode(result_message(4, results, credit=3))])
    assert decoded["credit"] == 3
    parsed = results_from_message(decoded, TASKS, obs_dim=3)
    assert [task_id for task_id, _ in parsed] == [0, 1, 2]
    first = parsed[0][1]
    assert isinstance(first, PairResult) and first.returns == (1.5, -2.0) and first.lengths == (10, 12) and first.obs_count == 22
    np.testing.assert_array_equal(first.obs_sumsq, sums[1])
    assert parsed[1][1] == results[1][1] and parsed[2][1] == results[2][1]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"task": 5, "return": 1.0, "length": 3}, "the generation has 3 tasks"),
        ({"task": 2, "returns": [1.0, 2.0], "lengths": [1, 1], "obs_count": 0, "obs_arrays": None}, "expected an object with keys"),
        ({"task": 0, "return": 1.0, "length": 3}, "expected an object with keys"),
        ({"task": 1, "returns": [1.0], "lengths": [1, 1], "obs_count": 0, "obs_arrays": None}, "two returns and two lengths"),
        ({"task": 1, "returns": ["a", 1.0], "lengths": [1, 1], "obs_count": 0, "obs_arrays": None}, "must be a finite number"),
        ({"task": 1, "returns": [1.0, 1.0], "lengths": [1, -1], "obs_count": 0, "obs_arrays": None}, "must be >= 0"),
        ({"task": 1, "returns": [1.0, 1.0], "lengths": [1, 1], "obs_count": 4, "obs_arrays": None}, "must carry their sums"),
        ({"task": 0, "returns": [1.0, 1.0], "lengths": [1, 1], "obs_count": 4, "obs_arrays": 0}, "two <f8 arrays of shape"),
        ({"task": 1, "returns": [1.0, 1.0], "lengths": [1, 1], "obs_count": 4, "obs_arrays": 0}, "which records none"),
        ({"task": 1, "returns": [1.0, 1.0], "lengths": [2**62, 1], "obs_count": 0, "obs_arrays": None}, "<= 2\\*\\*53"),
        ({"task": 1, "returns": [1.0, 1.0], "lengths": [True, 1], "obs_count": 0, "obs_arrays": None}, "'lengths' must be int"),
        ({"task": 2, "return": "1.0", "length": 1}, "must be a finite number"),
        ([1, 2], "a result must be an object"),
    ],
)
def test_malformed_results(result: object, message: str) -> None:
    decoded = decode(encode(Message("RESULT", {"generation": 1, "results": [result], "credit": 0})))
    with pytest.raises(ProtocolError, match=message):
        results_from_message(decoded, TASKS, obs_dim=3)


def test_non_finite_observation_sums_are_refused() -> None:
    sums = np.array([1.0, np.nan, 0.0]), np.ones(3)
    message = decode([bytes(f) for f in encode(result_message(1, [(0, PairResult(0, (1.0, 2.0), (3, 3), *sums, 6))]))])
    with pytest.raises(ProtocolError, match="must be finite"):
        results_from_message(message, TASKS, obs_dim=3)
