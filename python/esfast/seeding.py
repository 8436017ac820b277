"""Seeds derived from (run seed, purpose, generation, index).

Everything random in a run (noise offsets, episode seeds, action noise, which episodes record
observation statistics) is drawn from a seed derived here, never from a generator carried
from one generation to the next. So any piece of a run can be recomputed anywhere, by any
process, and a run resumed from a checkpoint continues exactly as if it had never stopped.

Derivation uses numpy's ``SeedSequence``, whose output numpy keeps stable across versions and
platforms.
"""

from __future__ import annotations

import enum

import numpy as np


class Purpose(enum.IntEnum):
    """What a derived seed is for; part of the derivation, so purposes never share a seed."""

    INIT = 0
    OFFSETS = 1
    EPISODE = 2
    OBSTAT = 3
    EVAL = 4
    REFERENCE_BATCH = 5


_PURPOSES = tuple(Purpose)


def _check_natural(value: object, name: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"derive_seed: {name} must be an integer >= 0, got {value!r}")


def derive_seed(seed: int, purpose: Purpose, *indices: int) -> int:
    """A 63-bit seed that depends only on the arguments.

    The derivation is pinned by golden values in ``tests/test_seeding.py``: every determinism
    promise (same seed, same run; resume; any number of workers) rests on it never changing.

    Args:
        seed: the run's seed, an integer >= 0.
        purpose: what the seed is for.
        indices: integers >= 0, e.g. (generation,) or (generation, pair).

    Raises:
        ValueError: a seed or index that is not an integer >= 0 (bools are not integers here), or
            a purpose that is not a :class:`Purpose`.
    """
    _check_natural(seed, "seed")
    for i, index in enumerate(indices):
        _check_natural(index, f"index {i}")
    given: object = purpose  # checked as whatever a caller passed, not as the annotation says
    if isinstance(given, bool) or not isinstance(given, int) or given not in _PURPOSES:
        raise ValueError(f"derive_seed: purpose must be a Purpose ({', '.join(p.name for p in Purpose)}), got {purpose!r}")
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(purpose), *(int(index) for index in indices)))
    low, high = sequence.generate_state(2, dtype=np.uint32)
    return (int(high) << 31) ^ int(low)


def derive_rng(seed: int, purpose: Purpose, *indices: int) -> np.random.Generator:
    """A numpy Generator seeded with :func:`derive_seed`."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, purpose, *indices)))
