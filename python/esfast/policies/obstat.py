"""Running observation statistics, merged exactly across workers."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from esfast.errors import PolicyError

__all__ = ["OBS_VARIANCE_FLOOR", "ObStat"]

OBS_VARIANCE_FLOOR = 1e-2  # std is at least 0.1, as in the paper's code


class ObStat:
    """Running sums of observations (float64): merged exactly, in a fixed order, across workers.

    Starts with a small pseudo-count (sum 0, sum of squares ``eps``, count ``eps``), so before any
    data the mean is 0 and the std 1.
    """

    def __init__(self, shape: tuple[int, ...], eps: float = 1e-2) -> None:
        self.sum = np.zeros(shape, dtype=np.float64)
        self.sumsq = np.full(shape, eps, dtype=np.float64)
        self.count = float(eps)

    def increment(self, total: NDArray[np.float64], sumsq: NDArray[np.float64], count: float) -> None:
        self.sum += total
        self.sumsq += sumsq
        self.count += count

    @property
    def mean(self) -> NDArray[np.float32]:
        return (self.sum / self.count).astype(np.float32)

    @property
    def std(self) -> NDArray[np.float32]:
        mean = self.sum / self.count
        return np.sqrt(np.maximum(self.sumsq / self.count - np.square(mean), OBS_VARIANCE_FLOOR)).astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray | float]:
        return {"sum": self.sum.copy(), "sumsq": self.sumsq.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, np.ndarray | float]) -> None:
        """Restores :meth:`state_dict` output, checked whole before anything changes.

        Raises:
            PolicyError: a missing key, sums of another shape, non-finite values or a count <= 0.
        """
        try:
            total = np.asarray(state["sum"], dtype=np.float64)
            sumsq = np.asarray(state["sumsq"], dtype=np.float64)
            count = float(state["count"])
        except KeyError as error:
            raise PolicyError(f"observation statistics lack {error.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise PolicyError(f"observation statistics are not numbers: {error}") from None
        if total.shape != self.sum.shape or sumsq.shape != self.sum.shape:
            raise PolicyError(f"observation statistics have shapes {total.shape} and {sumsq.shape}, the policy expects {self.sum.shape}")
        if not (np.isfinite(count) and count > 0):
            raise PolicyError(f"observation statistics have count {count}, which must be finite and > 0")
        if not (np.isfinite(total).all() and np.isfinite(sumsq).all() and (sumsq >= 0).all()):
            raise PolicyError("observation statistics hold non-finite sums or negative sums of squares")
        self.sum = total.copy()
        self.sumsq = sumsq.copy()
        self.count = count

    def finite(self) -> bool:
        """Whether every sum and the count are finite."""
        return bool(np.isfinite(self.sum).all() and np.isfinite(self.sumsq).all() and np.isfinite(self.count))
