"""esfast: evolution strategies (OpenAI-ES) with a C++ core.

``esfast.OpenES`` is the ask/tell optimizer for custom loops; ``esfast.core`` holds the compiled
building blocks: shared noise tables, seeded perturbation offsets, return shaping and the
weighted noise sum behind the ES gradient. The ``esfast`` command trains policies on gymnasium
environments (``esfast.training``, ``esfast.cli``).
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "ConvForward",
    "ConvNetwork",
    "MLPForward",
    "NoiseTable",
    "OpenES",
    "Population",
    "__version__",
    "centered_ranks",
    "code_path",
    "core",
    "noise_samples",
    "normalized",
    "perturb",
    "perturb_pair",
    "sample_offsets",
    "set_code_path",
    "supported_code_paths",
    "tanh_approx",
    "weighted_noise_sum",
]
