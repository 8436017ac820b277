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

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 4096
ALLOWED_DTYPES = ("<f4", "<f8", "<i8")

# Liveness and backoff, in seconds (see docs/protocol.md, "Silence, reconnection and versions").
HEARTBEAT_INTERVAL = 1.0
LIVENESS = 5
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 8.0


class ProtocolError(ValueError):
    """A message that breaks the protocol; the text says which rule."""


# Field rules per message type: name -> (accepted Python types, allows None).
_INT = (int,)
_NUMBER = (int, float)
_SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "HELLO": {"host": ((str,), False), "pid": (_INT, False), "procs": (_INT, False)},
    "READY": {"credit": (_INT, False)},
    "RESULT": {"generation": (_INT, False), "results": ((list,), False)},
    "HEARTBEAT": {},
    "BYE": {},
    "WELCOME": {"worker": ((str,), False), "run": ((dict,), False)},
    "REFUSE": {"reason": ((str,), False)},
    "THETA": {"generation": (_INT, False), "sigma": (_NUMBER, False), "timestep_limit": (_INT, True)},
    "TASKS": {"generation": (_INT, False), "tasks": ((list,), False)},
    "WAIT": {"seconds": (_NUMBER, False)},
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
        payload.append(memoryview(contiguous).cast("B"))
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
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
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


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"header holds the non-JSON number {name}")


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
        raise ProtocolError("'arrays' must be a list of at most %d descriptions" % MAX_ARRAYS)
    if len(descriptions) != len(payload):
        raise ProtocolError(f"header describes {len(descriptions)} arrays, message has {len(payload)} payload frames")
    arrays = []
    for index, (description, frame) in enumerate(zip(descriptions, payload)):
        if not isinstance(description, dict) or set(description) != {"dtype", "shape"}:
            raise ProtocolError(f"array {index}: description must be {{'dtype', 'shape'}}")
        dtype, shape = description["dtype"], description["shape"]
        if dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {index}: dtype {dtype!r} not allowed")
        if not isinstance(shape, list) or len(shape) > 8 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ProtocolError(f"array {index}: shape must be a list of at most 8 non-negative ints")
        itemsize = np.dtype(dtype).itemsize
        expected = math.prod(shape) * itemsize
        buffer = memoryview(frame)
        if buffer.nbytes != expected:
            raise ProtocolError(f"array {index}: {buffer.nbytes} bytes for shape {shape} of {dtype} ({expected} expected)")
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        array.flags.writeable = False
        arrays.append(array)
    return tuple(arrays)
