"""Checkpoint files: one ``.npz`` holding everything needed to continue or replay a run.

Keys: ``theta`` (float32), ``generation``, ``optimizer_*`` (optimizer state), ``obstat_sum``,
``obstat_sumsq``, ``obstat_count``, ``timestep_limit`` (-1: none), ``timesteps_total``,
``episodes_total``, ``time_elapsed``, ``seed`` (every random draw of the run derives from
(seed, generation, ...), so seed and generation are the whole RNG state), the ES settings of
``OpenES.state_dict`` and ``config`` (the resolved config as JSON); Atari runs add
``reference_batch``. Files are written to a temporary name, flushed to disk and renamed, so a
crash or a full disk never leaves a half-written checkpoint in place of the last good one.

Reading trusts nothing in the file: it is a plain (uncompressed) zip of ``.npy`` arrays, never
unpickled; each array's header is checked against its size before any memory is taken, and the
whole state against the schema below before it is returned. Anything else (an empty, truncated,
bit-flipped or foreign file) is a :class:`~esfast.errors.CheckpointError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from esfast.config import (
    MAX_COUNT,
    MAX_EPISODES_PER_BATCH,
    MAX_NOISE_TABLE_SIZE,
    MAX_SEED,
    OPTIMIZERS,
    RETURN_PROC_MODES,
    Config,
    config_from_dict,
)
from esfast.errors import CheckpointError, ConfigError
from esfast.optimizers import make_optimizer

__all__ = ["FORMAT_VERSION", "MAX_ENTRIES", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1
MAX_ENTRIES = 256  # arrays in one file; an esfast checkpoint has about 25

# What reading a damaged or foreign file can raise, from zipfile, zlib, numpy's .npy parser or the OS.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    MemoryError,
    OverflowError,
    RuntimeError,
    NotImplementedError,
)


def save_checkpoint(path: str | Path, state: dict[str, Any], config: Config) -> None:
    """Writes ``state`` (arrays and scalars) and ``config`` to ``path`` atomically.

    The file is written as ``<path>.tmp``, flushed to disk (fsync) and renamed over ``path``.

    Raises:
        ValueError: a value numpy could store only by pickling it.
        OSError: the file could not be written (disk full, too many open files, ...), in one line
            with the original ``errno``; ``path`` is left as it was and no ``.tmp`` file remains.
    """
    path = Path(path)
    arrays = {key: np.asarray(value) for key, value in state.items()}
    for key, value in arrays.items():
        if value.dtype.hasobject:
            raise ValueError(f"checkpoint value {key!r} is not numbers or a string (got {type(state[key]).__name__})")
    arrays["config"] = np.asarray(json.dumps(config.to_dict()))
    arrays["format_version"] = np.asarray(FORMAT_VERSION)
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as its options
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:  # also Ctrl-C: never leave the partial file behind
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            failure = OSError(f"cannot write checkpoint {path}: {_reason(error)}")
            failure.errno = error.errno
            raise failure from error
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Makes the rename durable where the platform allows it (POSIX); best effort."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], Config]:
    """Reads and checks a checkpoint: (state, config).

    Scalars come back as Python numbers and strings, arrays as numpy arrays.

    Raises:
        CheckpointError: missing, unreadable (empty, truncated, damaged), not an esfast checkpoint,
            of another format version, or holding a value out of its range; one line.
    """
    path = Path(path)
    try:
        arrays = _read_arrays(path)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except CheckpointError:
        raise
    except _READ_ERRORS as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(error)}") from None
    if "theta" not in arrays or "config" not in arrays:
        raise CheckpointError(f"{path} is not an esfast checkpoint (no theta or config)")
    version = arrays.get("format_version")
    if version is None or version.ndim != 0 or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        shown = "none" if version is None else _value(version)
        raise CheckpointError(f"{path} has checkpoint format {shown}, this esfast reads {FORMAT_VERSION}")
    config = _read_config(path, arrays.pop("config"))
    _check_state(path, arrays)
    state = {key: (value.item() if value.ndim == 0 else value) for key, value in arrays.items()}
    return state, config


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`save_checkpoint`, each checked before it is read."""
    length = path.stat().st_size
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise CheckpointError(f"{path} is not an esfast checkpoint ({len(entries)} entries, at most {MAX_ENTRIES})")
        for info in entries:
            name = info.filename.removesuffix(".npy")
            if name == info.filename or name in arrays:
                raise CheckpointError(f"{path} is not an esfast checkpoint (entry {_short(info.filename)} is not one array)")
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > length:
                raise CheckpointError(
                    f"{path} is not an esfast checkpoint (entry {_short(info.filename)} is compressed or larger than the file)"
                )
            with archive.open(info) as entry:
                version = np.lib.format.read_magic(entry)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(entry)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(entry)
                else:
                    raise CheckpointError(f"{path}: array {_short(name)} has .npy format {version}, not 1.0 or 2.0")
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: array {_short(name)} holds Python objects, which a checkpoint never does")
                if math.prod(shape) * dtype.itemsize != info.file_size - entry.tell():
                    raise CheckpointError(f"{path}: array {_short(name)} of shape {shape} does not fit its {info.file_size} bytes")
                entry.seek(0)
                arrays[name] = np.lib.format.read_array(entry, allow_pickle=False)
                if entry.read(1):  # at the end, zipfile has compared the CRC
                    raise CheckpointError(f"{path}: array {_short(name)} is followed by stray bytes")
    return arrays


def _read_config(path: Path, value: np.ndarray) -> Config:
    if value.ndim != 0 or value.dtype.kind != "U":
        raise CheckpointError(f"{path} holds an unusable config: not a JSON string")
    try:
        data = json.loads(str(value))
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} holds an unusable config: {_reason(error)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds an unusable config: not a JSON object")
    try:
        return config_from_dict(data)
    except ConfigError as error:
        raise CheckpointError(f"{path} holds an unusable config: {error}") from None


# Scalars of the state: key -> (kind, low, high); "int" is an integer in [low, high], "real" a
# finite number in [low, high] (low excluded where marked), "text" one of the given strings.
_INTEGERS: dict[str, tuple[int, int]] = {
    "generation": (0, MAX_COUNT),
    "seed": (0, MAX_SEED - 1),
    "pop_pairs": (1, MAX_EPISODES_PER_BATCH // 2),
    "table_size": (1, MAX_NOISE_TABLE_SIZE),
    "table_seed": (0, 2**64 - 1),
    "optimizer_t": (0, MAX_COUNT),
    "timesteps_total": (0, MAX_COUNT),
    "episodes_total": (0, MAX_COUNT),
}
_REALS: dict[str, tuple[float, bool]] = {  # key -> (low, low allowed)
    "sigma": (0.0, False),
    "l2coeff": (0.0, True),
    "time_elapsed": (0.0, True),
    "obstat_count": (0.0, False),
}
_TEXTS: dict[str, tuple[str, ...]] = {"optimizer": OPTIMIZERS, "return_proc_mode": RETURN_PROC_MODES}


def _check_state(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Checks every key an esfast checkpoint holds: presence, dtype, shape and range."""

    def fail(message: str) -> NoReturn:
        raise CheckpointError(f"{path} {message}")

    missing = [key for key in (*_INTEGERS, *_REALS, *_TEXTS, "timestep_limit", "obstat_sum", "obstat_sumsq") if key not in arrays]
    if missing:
        fail(f"is not a complete esfast checkpoint: it lacks {', '.join(missing)}")
    for key, (low, high) in _INTEGERS.items():
        value = arrays[key]
        if not (value.ndim == 0 and value.dtype.kind in "iu" and low <= int(value) <= high):
            fail(f"holds {key} = {_value(value)}, which must be an integer in [{low}, {_power(high)}]")
    limit = arrays["timestep_limit"]
    if not (limit.ndim == 0 and limit.dtype.kind in "iu" and (int(limit) == -1 or 1 <= int(limit) <= MAX_COUNT)):
        fail(f"holds timestep_limit = {_value(limit)}, which must be -1 (none) or an integer in [1, {_power(MAX_COUNT)}]")
    for key, (least, inclusive) in _REALS.items():
        value = arrays[key]
        number = float(value) if value.ndim == 0 and value.dtype.kind in "iuf" else math.nan
        if not (math.isfinite(number) and (number >= least if inclusive else number > least)):
            fail(f"holds {key} = {_value(value)}, which must be a finite number {'>=' if inclusive else '>'} {least:g}")
    for key, allowed in _TEXTS.items():
        value = arrays[key]
        if not (value.ndim == 0 and value.dtype.kind == "U" and str(value) in allowed):
            fail(f"holds {key} = {_value(value)}, which must be one of {', '.join(allowed)}")
    theta = arrays["theta"]
    if not (theta.dtype == np.float32 and theta.ndim == 1 and theta.size >= 1):
        fail(f"holds theta of dtype {theta.dtype} and shape {theta.shape}; it must be float32 of shape (num_params,)")
    if not np.isfinite(theta).all():
        fail("holds a theta with NaN or infinite values")
    for name in make_optimizer(str(arrays["optimizer"]), 1, stepsize=1.0).state_dict():
        key = f"optimizer_{name}"
        if key in _INTEGERS:
            continue
        if key not in arrays:
            fail(f"is not a complete esfast checkpoint: it lacks {key} (state of its {arrays['optimizer']} optimizer)")
        moment = arrays[key]
        if not (moment.dtype == np.float32 and moment.shape == theta.shape and np.isfinite(moment).all()):
            fail(f"holds {key} of dtype {moment.dtype} and shape {moment.shape}; it must be finite float32 of theta's shape {theta.shape}")
    total, sumsq = arrays["obstat_sum"], arrays["obstat_sumsq"]
    if not (total.dtype == sumsq.dtype == np.float64 and total.ndim == 1 and sumsq.shape == total.shape):
        fail(
            f"holds observation sums of dtypes {total.dtype}, {sumsq.dtype} and shapes {total.shape}, {sumsq.shape};"
            " they must be float64 of one shape (obs_dim,)"
        )
    if not (np.isfinite(total).all() and np.isfinite(sumsq).all() and (sumsq >= 0).all()):
        fail("holds observation sums with NaN or infinite values or negative sums of squares")
    batch = arrays.get("reference_batch")
    if batch is not None and not (batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[0] >= 2):
        fail(
            f"holds a reference_batch of dtype {batch.dtype} and shape {batch.shape};"
            " it must be uint8 of shape (N >= 2, stack, height, width)"
        )
    record = arrays.get("log_record")
    if record is not None and not (record.ndim == 0 and record.dtype.kind == "U"):
        fail(f"holds a log_record of dtype {record.dtype}; it must be a JSON string")


def _value(value: np.ndarray) -> str:
    """An array from the file as a message shows it: short, one line."""
    if value.ndim == 0 and value.dtype.kind in "iufU":
        return _short(value.item())
    return f"an array of dtype {value.dtype} and shape {value.shape}"


def _power(value: int) -> str:
    return f"2**{value.bit_length() - 1}" if value > 2**16 and value & (value - 1) == 0 else str(value)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(error: BaseException) -> str:
    """An exception's message on one line (its type's name if it has none)."""
    text = (error.strerror if isinstance(error, OSError) and error.strerror else str(error)) or type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."
