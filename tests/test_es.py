"""OpenES: the update against a numpy reference, black-box problems, determinism, state."""

from __future__ import annotations

import numpy as np
import numpy_reference as ref
import pytest

from esfast import core
from esfast.es import OpenES, population_offsets


def test_update_matches_numpy_reference() -> None:
    table = core.NoiseTable(100_000, 3)
    es = OpenES(50, sigma=0.1, stepsize=0.02, pop_pairs=8, seed=4, l2coeff=0.01, table=table, theta=np.linspace(-1, 1, 50))
    theta0 = es.theta.copy()
    population = es.ask()
    returns = np.random.default_rng(0).standard_normal((8, 2))
    # The population is θ ± σ ε.
    for i, (plus, minus) in enumerate(population):
        eps = table.get(int(population.offsets[i]), 50)
        np.testing.assert_array_equal(plus, theta0 + np.float32(0.1) * eps)
        np.testing.assert_array_equal(minus, theta0 - np.float32(0.1) * eps)
    es.tell(returns)
    ranks = ref.centered_ranks(returns)
    eps = np.stack([table.get(int(o), 50) for o in population.offsets]).astype(np.float64)
    g = (ranks[:, 0] - ranks[:, 1]) @ eps / 16
    grad = -g + 0.01 * theta0
    m = 0.1 * grad
    v = 0.001 * grad * grad
    step = -0.02 * np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(es.theta, theta0 + step, rtol=1e-5, atol=1e-6)
    assert es.generation == 1


def test_solves_quadratic_20d() -> None:
    target = np.linspace(-1, 1, 20)
    es = OpenES(20, sigma=0.1, stepsize=0.05, pop_pairs=50, seed=0, theta=np.zeros(20))
    for _ in range(300):
        returns = np.array([[-np.sum((p - target) ** 2), -np.sum((m - target) ** 2)] for p, m in es.ask()])
        es.tell(returns)
    assert np.linalg.norm(es.theta - target) < 0.05


def test_solves_rosenbrock_20d() -> None:
    def rosenbrock(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return np.sum(100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2, axis=-1)

    es = OpenES(20, sigma=0.02, stepsize=0.01, pop_pairs=100, seed=1, theta=np.zeros(20))
    start = float(rosenbrock(es.theta))
    for _ in range(1500):
        es.tell(-rosenbrock(es.ask().vectors()))
    assert start > 18 and float(rosenbrock(es.theta)) < 0.5


@pytest.mark.parametrize("mode", ["centered_rank", "normalized", "raw"])
def test_same_seed_same_theta(mode: str) -> None:
    def run() -> np.ndarray:
        es = OpenES(30, sigma=0.05, stepsize=0.01, pop_pairs=10, seed=7, return_proc_mode=mode, optimizer="sgd")
        for _ in range(5):
            es.tell(-np.square(es.ask().vectors()).sum(axis=2))
        return es.theta

    np.testing.assert_array_equal(run(), run())


def test_state_dict_resume_equals_uninterrupted() -> None:
    def objective(vectors: np.ndarray) -> np.ndarray:
        return -np.abs(vectors - 0.3).sum(axis=2)

    table = core.NoiseTable(10_000, 0)
    straight = OpenES(12, sigma=0.05, stepsize=0.01, pop_pairs=6, seed=2, table=table)
    for _ in range(6):
        straight.tell(objective(straight.ask().vectors()))
    first = OpenES(12, sigma=0.05, stepsize=0.01, pop_pairs=6, seed=2, table=table)
    for _ in range(3):
        first.tell(objective(first.ask().vectors()))
    second = OpenES(12, sigma=0.05, stepsize=0.01, pop_pairs=6, seed=2, table=table)
    second.load_state_dict(first.state_dict())
    for _ in range(3):
        second.tell(objective(second.ask().vectors()))
    np.testing.assert_array_equal(second.theta, straight.theta)
    assert second.generation == 6


def test_offsets_depend_on_seed_and_generation_only() -> None:
    es = OpenES(10, sigma=0.1, stepsize=0.1, pop_pairs=4, seed=5)
    np.testing.assert_array_equal(es.ask().offsets, population_offsets(5, 0, 4, 10, len(es.table)))
    es.tell(np.zeros((4, 2)))
    np.testing.assert_array_equal(es.ask().offsets, population_offsets(5, 1, 4, 10, len(es.table)))
    assert not np.array_equal(population_offsets(5, 1, 4, 10, 1000), population_offsets(6, 1, 4, 10, 1000))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pop_pairs": 0}, "pop_pairs must be a positive integer"),
        ({"sigma": 0.0}, "sigma must be a positive number"),
        ({"sigma": float("nan")}, "sigma must be a positive number"),
        ({"stepsize": -1.0}, "stepsize must be a positive number"),
        ({"return_proc_mode": "ranks"}, "return_proc_mode must be one of"),
        ({"optimizer": "rmsprop"}, "optimizer must be 'adam' or 'sgd'"),
        ({"theta": np.zeros(3)}, "theta must have 10 elements"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"sigma": 0.1, "stepsize": 0.1, "pop_pairs": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        OpenES(10, **args)


def test_bad_returns_and_state() -> None:
    es = OpenES(10, sigma=0.1, stepsize=0.1, pop_pairs=2, seed=0)
    with pytest.raises(ValueError, match=r"returns must have shape \(2, 2\)"):
        es.tell(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        es.tell([[0.0, np.nan], [1.0, 2.0]])
    other = OpenES(11, sigma=0.1, stepsize=0.1, pop_pairs=2, seed=0)
    with pytest.raises(ValueError, match="theta of shape"):
        es.load_state_dict(other.state_dict())


def _state(es: OpenES, **changes: object) -> dict[str, object]:
    state = es.state_dict()
    state.update(changes)
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"theta": None}, "state lacks 'theta'"),
        ({"generation": None}, "state lacks 'generation'"),
        ({"optimizer_m": None, "optimizer_v": None}, "state lacks 'optimizer_m', 'optimizer_v'"),
        ({"optimizer_t": None}, "state lacks 'optimizer_t'"),
        ({"table_seed": None}, "state lacks 'table_seed'"),
        ({"theta": np.full(10, np.nan)}, "state holds theta with NaN or infinite values"),
        ({"theta": np.full(10, 1e300)}, "state holds theta with NaN or infinite values"),
        ({"theta": np.array(["a"] * 10)}, "state holds theta of dtype <U1, not an array of numbers"),
        ({"theta": [[1.0], [1.0, 2.0]]}, "state holds theta that is not an array of numbers"),
        ({"generation": -5}, "state holds generation = -5, which must be an integer in [0, 2**53]"),
        ({"generation": 2**62}, "state holds generation = 4611686018427387904, which must be an integer in [0, 2**53]"),
        ({"generation": 1.5}, "state holds generation = 1.5"),
        ({"generation": True}, "state holds generation = True"),
        ({"optimizer": "sgd"}, "state is for optimizer 'sgd', this ES uses 'adam'"),
        ({"table_size": 99}, "state was made with a different noise table"),
        ({"table_seed": "x"}, "state holds table_seed = 'x'"),
        ({"optimizer_m": np.zeros(9, dtype=np.float32)}, "state holds optimizer_m of shape (9,), this ES's adam optimizer has (10,)"),
        ({"optimizer_v": np.zeros((10, 1), dtype=np.float32)}, "state holds optimizer_v of shape (10, 1)"),
        ({"optimizer_v": np.full(10, -1.0)}, "state holds optimizer_v with negative values (Adam's second moments are >= 0)"),
        ({"optimizer_m": np.full(10, np.inf)}, "state holds optimizer_m with NaN or infinite values"),
        ({"optimizer_t": -1}, "state holds optimizer_t = -1"),
    ],
)
def test_load_state_dict_checks_everything_before_changing_anything(change: dict[str, object], message: str) -> None:
    es = OpenES(10, sigma=0.1, stepsize=0.1, pop_pairs=2, seed=0)
    donor = OpenES(10, sigma=0.1, stepsize=0.1, pop_pairs=2, seed=0, table=es.table)
    donor.tell(np.arange(4.0).reshape(2, 2))
    state = {k: v for k, v in _state(donor, **change).items() if v is not None}
    before = (es.theta.copy(), es.generation, es.optimizer.t, es.optimizer.m.copy(), es.optimizer.v.copy())
    with pytest.raises(ValueError) as info:
        es.load_state_dict(state)
    assert message in str(info.value) and "\n" not in str(info.value)
    np.testing.assert_array_equal(es.theta, before[0])
    assert (es.generation, es.optimizer.t) == (before[1], before[2])
    np.testing.assert_array_equal(es.optimizer.m, before[3])
    np.testing.assert_array_equal(es.optimizer.v, before[4])


def test_sgd_momentum_may_be_negative() -> None:
    es = OpenES(10, sigma=0.1, stepsize=0.1, pop_pairs=2, seed=0, optimizer="sgd")
    es.load_state_dict(_state(es, optimizer_v=np.full(10, -0.5, dtype=np.float32), generation=np.int64(3), optimizer_t=np.array(3)))
    assert es.generation == 3 and es.optimizer.t == 3 and (es.optimizer.v == -0.5).all()
