"""esfast: evolution strategies (OpenAI-ES) with a C++ core.

``esfast.core`` holds the compiled building blocks: shared noise tables, seeded perturbation
offsets, return shaping and the weighted noise sum behind the ES gradient.
"""

from __future__ import annotations

from esfast.core import (
    NoiseTable,
    centered_ranks,
    noise_samples,
    normalized,
    perturb,
    perturb_pair,
    sample_offsets,
    weighted_noise_sum,
)

__version__ = "0.1.0"

__all__ = [
    "NoiseTable",
    "__version__",
    "centered_ranks",
    "noise_samples",
    "normalized",
    "perturb",
    "perturb_pair",
    "sample_offsets",
    "weighted_noise_sum",
]
