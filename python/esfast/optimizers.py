"""First-order optimizers for ES updates: Adam and SGD with momentum, as in the paper's code.

Both minimize: callers pass the negated ES gradient plus the L2 term. Arithmetic is float32, in a
fixed order, so identical inputs give bit-identical parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray


class Optimizer:
    """Base class: holds the step count and turns gradients into parameter steps."""

    def __init__(self, num_params: int, stepsize: float) -> None:
        self.num_params = num_params
        self.stepsize = float(stepsize)
        self.t = 0

    def step(self, gradient: NDArray[np.float32]) -> NDArray[np.float32]:
        """The change to add to the parameters for ``gradient`` (of the loss to minimize)."""
        self.t += 1
        return self._step(np.asarray(gradient, dtype=np.float32))

    def _step(self, gradient: NDArray[np.float32]) -> NDArray[np.float32]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray | int]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, np.ndarray | int]) -> None:
        self.t = int(state["t"])


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction folded into the step size."""

    def __init__(self, num_params: int, stepsize: float, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8) -> None:
        super().__init__(num_params, stepsize)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.m = np.zeros(num_params, dtype=np.float32)
        self.v = np.zeros(num_params, dtype=np.float32)

    def _step(self, gradient: NDArray[np.float32]) -> NDArray[np.float32]:
        a = self.stepsize * np.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        self.m = np.float32(self.beta1) * self.m + np.float32(1 - self.beta1) * gradient
        self.v = np.float32(self.beta2) * self.v + np.float32(1 - self.beta2) * (gradient * gradient)
        step: NDArray[np.float32] = np.float32(-a) * self.m / (np.sqrt(self.v) + np.float32(self.epsilon))
        return step

    def state_dict(self) -> dict[str, np.ndarray | int]:
        return {"t": self.t, "m": self.m.copy(), "v": self.v.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray | int]) -> None:
        super().load_state_dict(state)
        self.m = np.array(state["m"], dtype=np.float32)
        self.v = np.array(state["v"], dtype=np.float32)


class SGD(Optimizer):
    """SGD with momentum: v = μv + (1 − μ)g, step = −stepsize·v."""

    def __init__(self, num_params: int, stepsize: float, momentum: float = 0.9) -> None:
        super().__init__(num_params, stepsize)
        self.momentum = momentum
        self.v = np.zeros(num_params, dtype=np.float32)

    def _step(self, gradient: NDArray[np.float32]) -> NDArray[np.float32]:
        self.v = np.float32(self.momentum) * self.v + np.float32(1 - self.momentum) * gradient
        step: NDArray[np.float32] = np.float32(-self.stepsize) * self.v
        return step

    def state_dict(self) -> dict[str, np.ndarray | int]:
        return {"t": self.t, "v": self.v.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray | int]) -> None:
        super().load_state_dict(state)
        self.v = np.array(state["v"], dtype=np.float32)


def make_optimizer(name: str, num_params: int, *, stepsize: float, momentum: float = 0.9) -> Optimizer:
    """``"adam"`` or ``"sgd"``.

    Raises:
        ValueError: another name.
    """
    if name == "adam":
        return Adam(num_params, stepsize)
    if name == "sgd":
        return SGD(num_params, stepsize, momentum)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
