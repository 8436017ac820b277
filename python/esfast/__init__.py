"""esfast: evolution strategies (OpenAI-ES) with a C++ core.

``esfast.OpenES`` is the ask/tell optimizer for custom loops; ``esfast.core`` holds the compiled
building blocks: shared noise tables, seeded perturbation offsets, return shaping and the
weighted noise sum behind the ES gradient. The ``esfast`` command trains policies on gymnasium
environments (``esfast.training``, ``esfast.cli``); ``esfast.train`` and ``esfast.load_policy``
do the same from Python (``esfast.api``), loaded on first use so that ``import esfast`` imports
neither gymnasium nor the environments.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from esfast import core
from esfast.core import (
    ConvForward,
    ConvNetwork,
    MLPForward,
    NoiseTable,
    centered_ranks,
    code_path,
    noise_samples,
    normalized,
    perturb,
    perturb_pair,
    sample_offsets,
    set_code_path,
    supported_code_paths,
    tanh_approx,
    weighted_noise_sum,
)
from esfast.es import OpenES, Population

if TYPE_CHECKING:
    from esfast.api import LoadedPolicy, TrainingResult, load_policy, train

__version__ = "0.1.0"

# Names served by __getattr__ from the module that defines them, imported on first use.
_LAZY = {"LoadedPolicy": "esfast.api", "TrainingResult": "esfast.api", "load_policy": "esfast.api", "train": "esfast.api"}

__all__ = [
    "ConvForward",
    "ConvNetwork",
    "LoadedPolicy",
    "MLPForward",
    "NoiseTable",
    "OpenES",
    "Population",
    "TrainingResult",
    "__version__",
    "centered_ranks",
    "code_path",
    "core",
    "load_policy",
    "noise_samples",
    "normalized",
    "perturb",
    "perturb_pair",
    "sample_offsets",
    "set_code_path",
    "supported_code_paths",
    "tanh_approx",
    "train",
    "weighted_noise_sum",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups do not come here
        return value
    raise AttributeError(f"module 'esfast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
