"""Feed-forward (MLP) policies over a flat float32 parameter vector.

Parameter layout: for each layer in order, its weight matrix of shape (inputs, outputs) in
row-major order, then its bias (outputs,). An :class:`Actor` binds θ (no copy) and
preallocated buffers. With a tanh, relu or identity nonlinearity a step is one call into the
compiled forward pass (:class:`esfast.core.MLPForward`); other nonlinearities run the same
computation as a handful of numpy calls. The two paths differ by float rounding only (the
compiled one sums each output in input order and uses a tanh approximation within 1e-6).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esfast.config import PolicySettings
from esfast.core import MLPForward
from esfast.errors import PolicyError

__all__ = ["OBS_CLIP", "MLPActor", "MLPPolicy", "parse_bins"]

OBS_CLIP = 5.0
HIDDEN_INIT_STD = 1.0
OUTPUT_INIT_STD = 0.01


def _elu(x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
    np.copyto(out, np.where(x > 0, x, np.expm1(np.minimum(x, 0))))


def _sigmoid(x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
    np.copyto(out, 0.5 * (1 + np.tanh(0.5 * x)))


def _relu(x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
    np.maximum(x, 0, out=out)


# In-place nonlinearities: f(x, out=x).
_NONLINEARITIES: dict[str, Callable[..., object] | None] = {
    "tanh": np.tanh,
    "relu": _relu,
    "elu": _elu,
    "sigmoid": _sigmoid,
    "identity": None,
}


def parse_bins(ac_bins: str) -> NDArray[np.float32] | None:
    """Bin positions in [-1, 1] for ``ac_bins``, or None for continuous actions."""
    kind, _, arg = ac_bins.partition(":")
    if kind == "continuous":
        return None
    if kind == "uniform":
        count = int(arg)
        if count < 2:
            raise PolicyError(f"ac_bins 'uniform:N' needs N >= 2, got {count}")
        return np.linspace(-1.0, 1.0, count, dtype=np.float32)
    if kind == "custom":
        values = np.array([float(v) for v in arg.split(",")], dtype=np.float32)
        if values.size < 2 or np.any(np.abs(values) > 1):
            raise PolicyError(f"ac_bins 'custom:...' needs at least two values in [-1, 1], got {arg!r}")
        return values
    raise PolicyError(f"ac_bins must be 'continuous:', 'uniform:N' or 'custom:...', got {ac_bins!r}")


@dataclass(frozen=True)
class _Layer:
    inputs: int
    outputs: int
    weight: slice
    bias: slice


class MLPPolicy:
    """A feed-forward policy for a flat (1-D) observation space.

    Actions: ``Discrete(n)`` by argmax over n outputs; ``Box`` with continuous actions by tanh
    mapped into the bounds (unbounded dimensions stay linear); ``Box`` with ``ac_bins`` by argmax
    over bins per dimension, bins placed between the bounds.

    Args:
        observation_space: a 1-D ``Box``.
        action_space: ``Box`` or ``Discrete``.
        settings: hidden sizes, nonlinearity, action noise and bins.

    Raises:
        PolicyError: spaces this policy cannot handle.
    """

    def __init__(self, observation_space: gym.Space[Any], action_space: gym.Space[Any], settings: PolicySettings) -> None:
        if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
            raise PolicyError(f"MLPPolicy needs a flat Box observation space, got {observation_space}")
        self.settings = settings
        self.obs_dim = int(observation_space.shape[0])
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.bins: NDArray[np.float32] | None = None
        if isinstance(action_space, gym.spaces.Discrete):
            self.act_dim = int(action_space.n)
            outputs = self.act_dim
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.act_dim = int(action_space.shape[0])
            low = action_space.low.astype(np.float64)
            high = action_space.high.astype(np.float64)
            bounded = np.isfinite(low) & np.isfinite(high)
            self.bins = parse_bins(settings.ac_bins)
            if self.bins is not None and not bounded.all():
                raise PolicyError("ac_bins needs an action space with finite bounds")
            # Unbounded dimensions stay linear: mid 0, half 1 (computed from finite stand-ins, so
            # that -inf + inf raises no warning).
            finite_low, finite_high = np.where(bounded, low, 0.0), np.where(bounded, high, 0.0)
            self.action_mid = np.where(bounded, (finite_low + finite_high) / 2, 0.0).astype(np.float32)
            self.action_half = np.where(bounded, (finite_high - finite_low) / 2, 1.0).astype(np.float32)
            self.bounded = bounded
            self.action_low = low.astype(np.float32)
            self.action_high = high.astype(np.float32)
            outputs = self.act_dim * (1 if self.bins is None else self.bins.size)
        else:
            raise PolicyError(f"MLPPolicy supports Box and Discrete action spaces, got {action_space}")
        sizes = [self.obs_dim, *settings.hidden_dims, outputs]
        self.layers: list[_Layer] = []
        start = 0
        for inputs, outs in itertools.pairwise(sizes):
            self.layers.append(
                _Layer(inputs, outs, slice(start, start + inputs * outs), slice(start + inputs * outs, start + inputs * outs + outs))
            )
            start += inputs * outs + outs
        self.num_params = start
        self.sizes = tuple(sizes)
        self.nonlinearity = _NONLINEARITIES[settings.nonlin_type]
        self.obs_stat_dim = self.obs_dim  # observations are normalized with running statistics
        self.continuous = not self.discrete and self.bins is None

    def describe(self) -> str:
        """The layer sizes and nonlinearity, e.g. ``17-64-64-6 tanh``."""
        return f"{'-'.join(map(str, self.sizes))} {self.settings.nonlin_type}"

    def initial_theta(self, rng: np.random.Generator) -> NDArray[np.float32]:
        """Column-normalized Gaussian weights (std 1 hidden, 0.01 output) and zero biases."""
        theta = np.zeros(self.num_params, dtype=np.float32)
        for index, layer in enumerate(self.layers):
            std = OUTPUT_INIT_STD if index == len(self.layers) - 1 else HIDDEN_INIT_STD
            weight = rng.standard_normal((layer.inputs, layer.outputs))
            weight *= std / np.sqrt(np.square(weight).sum(axis=0, keepdims=True))
            theta[layer.weight] = weight.ravel()
        return theta

    def actor(
        self,
        theta: NDArray[np.float32],
        obs_mean: NDArray[np.float32] | None = None,
        obs_std: NDArray[np.float32] | None = None,
        *,
        compiled: bool = True,
    ) -> MLPActor:
        """An :class:`MLPActor` for parameters ``theta`` (viewed, not copied) and observation statistics.

        Without statistics the actor normalizes with mean 0 and std 1 until :meth:`MLPActor.prepare`.
        ``compiled=False`` keeps the actor on numpy (see :class:`MLPActor`).

        Raises:
            PolicyError: ``theta`` of the wrong size or dtype.
        """
        if theta.shape != (self.num_params,):
            raise PolicyError(f"parameter vector has shape {theta.shape}, this policy needs ({self.num_params},)")
        if theta.dtype != np.float32:
            raise PolicyError(f"parameter vector has dtype {theta.dtype}, this policy needs float32")
        if obs_mean is None:
            obs_mean = np.zeros(self.obs_dim, dtype=np.float32)
        if obs_std is None:
            obs_std = np.ones(self.obs_dim, dtype=np.float32)
        return MLPActor(self, theta, obs_mean, obs_std, compiled=compiled)


# Nonlinearities the compiled forward pass implements; the others run on numpy.
_COMPILED_NONLINEARITIES = ("tanh", "relu", "identity")


class MLPActor:
    """Maps one observation to one action with fixed parameters; holds its own buffers.

    θ and the normalization buffers are read at each call, so refilling θ in place changes the
    actor's behaviour from the next call on. Not for concurrent calls from several threads.

    Args:
        compiled: whether to use the compiled forward pass when the nonlinearity allows it
            (False: always numpy, the reference the compiled path is tested against).
    """

    def __init__(
        self,
        policy: MLPPolicy,
        theta: NDArray[np.float32],
        obs_mean: NDArray[np.float32],
        obs_std: NDArray[np.float32],
        *,
        compiled: bool = True,
    ) -> None:
        self.policy = policy
        self.weights = [theta[layer.weight].reshape(layer.inputs, layer.outputs) for layer in policy.layers]
        self.biases = [theta[layer.bias] for layer in policy.layers]
        self.buffers = [np.empty(layer.outputs, dtype=np.float32) for layer in policy.layers]
        self.obs = np.empty(policy.obs_dim, dtype=np.float32)
        self.mean = np.empty(policy.obs_dim, dtype=np.float32)
        self.inv_std = np.empty(policy.obs_dim, dtype=np.float32)
        self.prepare(obs_mean, obs_std)
        if policy.bins is not None:
            self.bin_values = policy.action_mid[:, None] + policy.action_half[:, None] * policy.bins[None, :]
        self.all_bounded = not policy.discrete and bool(np.all(policy.bounded))
        self.dims = np.arange(policy.act_dim)
        # (weight, bias, output buffer, nonlinearity or None for the last layer), unpacked once here
        # so a step does no lookups beyond the loop itself.
        hidden = len(policy.layers) - 1
        self.plan = [
            (weight, bias, out, policy.nonlinearity if index < hidden else None)
            for index, (weight, bias, out) in enumerate(zip(self.weights, self.biases, self.buffers))
        ]
        self.forward: MLPForward | None = None
        # The compiled path reads θ in place, so it needs θ in one contiguous block.
        if compiled and theta.flags.c_contiguous and policy.settings.nonlin_type in _COMPILED_NONLINEARITIES:
            continuous = not policy.discrete and policy.bins is None
            self.forward = MLPForward(
                theta,
                policy.sizes,
                hidden_activation=policy.settings.nonlin_type,
                obs_mean=self.mean,
                obs_inv_std=self.inv_std,
                obs_clip=OBS_CLIP,
                normalized=self.obs,
                action_mid=policy.action_mid if continuous else None,
                action_half=policy.action_half if continuous else None,
                action_bounded=np.ascontiguousarray(policy.bounded, dtype=np.bool_) if continuous else None,
                action_low=policy.action_low if continuous else None,
                action_high=policy.action_high if continuous else None,
            )

    def prepare(self, obs_mean: NDArray[np.float32], obs_std: NDArray[np.float32]) -> None:
        """Uses new observation statistics (copied into this actor's buffers) from the next call on."""
        np.copyto(self.mean, obs_mean, casting="same_kind")
        np.divide(1.0, obs_std, out=self.inv_std, casting="same_kind")

    def __call__(self, observation: NDArray[Any], noise: NDArray[np.float32] | None = None) -> NDArray[np.float32] | int:
        """The action for ``observation``; ``noise`` (act_dim,) is added to continuous actions."""
        policy = self.policy
        forward = self.forward
        if forward is not None:
            if policy.discrete:
                return int(np.argmax(forward(observation)))
            if policy.bins is not None:
                choice = forward(observation).reshape(policy.act_dim, policy.bins.size).argmax(axis=1)
                binned: NDArray[np.float32] = self.bin_values[self.dims, choice]
                return binned
            return forward(observation, noise)
        x = self.obs
        np.subtract(observation, self.mean, out=x, casting="unsafe")
        np.multiply(x, self.inv_std, out=x)
        np.minimum(x, OBS_CLIP, out=x)  # two ufuncs cost less than np.clip's generic path
        np.maximum(x, -OBS_CLIP, out=x)
        for weight, bias, out, squash in self.plan:
            np.dot(x, weight, out=out)
            np.add(out, bias, out=out)
            if squash is not None:
                squash(out, out=out)
            x = out
        if policy.discrete:
            return int(np.argmax(x))
        if policy.bins is not None:
            choice = x.reshape(policy.act_dim, policy.bins.size).argmax(axis=1)
            binned = self.bin_values[self.dims, choice]
            return binned
        if self.all_bounded:
            action = np.tanh(x)
        else:
            action = np.where(policy.bounded, np.tanh(x), x)
        np.multiply(action, policy.action_half, out=action)
        np.add(action, policy.action_mid, out=action)
        if noise is not None:
            np.add(action, noise, out=action)
            np.minimum(action, policy.action_high, out=action)
            np.maximum(action, policy.action_low, out=action)
        return action
