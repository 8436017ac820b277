"""Seed derivation: golden values that pin it, purposes that never collide, bad input refused."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from esfast.seeding import Purpose, derive_rng, derive_seed

# Computed once and written down: every determinism promise (same seed, same run; a resumed run
# equal to an uninterrupted one; any number of workers) rests on these never changing. A change
# here changes every run's noise, episodes and initial θ: it needs a new checkpoint format and a
# note in docs/determinism.md, never a quiet update of the numbers.
GOLDEN = [
    (0, Purpose.INIT, (), 4334430515835155473),
    (0, Purpose.OFFSETS, (0,), 5769891172132785917),
    (0, Purpose.OFFSETS, (1,), 1328479795388060930),
    (7, Purpose.EPISODE, (3, 11), 1814734207401977777),
    (2**63 - 1, Purpose.OBSTAT, (12345,), 2517167545958361119),
    (123456789, Purpose.EVAL, (2**40, 3), 3487992502333168544),
    (42, Purpose.REFERENCE_BATCH, (), 330640711947282801),
    (1, Purpose.EPISODE, (0, 0), 4327600167777058810),
    (5, Purpose.OFFSETS, (2,), 424214364029400377),
]


@pytest.mark.parametrize(("seed", "purpose", "indices", "expected"), GOLDEN)
def test_golden_values(seed: int, purpose: Purpose, indices: tuple[int, ...], expected: int) -> None:
    assert derive_seed(seed, purpose, *indices) == expected
    assert 0 <= expected < 2**63


def test_numpy_integers_derive_the_same_seeds() -> None:
    assert derive_seed(np.int64(7), Purpose.EPISODE, np.int64(3), np.uint32(11)) == 1814734207401977777


def test_derive_rng_first_draws() -> None:
    # The raw PCG64 stream is fixed by the seed; random() is (next 64 bits >> 11) * 2**-53. Other
    # distributions (standard_normal, integers) follow numpy's own stream policy, not ours.
    rng = derive_rng(5, Purpose.OFFSETS, 2)
    assert rng.bit_generator.random_raw(3).tolist() == [6699053618227435289, 3047028220164345611, 12687427799448532779]
    assert derive_rng(5, Purpose.OFFSETS, 2).random(2).tolist() == [0.3631564243239531, 0.16517973079634107]


def test_purposes_never_collide() -> None:
    seeds = {}
    for seed, purpose, generation in itertools.product((0, 1, 2**62), Purpose, range(4)):
        for indices in ((), (generation,), (generation, 0), (generation, 1), (generation, 7)):
            key = (seed, purpose, indices)
            seeds[key] = derive_seed(seed, purpose, *indices)
    assert len(set(seeds.values())) == len(seeds)


def test_same_arguments_same_seed() -> None:
    assert derive_seed(3, Purpose.EPISODE, 4, 5) == derive_seed(3, Purpose.EPISODE, 4, 5)
    np.testing.assert_array_equal(derive_rng(3, Purpose.INIT).standard_normal(5), derive_rng(3, Purpose.INIT).standard_normal(5))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, Purpose.INIT), "seed must be an integer >= 0, got -1"),
        ((True, Purpose.INIT), "seed must be an integer >= 0, got True"),
        ((1.5, Purpose.INIT), "seed must be an integer >= 0, got 1.5"),
        (("0", Purpose.INIT), "seed must be an integer >= 0, got '0'"),
        ((0, Purpose.EPISODE, 3, -2), "index 1 must be an integer >= 0, got -2"),
        ((0, Purpose.EPISODE, 3.0), "index 0 must be an integer >= 0, got 3.0"),
        ((0, Purpose.EPISODE, False), "index 0 must be an integer >= 0, got False"),
        ((0, 6), "purpose must be a Purpose"),
        ((0, True), "purpose must be a Purpose"),
        ((0, 1.0), "purpose must be a Purpose"),
        ((0, [1]), "purpose must be a Purpose"),
    ],
)
def test_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match="derive_seed: ") as info:
        derive_seed(*args)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="derive_seed: "):
        derive_rng(*args)
