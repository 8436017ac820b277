"""What a task can give: the master's bounds on reported results."""

from __future__ import annotations

import numpy as np
import pytest

from esfast.config import MAX_COUNT
from esfast.distributed.bounds import FLOAT32_MAX, length_limit, violation
from esfast.tasks import EvalResult, EvalTask, PairResult, PairTask

RECORDING = PairTask(0, 5, 1, True)
PLAIN = PairTask(1, 7, 2, False)


def pair(lengths: tuple[int, int] = (10, 12), total: object = None, squares: object = None, count: int | None = None) -> PairResult:
    if total is None:
        return PairResult(0, (1.0, -2.0), lengths, None, None, 0 if count is None else count)
    return PairResult(
        0, (1.0, -2.0), lengths, np.asarray(total, float), np.asarray(squares, float), sum(lengths) if count is None else count
    )


def test_the_length_limit_is_the_smaller_of_the_generations_and_the_environments() -> None:
    assert length_limit(None, None) == MAX_COUNT
    assert length_limit(100, None) == 100 and length_limit(None, 50) == 50 and length_limit(100, 50) == 50


def test_honest_results_pass() -> None:
    observations = np.random.default_rng(0).normal(size=(22, 3)) * 1e3
    assert violation(RECORDING, pair(total=observations.sum(0), squares=np.square(observations).sum(0)), 20) is None
    constant = np.full((22, 2), 3.7)  # sum² = count · sumsq up to rounding
    assert violation(RECORDING, pair(total=constant.sum(0), squares=np.square(constant).sum(0)), 20) is None
    assert violation(PLAIN, pair(), 12) is None
    assert violation(EvalTask(0, 3), EvalResult(0, -5.5, 1), 1) is None


@pytest.mark.parametrize(
    ("task", "result", "message"),
    [
        (PLAIN, pair((0, 5)), "an episode length of 0"),
        (PLAIN, pair((13, 5)), "an episode length of 13 (1 to 12 possible)"),
        (PLAIN, PairResult(1, (1e39, 0.0), (3, 3), None, None, 0), "a return of 1e+39, beyond float32"),
        (EvalTask(0, 1), EvalResult(0, 0.0, 0), "an episode length of 0"),
        (PLAIN, pair(total=[1.0], squares=[1.0], count=22), "observation sums for a pair that records none"),
        (RECORDING, pair(), "no observation sums for a pair that records them"),
        (RECORDING, pair(total=[1.0], squares=[1.0], count=21), "21 observations counted for episodes of 22 steps"),
        (RECORDING, pair(total=[1e300], squares=[1e300]), "beyond what float32 observations can add up to"),
        (RECORDING, pair(total=[0.0], squares=[-1.0]), "sums of squares below 0"),
        (RECORDING, pair(total=[0.0], squares=[1e300]), "sums of squares below 0 or beyond"),
        (RECORDING, pair(total=[22.0], squares=[1.0]), "no observations give with these sums of squares"),
    ],
)
def test_impossible_results_say_why(task: PairTask | EvalTask, result: PairResult | EvalResult, message: str) -> None:
    problem = violation(task, result, 12)
    assert problem is not None and message in problem


def test_float32_observations_at_their_limit_pass() -> None:
    assert violation(RECORDING, pair(total=[22 * FLOAT32_MAX], squares=[22 * FLOAT32_MAX**2]), 20) is None
