"""Policies: the architectures esfast trains, over one flat float32 parameter vector.

- :mod:`esfast.policies.protocol`: the :class:`Policy` and :class:`Actor` protocols;
- :mod:`esfast.policies.mlp`: feed-forward policies for flat observations (MuJoCo, classic control);
- :mod:`esfast.policies.conv`: the paper's Atari network with virtual batch normalization;
- :mod:`esfast.policies.obstat`: running observation statistics.

:func:`make_policy` builds the one a config asks for.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esfast.config import ATARI_POLICY, PolicySettings
from esfast.errors import PolicyError
from esfast.policies.mlp import MLPActor, MLPPolicy
from esfast.policies.obstat import ObStat
from esfast.policies.protocol import Actor, Policy

__all__ = ["Actor", "MLPActor", "MLPPolicy", "ObStat", "Policy", "make_policy"]


def make_policy(
    observation_space: gym.Space[Any],
    action_space: gym.Space[Any],
    settings: PolicySettings,
    reference_batch: NDArray[np.uint8] | None = None,
) -> Policy:
    """The policy a config asks for: :class:`MLPPolicy`, or the Atari network for ``AtariPolicy``.

    Args:
        observation_space: the environment's.
        action_space: the environment's.
        settings: the config's ``policy`` section.
        reference_batch: the VBN reference batch (Atari network only, required there).

    Raises:
        PolicyError: spaces or a reference batch the policy cannot use.
    """
    if settings.type != ATARI_POLICY:
        return MLPPolicy(observation_space, action_space, settings)
    from esfast.policies.conv import ConvPolicy  # the kernel's network: only for Atari runs

    if reference_batch is None:
        raise PolicyError("the Atari network needs its reference batch of observations")
    return ConvPolicy(observation_space, action_space, settings, reference_batch)
