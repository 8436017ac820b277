"""Checkpoint files: one ``.npz`` holding everything needed to continue or replay a run.

Keys: ``theta`` (float32), ``generation``, ``optimizer_*`` (optimizer state), ``obstat_sum``,
``obstat_sumsq``, ``obstat_count``, ``timestep_limit`` (-1: none), ``timesteps_total``,
``episodes_total``, ``time_elapsed``, ``seed`` (every random draw of the run derives from
(seed, generation, ...), so seed and generation are the whole RNG state), the ES settings of
``OpenES.state_dict`` and ``config`` (the resolved config as JSON). Files are written to a
temporary name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from esfast.config import Config, ConfigError, config_from_dict

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run."""


def save_checkpoint(path: Path, state: dict[str, Any], config: Config) -> None:
    """Writes ``state`` (arrays and scalars) and ``config`` to ``path`` atomically."""
    arrays = {key: np.asarray(value) for key, value in state.items()}
    arrays["config"] = np.asarray(json.dumps(config.to_dict()))
    arrays["format_version"] = np.asarray(FORMAT_VERSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)
    os.replace(temporary, path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], Config]:
    """Reads a checkpoint: (state, config).

    Raises:
        CheckpointError: missing, unreadable, or not an esfast checkpoint.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
    if "theta" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not an esfast checkpoint (no theta or config)")
    if int(state.get("format_version", -1)) != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {int(state.get('format_version', -1))}, this esfast reads {FORMAT_VERSION}")
    try:
        config = config_from_dict(json.loads(str(state.pop("config"))))
    except (ConfigError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} holds an unusable config: {error}") from None
    state = {key: (value.item() if value.ndim == 0 else value) for key, value in state.items()}
    return state, config
