"""What a task can give: the master's bounds on every number a host reports.

The wire codec (:mod:`~esfast.distributed.protocol`) checks a result's form: types, finite
numbers, array shapes. Here it is checked against its task and the run: an episode lasts at least
one step and at most the generation's limit (and the environment's own); a pair that records
observations counts exactly one per step of its two episodes, and their sums are those of
float32-sized values (the policy sees observations as float32, and the statistics would overflow
otherwise); a pair that records none reports none; returns fit in float32 (``raw`` return
shaping casts them). A result outside these bounds cannot come from an honest host: the master
treats it as a failure of that task on that host (:meth:`~esfast.distributed.master.Master`).
"""

from __future__ import annotations

import numpy as np

from esfast.config import MAX_COUNT
from esfast.tasks import EvalTask, PairResult, PairTask, Result, Task

__all__ = ["FLOAT32_MAX", "length_limit", "violation"]

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Rounding slack in the Cauchy-Schwarz test sum² <= count * sumsq, which holds exactly for real numbers.
_SCHWARZ_SLACK = 1e-6


def length_limit(timestep_limit: int | None, env_limit: int | None) -> int:
    """The longest episode a task of a generation can report: the generation's limit, the
    environment's own (its ``TimeLimit``), whichever is smaller, or ``MAX_COUNT``."""
    limits = [limit for limit in (timestep_limit, env_limit) if limit is not None]
    return min(limits) if limits else MAX_COUNT


def violation(task: Task, result: Result, limit: int) -> str | None:
    """Why ``result`` cannot be what ``task`` gave (None if it can).

    Args:
        task: the task, as the master gave it.
        result: what a host reported for it (already checked by the codec: kinds, finite numbers).
        limit: :func:`length_limit` of the generation.
    """
    # The common case first, in few steps: this runs for every result the master absorbs.
    if type(task) is PairTask and type(result) is PairResult and not task.record_obs:
        (first, second), (first_length, second_length) = result.returns, result.lengths
        if (
            1 <= first_length <= limit
            and 1 <= second_length <= limit
            and -FLOAT32_MAX <= first <= FLOAT32_MAX
            and -FLOAT32_MAX <= second <= FLOAT32_MAX
            and result.obs_count == 0
            and result.obs_sum is None
        ):
            return None
    if isinstance(task, EvalTask):
        assert not isinstance(result, PairResult)
        return _episode(result.ret, result.length, limit)
    assert isinstance(task, PairTask) and isinstance(result, PairResult)
    for ret, length in zip(result.returns, result.lengths):
        if (problem := _episode(ret, length, limit)) is not None:
            return problem
    if not task.record_obs:
        return None if result.obs_count == 0 and result.obs_sum is None else "observation sums for a pair that records none"
    if result.obs_sum is None or result.obs_sumsq is None:
        return "no observation sums for a pair that records them"
    steps = result.lengths[0] + result.lengths[1]
    if result.obs_count != steps:
        return f"{result.obs_count} observations counted for episodes of {steps} steps"
    total, squares = np.asarray(result.obs_sum, dtype=np.float64), np.asarray(result.obs_sumsq, dtype=np.float64)
    if (np.abs(total) > steps * FLOAT32_MAX).any():
        return "observation sums beyond what float32 observations can add up to"
    if (squares < 0).any() or (squares > steps * FLOAT32_MAX**2).any():
        return "observation sums of squares below 0 or beyond what float32 observations can add up to"
    if (np.square(total) > steps * squares * (1 + _SCHWARZ_SLACK)).any():
        return "observation sums that no observations give with these sums of squares"
    return None


def _episode(ret: float, length: int, limit: int) -> str | None:
    if not 1 <= length <= limit:
        return f"an episode length of {length} (1 to {limit} possible)"
    if abs(ret) > FLOAT32_MAX:
        return f"a return of {ret:.3g}, beyond float32"
    return None
