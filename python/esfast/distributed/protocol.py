"""The esfast wire protocol: message types, framing, validation (see ``docs/protocol.md``).

A message is ``[header, payload...]``: a small UTF-8 JSON header and one raw frame per array.
:func:`encode` builds the frames; :func:`decode` checks every rule (version, type, fields, array
descriptions against frame sizes) and raises :class:`ProtocolError` for anything else, so a
malformed or hostile message can be logged, counted and dropped. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esfast.config import MAX_COUNT, Config, config_from_dict
from esfast.errors import ConfigError, ProtocolError
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, Result, Task, WorkerSetup, reference_digest

PROTOCOL_VERSION = 4
MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 4096
MAX_INT_DIGITS = 20  # any int64, and no more
MAX_ARRAY_ELEMENTS = 1 << 32  # per array, and per dimension
ALLOWED_DTYPES = ("<f4", "<f8", "<i8", "|u1")

# A message's tasks or results are split so that its header stays far below MAX_HEADER_BYTES
# (a task or result object takes about 110 bytes of JSON).
MAX_TASKS_PER_MESSAGE = 256
MAX_RESULTS_PER_MESSAGE = 256
# The most credit a host may hold per evaluator process it announced; more is clipped.
MAX_CREDIT_PER_PROC = 4
MAX_PROCS_PER_HOST = 4096  # evaluator processes a host may announce

# Liveness and backoff, in seconds (see docs/protocol.md, "Silence, reconnection and versions").
HEARTBEAT_INTERVAL = 1.0
LIVENESS = 5
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 8.0
THETA_REQUEST_INTERVAL = HEARTBEAT_INTERVAL  # a host asks again for a missing θ, the master answers, at most this often


# Field rules per message type: name -> (accepted Python types, allows None).
_INT = (int,)
_NUMBER = (int, float)
_SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "HELLO": {
        "host": ((str,), False),
        "pid": (_INT, False),
        "procs": (_INT, False),
        "table": ((dict,), True),
        "versions": ((dict,), False),
        "session": ((str,), True),
    },
    "FINGERPRINT": {"fingerprint": ((str,), False)},
    "READY": {"credit": (_INT, False)},
    "RESULT": {"generation": (_INT, False), "results": ((list,), False), "credit": (_INT, False)},
    "HEARTBEAT": {},
    "FAILED": {"generation": (_INT, False), "task": (_INT, False), "error": ((str,), False)},
    "WANT_THETA": {"generation": (_INT, False)},
    "BYE": {},
    "WELCOME": {"worker": ((str,), False), "run": ((dict,), False), "versions": ((dict,), False), "session": ((str,), False)},
    "REFUSE": {"reason": ((str,), False)},
    "THETA": {"generation": (_INT, False), "sigma": (_NUMBER, False), "timestep_limit": (_INT, True)},
    "TASKS": {"generation": (_INT, False), "tasks": ((list,), False)},
    "STOP": {"reason": ((str,), False)},
}
MESSAGE_TYPES = tuple(_SCHEMAS)
_RESERVED = ("v", "type", "arrays")


@dataclass(frozen=True)
class Message:
    """A decoded (or to-be-encoded) message: its type, its fields and its arrays."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: tuple[np.ndarray, ...] = ()

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


def encode(message: Message) -> list[bytes | memoryview]:
    """The frames of ``message``: ``[header, payload...]``.

    Raises:
        ProtocolError: an unknown type, missing or reserved fields, or an array whose dtype the
            protocol does not carry.
    """
    if message.type not in _SCHEMAS:
        raise ProtocolError(f"unknown message type {message.type!r}")
    for name in _RESERVED:
        if name in message.fields:
            raise ProtocolError(f"field name {name!r} is reserved")
    _check_fields(message.type, message.fields)
    descriptions, payload = [], []
    for array in message.arrays:
        contiguous = np.ascontiguousarray(array)
        dtype = contiguous.dtype.newbyteorder("<").str if contiguous.dtype.byteorder == "=" else contiguous.dtype.str
        if dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"arrays of dtype {contiguous.dtype} are not carried (allowed: {', '.join(ALLOWED_DTYPES)})")
        descriptions.append({"dtype": dtype, "shape": list(contiguous.shape)})
        payload.append(contiguous.data.cast("B"))
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": message.type, **message.fields}
    if descriptions:
        header["arrays"] = descriptions
    encoded = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(encoded) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(encoded)} bytes exceeds {MAX_HEADER_BYTES}")
    return [encoded, *payload]


def decode(frames: Sequence[bytes | memoryview]) -> Message:
    """Parses and validates the frames of one message (without a ROUTER identity frame).

    Arrays are read-only views of the payload frames, not copies.

    Raises:
        ProtocolError: for any deviation from docs/protocol.md.
    """
    if not frames:
        raise ProtocolError("empty message")
    raw = bytes(frames[0]) if not isinstance(frames[0], bytes) else frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = _loads(raw)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(f"header is not UTF-8 JSON: {error}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    kind = header.get("type")
    if kind not in _SCHEMAS:
        raise ProtocolError(f"unknown message type {kind!r}")
    descriptions = header.get("arrays", [])
    fields = {k: v for k, v in header.items() if k not in _RESERVED}
    _check_fields(kind, fields)
    arrays = _decode_arrays(descriptions, frames[1:])
    return Message(kind, fields, arrays)


def peek(frames: Sequence[bytes | memoryview]) -> tuple[object, object]:
    """(version, type) of a message that :func:`decode` may refuse, or (None, None) if unreadable.

    Lets a peer of another protocol version be told so, instead of being dropped in silence.
    """
    try:
        header = _loads(bytes(frames[0])[:MAX_HEADER_BYTES])
    except (IndexError, ValueError, RecursionError):  # ProtocolError is a ValueError too
        return None, None
    return (header.get("v"), header.get("type")) if isinstance(header, dict) else (None, None)


def _loads(raw: bytes) -> Any:
    """JSON, with the numbers a peer could use to make later arithmetic fail refused here."""
    return _DECODER.decode(raw.decode("utf-8"))


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"header holds the non-JSON number {name}")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"header holds the number {text[:40]}, which is not a finite double")
    return value


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ProtocolError(f"header holds an integer of {len(text)} digits")
    return int(text)


# One decoder for all messages: making one per call costs a third of parsing a small header.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int)


def _check_fields(kind: str, fields: dict[str, Any]) -> None:
    schema = _SCHEMAS[kind]
    for name, (types, nullable) in schema.items():
        if name not in fields:
            raise ProtocolError(f"{kind} lacks field {name!r}")
        value = fields[name]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise ProtocolError(f"{kind} field {name!r} has type {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"{kind} field {name!r} is not finite")
    extra = set(fields) - set(schema)
    if extra:
        raise ProtocolError(f"{kind} has unknown fields {sorted(extra)}")


def _decode_arrays(descriptions: object, payload: Sequence[bytes | memoryview]) -> tuple[np.ndarray, ...]:
    if not isinstance(descriptions, list) or len(descriptions) > MAX_ARRAYS:
        raise ProtocolError(f"'arrays' must be a list of at most {MAX_ARRAYS} descriptions")
    if len(descriptions) != len(payload):
        raise ProtocolError(f"header describes {len(descriptions)} arrays, message has {len(payload)} payload frames")
    arrays = []
    for index, (description, frame) in enumerate(zip(descriptions, payload)):
        if not isinstance(description, dict) or set(description) != {"dtype", "shape"}:
            raise ProtocolError(f"array {index}: description must be {{'dtype', 'shape'}}")
        dtype, shape = description["dtype"], description["shape"]
        if dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {index}: dtype {dtype!r} not allowed")
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ProtocolError(f"array {index}: shape must be a list of at most 8 non-negative ints")
        if any(d > MAX_ARRAY_ELEMENTS for d in shape) or math.prod(d for d in shape if d) > MAX_ARRAY_ELEMENTS:
            raise ProtocolError(f"array {index}: shape {shape} is larger than {MAX_ARRAY_ELEMENTS} elements")
        itemsize = np.dtype(dtype).itemsize
        expected = math.prod(shape) * itemsize
        buffer = memoryview(frame)
        if buffer.nbytes != expected:
            raise ProtocolError(f"array {index}: {buffer.nbytes} bytes for shape {shape} of {dtype} ({expected} expected)")
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        array.flags.writeable = False
        arrays.append(array)
    return tuple(arrays)


# Addresses -----------------------------------------------------------------------------------


def check_endpoint(endpoint: str, *, bind: bool) -> str:
    """Checks a ZeroMQ endpoint given on the command line: ``tcp://HOST:PORT`` with a port in
    1..65535 (0 or ``*`` also when binding: any free port), or ``ipc://PATH``.

    Raises:
        ConfigError: anything else (ZeroMQ itself would take port 99999 as another port).
    """
    option = "--bind" if bind else "--master"
    scheme, separator, rest = endpoint.partition("://")
    if scheme == "ipc" and separator and rest:
        return endpoint
    host, colon, port = rest.rpartition(":")
    if scheme != "tcp" or not separator or not colon or not host:
        raise ConfigError(f"{option} must be tcp://HOST:PORT, got {endpoint!r}")
    if bind and port == "*":
        return endpoint
    if not port.isdigit() or not (0 if bind else 1) <= int(port) <= 65535:
        raise ConfigError(f"{option} {endpoint!r}: the port must be {'0 to' if bind else '1 to'} 65535")
    return endpoint


# θ -------------------------------------------------------------------------------------------


def theta_message(theta: np.ndarray, spec: GenerationSpec) -> Message:
    """The ``THETA`` message of a generation: its settings as fields, θ and the statistics as arrays."""
    fields = {"generation": spec.generation, "sigma": float(spec.sigma), "timestep_limit": spec.timestep_limit}
    return Message("THETA", fields, (theta, spec.obs_mean, spec.obs_std))


def theta_from_message(message: Message, num_params: int, obs_dim: int) -> tuple[np.ndarray, GenerationSpec]:
    """θ and the generation's settings from a decoded ``THETA`` (arrays are views of the frames).

    Raises:
        ProtocolError: arrays of other shapes or dtypes than the run's, a sigma <= 0, a limit < 1.
    """
    shapes = [a.shape for a in message.arrays]
    expected = [(num_params,), (obs_dim,), (obs_dim,)]
    if shapes != expected or any(a.dtype != np.float32 for a in message.arrays):
        raise ProtocolError(f"THETA arrays {shapes}, expected float32 {expected}")
    limit = message["timestep_limit"]
    if message["sigma"] <= 0 or (limit is not None and limit < 1) or message["generation"] < 0:
        raise ProtocolError("THETA needs generation >= 0, sigma > 0 and timestep_limit >= 1 or null")
    theta, mean, std = message.arrays
    return theta, GenerationSpec(message["generation"], float(message["sigma"]), mean, std, limit)


# Tasks and results ---------------------------------------------------------------------------
# A generation's tasks are numbered by their index in the generation: pairs first, then the
# evaluation episodes. (generation, task) names a task uniquely within a run.


def task_to_wire(task_id: int, task: Task) -> dict[str, Any]:
    """The JSON object of one task in a ``TASKS`` message."""
    if isinstance(task, PairTask):
        return {
            "task": task_id,
            "kind": "pair",
            "pair": task.pair,
            "offset": task.offset,
            "episode_seed": task.episode_seed,
            "record_obs": task.record_obs,
        }
    return {"task": task_id, "kind": "eval", "index": task.index, "episode_seed": task.episode_seed}


def _field(obj: dict[str, Any], name: str, kind: type, *, minimum: int | None = None) -> Any:
    value: Any = obj.get(name)
    right_kind = isinstance(value, kind) and isinstance(value, bool) is (kind is bool)
    if not right_kind:
        raise ProtocolError(f"task or result field {name!r} must be {kind.__name__}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ProtocolError(f"task or result field {name!r} must be >= {minimum}, got {value}")
    return value


def _keys(obj: object, keys: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != keys:
        raise ProtocolError(f"expected an object with keys {sorted(keys)}, got {obj!r:.200}")
    return obj


_PAIR_TASK_KEYS = {"task", "kind", "pair", "offset", "episode_seed", "record_obs"}
_EVAL_TASK_KEYS = {"task", "kind", "index", "episode_seed"}


def task_from_wire(obj: object) -> tuple[int, Task]:
    """(task id, task) from one task object of a ``TASKS`` message.

    Raises:
        ProtocolError: a malformed task object.
    """
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind == "pair":
        obj = _keys(obj, _PAIR_TASK_KEYS)
        task: Task = PairTask(
            _field(obj, "pair", int, minimum=0),
            _field(obj, "offset", int, minimum=0),
            _field(obj, "episode_seed", int, minimum=0),
            _field(obj, "record_obs", bool),
        )
    elif kind == "eval":
        obj = _keys(obj, _EVAL_TASK_KEYS)
        task = EvalTask(_field(obj, "index", int, minimum=0), _field(obj, "episode_seed", int, minimum=0))
    else:
        raise ProtocolError(f"task kind must be 'pair' or 'eval', got {obj!r:.200}")
    return _field(obj, "task", int, minimum=0), task


def result_message(generation: int, results: Sequence[tuple[int, Result]], *, credit: int = 0) -> Message:
    """A ``RESULT`` message for ``(task id, result)`` pairs; observation sums travel as f8 arrays.

    Args:
        generation: the generation of every result.
        results: at most MAX_RESULTS_PER_MESSAGE ``(task id, result)`` pairs.
        credit: tasks the host can take now, given back with the results (saves a ``READY``).
    """
    objects: list[dict[str, Any]] = []
    arrays: list[np.ndarray] = []
    for task_id, result in results:
        if isinstance(result, PairResult):
            index = None
            if result.obs_sum is not None and result.obs_sumsq is not None:
                index = len(arrays)
                arrays += [np.asarray(result.obs_sum, dtype="<f8"), np.asarray(result.obs_sumsq, dtype="<f8")]
            objects.append(
                {
                    "task": task_id,
                    "returns": [float(r) for r in result.returns],
                    "lengths": [int(n) for n in result.lengths],
                    "obs_count": int(result.obs_count),
                    "obs_arrays": index,
                }
            )
        else:
            objects.append({"task": task_id, "return": float(result.ret), "length": int(result.length)})
    return Message("RESULT", {"generation": generation, "results": objects, "credit": credit}, tuple(arrays))


_NUMBERS = (int, float)
_PAIR_RESULT_KEYS = {"task", "returns", "lengths", "obs_count", "obs_arrays"}
_EVAL_RESULT_KEYS = {"task", "return", "length"}


def _count(value: object, name: str) -> int:
    # type() is exact: JSON gives int, float, bool, and a bool is not a count.
    if type(value) is not int:
        raise ProtocolError(f"result field {name!r} must be int, got {value!r:.100}")
    if not 0 <= value <= MAX_COUNT:
        raise ProtocolError(f"result field {name!r} must be >= 0 and <= 2**53, got {value}")
    return value


def _number(value: object, name: str) -> float:
    if type(value) not in _NUMBERS or not math.isfinite(value):  # type: ignore[arg-type]
        raise ProtocolError(f"result field {name!r} must be a finite number, got {value!r:.100}")
    return float(value)  # type: ignore[arg-type]


def results_from_message(message: Message, tasks: Sequence[Task], obs_dim: int) -> list[tuple[int, Result]]:
    """The ``(task id, result)`` pairs of a ``RESULT`` message, checked against the generation's tasks.

    This runs for every result the master absorbs, so its checks are plain type tests.

    Args:
        message: a decoded ``RESULT``.
        tasks: the generation's tasks, indexed by task id.
        obs_dim: the length of observation-sum arrays.

    Raises:
        ProtocolError: a malformed result, an unknown task id, a result of the wrong kind for its
            task, or observation arrays of the wrong shape.
    """
    parsed: list[tuple[int, Result]] = []
    arrays = message.arrays
    for obj in message["results"]:
        if type(obj) is not dict:
            raise ProtocolError(f"a result must be an object, got {obj!r:.100}")
        task_id = _count(obj.get("task"), "task")
        if task_id >= len(tasks):
            raise ProtocolError(f"result for task {task_id}; the generation has {len(tasks)} tasks")
        task = tasks[task_id]
        if type(task) is PairTask:
            if obj.keys() != _PAIR_RESULT_KEYS:
                raise ProtocolError(f"expected an object with keys {sorted(_PAIR_RESULT_KEYS)}, got {obj!r:.200}")
            returns, lengths, index = obj["returns"], obj["lengths"], obj["obs_arrays"]
            if type(returns) is not list or len(returns) != 2 or type(lengths) is not list or len(lengths) != 2:
                raise ProtocolError("a pair result needs two returns and two lengths")
            count = _count(obj["obs_count"], "obs_count")
            obs_sum = obs_sumsq = None
            if index is not None:
                if not task.record_obs:
                    raise ProtocolError(f"observation sums for task {task_id}, which records none")
                index = _count(index, "obs_arrays")
                pair = arrays[index : index + 2]
                if len(pair) != 2 or any(a.dtype != np.float64 or a.shape != (obs_dim,) for a in pair):
                    raise ProtocolError(f"observation sums must be two <f8 arrays of shape ({obs_dim},)")
                if not (np.isfinite(pair[0]).all() and np.isfinite(pair[1]).all()):
                    raise ProtocolError("observation sums must be finite")
                obs_sum, obs_sumsq = pair
            elif count:
                raise ProtocolError("a result with observations counted must carry their sums")
            result: Result = PairResult(
                task.pair,
                (_number(returns[0], "returns"), _number(returns[1], "returns")),
                (_count(lengths[0], "lengths"), _count(lengths[1], "lengths")),
                obs_sum,
                obs_sumsq,
                count,
            )
        else:
            if obj.keys() != _EVAL_RESULT_KEYS:
                raise ProtocolError(f"expected an object with keys {sorted(_EVAL_RESULT_KEYS)}, got {obj!r:.200}")
            result = EvalResult(task.index, _number(obj["return"], "return"), _count(obj["length"], "length"))  # type: ignore[union-attr]
        parsed.append((task_id, result))
    return parsed


# The run description -----------------------------------------------------------------------


def setup_to_wire(setup: WorkerSetup) -> tuple[dict[str, Any], tuple[np.ndarray, ...]]:
    """The ``run`` object of a ``WELCOME`` message and its arrays (the reference batch, if any)."""
    config = Config(policy=setup.policy, atari=setup.atari).to_dict()
    run = {
        "env_id": setup.env_id,
        "env_module": setup.env_module,
        "env_kwargs": setup.env_kwargs,
        "policy": config["policy"],
        "atari": config.get("atari"),
        "num_params": setup.num_params,
        "obs_dim": setup.obs_dim,
        "table_size": setup.table_size,
        "table_seed": setup.table_seed,
        "table_name": setup.table_name,
        "table_host": setup.table_host,
        "reference_digest": setup.reference_digest,
    }
    return run, (() if setup.reference_batch is None else (setup.reference_batch,))


def setup_from_wire(run: object, arrays: tuple[np.ndarray, ...] = ()) -> WorkerSetup:
    """Parses and validates a ``run`` object and its arrays.

    Raises:
        ValueError: a malformed run object (the message says which field).
    """
    keys = {
        "env_id",
        "env_module",
        "env_kwargs",
        "policy",
        "atari",
        "num_params",
        "obs_dim",
        "table_size",
        "table_seed",
        "table_name",
        "table_host",
        "reference_digest",
    }
    if not isinstance(run, dict) or set(run) != keys:
        raise ValueError(f"run description must have exactly the fields {sorted(keys)}")
    for name, low in (("num_params", 1), ("obs_dim", 0), ("table_size", 1), ("table_seed", 0)):
        value = run[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"run field {name!r} must be an integer >= {low}, got {value!r:.100}")
    for name in ("table_name", "table_host", "env_module", "reference_digest"):
        if run[name] is not None and not isinstance(run[name], str):
            raise ValueError(f"run field {name!r} must be a string or null")
    sections = {"env_id": run["env_id"], "env_module": run["env_module"], "env_kwargs": run["env_kwargs"], "policy": run["policy"]}
    if run["atari"] is not None:
        sections["atari"] = run["atari"]
    try:
        config = config_from_dict(sections)
    except (ConfigError, TypeError) as error:
        raise ValueError(f"run description: {error}") from None
    batch = None
    if run["reference_digest"] is not None:
        if len(arrays) != 1 or arrays[0].dtype != np.uint8 or reference_digest(arrays[0]) != run["reference_digest"]:
            raise ValueError("the reference batch is missing or does not match its digest")
        batch = arrays[0]
    elif arrays:
        raise ValueError("arrays sent without a reference digest")
    return WorkerSetup(
        config.env_id,
        config.env_module,
        config.policy,
        run["num_params"],
        run["obs_dim"],
        run["table_size"],
        run["table_seed"],
        run["table_name"],
        run["table_host"],
        config.atari,
        run["reference_digest"],
        batch,
        env_kwargs=config.env_kwargs,
    )
