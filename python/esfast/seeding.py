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


def derive_seed(seed: int, purpose: Purpose, *indices: int) -> int:
    """A 63-bit seed that depends only on the arguments.

    Args:
        seed: the run's seed, >= 0.
        purpose: what the seed is for.
        indices: e.g. (generation,) or (generation, pair).
    """
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(int(purpose), *indices))
    low, high = sequence.generate_state(2, dtype=np.uint32)
    return (int(high) << 31) ^ int(low)


def derive_rng(seed: int, purpose: Purpose, *indices: int) -> np.random.Generator:
    """A numpy Generator seeded with :func:`derive_seed`."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, purpose, *indices)))
