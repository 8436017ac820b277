"""Adam and SGD against the formulas of the paper's code, evaluated in float64."""

from __future__ import annotations

import numpy as np
import pytest

from esfast.optimizers import SGD, Adam, make_optimizer


def test_adam_matches_formula() -> None:
    rng = np.random.default_rng(0)
    adam = Adam(5, stepsize=0.01)
    m = v = np.zeros(5)
    for t in range(1, 6):
        g = rng.standard_normal(5).astype(np.float32)
        step = adam.step(g)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        expected = -0.01 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(step, expected, rtol=1e-5)
        assert step.dtype == np.float32


def test_sgd_momentum_matches_formula() -> None:
    sgd = SGD(3, stepsize=0.1, momentum=0.5)
    v = np.zeros(3)
    for g in ([1.0, 2.0, 3.0], [0.0, -1.0, 1.0]):
        v = 0.5 * v + 0.5 * np.array(g)
        np.testing.assert_allclose(sgd.step(np.array(g, np.float32)), -0.1 * v, rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_state_round_trip(name: str) -> None:
    a = make_optimizer(name, 4, stepsize=0.1)
    a.step(np.ones(4, np.float32))
    b = make_optimizer(name, 4, stepsize=0.1)
    b.load_state_dict(a.state_dict())
    g = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(a.step(g), b.step(g))


def test_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd'"):
        make_optimizer("lbfgs", 3, stepsize=0.1)
