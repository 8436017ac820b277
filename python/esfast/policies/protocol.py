"""What every policy and actor offers: the small protocols the rest of esfast programs against.

A *policy* is the architecture over a flat float32 parameter vector θ; an *actor* binds one θ
(a view, not a copy) and maps observations to actions. Rollouts, evaluators and the command line
use only what is declared here, so a new kind of policy needs no ``isinstance`` branch elsewhere.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["Actor", "Policy"]


class Actor(Protocol):
    """Maps one observation to one action with the parameters in its θ buffer."""

    def prepare(self, obs_mean: NDArray[np.float32], obs_std: NDArray[np.float32]) -> None:
        """Readies the actor for an episode with the parameters now in its θ buffer.

        Args:
            obs_mean: observation mean, shape ``(policy.obs_stat_dim,)``.
            obs_std: observation standard deviation, same shape.
        """
        ...

    def __call__(self, observation: NDArray[Any], noise: NDArray[np.float32] | None = None) -> Any:
        """The action for ``observation``; ``noise`` (shape ``(act_dim,)``) is added to continuous actions."""
        ...


class Policy(Protocol):
    """An architecture over a flat float32 parameter vector.

    Attributes:
        num_params: length of θ.
        act_dim: the action's length (continuous) or the number of actions (discrete).
        obs_stat_dim: length of the observation statistics the actor normalizes with (0: none).
        continuous: whether actions are continuous, so that action noise applies to them.
    """

    num_params: int
    act_dim: int
    obs_stat_dim: int
    continuous: bool

    def initial_theta(self, rng: np.random.Generator) -> NDArray[np.float32]:
        """Initial parameters drawn from ``rng``: a new float32 vector of ``num_params`` entries."""
        ...

    def actor(self, theta: NDArray[np.float32]) -> Actor:
        """An actor for ``theta`` (viewed, not copied), before any :meth:`Actor.prepare`."""
        ...

    def describe(self) -> str:
        """The network in a few words, e.g. ``17-64-64-6 tanh``."""
        ...
