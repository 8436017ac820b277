"""The wire codec: round trips, zero-copy arrays, every malformed message refused cleanly, and the
run description that travels to worker hosts."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from esfast.config import AtariSettings, PolicySettings
from esfast.distributed.protocol import (
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
    setup_from_wire,
    setup_to_wire,
    task_from_wire,
    task_to_wire,
)
from esfast.tasks import EvalResult, EvalTask, PairResult, PairTask, WorkerSetup, reference_digest

VERSION = b'{"v": %d, ' % PROTOCOL_VERSION  # the start of a header of this version

SAMPLES = {
    "HELLO": {
        "host": "node-1",
        "pid": 42,
        "procs": 8,
        "table": {"seed": 0, "size": 1000},
        "versions": {"esfast": "0.1.0"},
        "session": None,
    },
    "FINGERPRINT": {"fingerprint": "0123456789abcdef"},
    "READY": {"credit": 3},
    "RESULT": {
        "generation": 7,
        "results": [{"task": 1, "returns": [1.5, -2.0], "lengths": [10, 12], "obs_count": 0, "obs_arrays": None}],
        "credit": 2,
    },
    "HEARTBEAT": {},
    "FAILED": {"generation": 7, "task": 3, "error": "ValueError: bad action"},
    "WANT_THETA": {"generation": 3},
    "BYE": {},
    "WELCOME": {"worker": "w1", "run": {"env_id": "CartPole-v1", "table_size": 1000, "table_seed": 3}, "versions": {}, "session": "ab"},
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
    header = json.dumps(
        {
            "v": PROTOCOL_VERSION,
            "type": "THETA",
            "generation": 0,
            "sigma": 1.0,
            "timestep_limit": 5,
            "arrays": [{"dtype": "<f4", "shape": [4]}],
        }
    ).encode()
    array = decode([header, memoryview(payload)]).arrays[0]
    payload[0:4] = np.float32(9).tobytes()
    assert array[0] == 9.0


def header(**fields: object) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **fields}).encode()


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "empty message"),
        ([b"\xff\xfe"], "not UTF-8 JSON"),
        ([b"{not json"], "not UTF-8 JSON"),
        ([b"[1, 2]"], "not a JSON object"),
        ([b'{"v": 99, "type": "READY", "credit": 1}'], f"protocol version 99, expected {PROTOCOL_VERSION}"),
        ([b'{"type": "READY", "credit": 1}'], "protocol version None"),
        ([header(type="PICKLE")], "unknown message type 'PICKLE'"),
        ([header(type="READY")], "READY lacks field 'credit'"),
        ([header(type="READY", credit="3")], "READY field 'credit' has type str"),
        ([header(type="READY", credit=True)], "READY field 'credit' has type bool"),
        ([header(type="READY", credit=1, extra=2)], "READY has unknown fields"),
        ([VERSION + b'"type": "THETA", "generation": 1, "sigma": NaN, "timestep_limit": null}'], "non-JSON number NaN"),
        ([header(type="HEARTBEAT"), b"stray"], "describes 0 arrays, message has 1"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [2]}]), b"12345678", b"x"], "describes 1 arrays"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "|O", "shape": [1]}]), b"12345678"], "dtype '|O' not allowed"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [-1]}]), b""], "non-negative ints"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4", "shape": [3]}]), b"12345678"], "8 bytes for shape [3]"),
        ([header(type="HEARTBEAT", arrays="x")], "'arrays' must be a list"),
        ([header(type="HEARTBEAT", arrays=[{"dtype": "<f4"}]), b""], "description must be"),
        ([b"{" * 100_000], "exceeds"),
        ([VERSION + b'"type": "READY", "credit": ' + b"9" * 5000 + b"}"], "integer of 5000 digits"),
        ([VERSION + b'"type": "WELCOME", "worker": "w", "run": {"x": 1e400}}'], "not a finite double"),
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
            frames[0] = VERSION + b'"type": "' + rng.choice(list(MESSAGE_TYPES)).encode() + b'"' + frames[0][:20] + b"}"
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
    results = [
        (0, PairResult(0, (1.5, -2.0), (10, 12), *sums, 22)),
        (1, PairResult(1, (0.0, 3.0), (1, 2), None, None, 0)),
        (2, EvalResult(0, 7.25, 30)),
    ]
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


def test_the_protocol_imports_without_gymnasium_or_mujoco() -> None:
    code = "import sys, esfast.distributed.protocol; print(sorted(m for m in ('gymnasium', 'mujoco', 'ale_py') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


# The run description (WELCOME's "run") ---------------------------------------------------------

MLP = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(8,)), 58, 4, 1000, 3, "esfast-x", "node-1")


def _through_the_wire(setup: WorkerSetup) -> WorkerSetup:
    run, arrays = setup_to_wire(setup)
    message = decode([bytes(f) for f in encode(Message("WELCOME", {"worker": "w1", "run": run, "versions": {}, "session": "ab"}, arrays))])
    return setup_from_wire(message["run"], message.arrays)


def test_an_mlp_run_round_trips() -> None:
    assert _through_the_wire(MLP) == MLP


def test_a_run_carries_the_options_of_its_environment() -> None:
    setup = dataclasses.replace(MLP, env_id="Ant-v5", env_kwargs={"include_cfrc_ext_in_observation": False, "contact_force_range": [-1, 1]})
    received = _through_the_wire(setup)
    assert received == setup and received.env_kwargs == {"include_cfrc_ext_in_observation": False, "contact_force_range": [-1, 1]}
    assert _through_the_wire(MLP).env_kwargs == {}


def test_an_atari_run_carries_its_reference_batch() -> None:
    batch = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)
    setup = dataclasses.replace(
        MLP,
        env_id="ALE/Pong-v5",
        policy=PolicySettings(type="AtariPolicy", hidden_dims=(256,), nonlin_type="relu"),
        obs_dim=0,
        atari=AtariSettings(noop_max=5),
        reference_digest=reference_digest(batch),
        reference_batch=batch,
    )
    received = _through_the_wire(setup)
    assert received == setup and received.atari == AtariSettings(noop_max=5)
    assert received.reference_batch is not None
    np.testing.assert_array_equal(received.reference_batch, batch)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_params": 0}, "'num_params' must be an integer >= 1"),
        ({"obs_dim": -1}, "'obs_dim' must be an integer >= 0"),
        ({"table_name": 5}, "'table_name' must be a string or null"),
        ({"policy": {"type": "Pickle"}}, "policy.type must be one of"),
        ({"reference_digest": "0" * 32}, "reference batch is missing or does not match"),
        ({"extra": 1}, "must have exactly the fields"),
        ({"env_kwargs": ["dims"]}, "env_kwargs must be a JSON object"),
        ({"env_kwargs": {"render_mode": "human"}}, "env_kwargs.render_mode is gymnasium.make's own argument"),
        ({"env_kwargs": {"dims": {"x": 1}}}, "env_kwargs.dims must be a number"),
    ],
)
def test_a_malformed_run_is_refused(change: dict[str, object], message: str) -> None:
    run, _ = setup_to_wire(MLP)
    with pytest.raises(ValueError, match=message):
        setup_from_wire({**run, **change})


def test_a_reference_batch_that_does_not_match_its_digest_is_refused() -> None:
    batch = np.zeros((2, 1, 20, 20), dtype=np.uint8)
    run, _ = setup_to_wire(dataclasses.replace(MLP, reference_digest=reference_digest(batch), reference_batch=batch))
    with pytest.raises(ValueError, match="does not match its digest"):
        setup_from_wire(run, (np.ones_like(batch),))
