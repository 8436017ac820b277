"""The paper's convolutional Atari policy, with virtual batch normalization, over the C++ kernel.

Network (Mnih et al. 2016, the A3C network, as used by Salimans et al. 2017), on ``uint8``
observations of shape ``(C, H, W)`` scaled to [0, 1]::

    conv 16 filters 8x8 stride 4 -> VBN -> relu -> conv 32 filters 4x4 stride 2 -> VBN -> relu
    -> [fully connected 256 -> VBN -> relu] (per entry of hidden_dims) -> fully connected n_actions -> argmax

Virtual batch normalization (Salimans et al. 2016, "Improved techniques for training GANs"): a
reference batch of observations is fixed once per run (:func:`esfast.envs.atari.collect_reference_batch`).
When an actor is made for (or refreshed after a change of) a parameter vector, the reference batch is
run through the network under those parameters, and each normalized layer's pre-activations get the
batch's mean and (population) variance per channel (conv: over examples and positions) or per unit
(fully connected). They are then frozen for the rollout: ``gamma * (z - mean) / sqrt(var + eps) + beta``
is folded into the layer's weights and bias, so a step costs what a plain network with biases costs.

Parameter layout (one flat float32 vector), layer by layer:

- conv layer: weight ``(filters, in_channels, k, k)``, then VBN ``gamma (filters,)``, ``beta (filters,)``;
- hidden fully connected layer: weight ``(inputs, outputs)``, then ``gamma (outputs,)``, ``beta (outputs,)``;
- output layer: weight ``(inputs, n_actions)``, then bias ``(n_actions,)``.

Normalized layers have no bias of their own (VBN's beta takes its place). Inputs of the first fully
connected layer are the last conv layer's output flattened in (channel, row, column) order.

Computation: both the refresh and the step are one call each into esfast's C++ kernel
(:class:`esfast.core.ConvNetwork`, :class:`esfast.core.ConvForward`; ``cpp/src/conv.cpp`` and
``conv_network.cpp``), with the GIL released. Convolutions are matrix products over gathered
inputs (im2col without the copy): register blocks of up to 12 output positions x 16 filters, the
inputs broadcast, conv outputs kept channel-last; the observation is converted to float once per
step and 1/255 is folded into the first layer's weights. The fully connected layers read only
the rows of their weights whose input is nonzero after the relu (about half), which is exact for
finite weights. The
refresh runs the reference batch (kept as ``uint8``) through the same kernels, the dense layers as
one blocked matrix product over the batch, and computes the statistics in float64, summed in
(example, position) order (the variance from the float32-rounded mean, as the numpy version did).
Every output sums in one fixed order with no fused multiply-add, so results are identical on every
machine and code path (AVX-512, AVX2, SSE2); they differ from a float64 reference by float32
rounding. The tests check all of this against a plain float64 numpy reference with
``sliding_window_view`` im2col and, bit for bit, against a float32 replica of the kernel's
operations (``tests/numpy_reference.py``); ``docs/atari.md`` has the measured speed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esfast.config import PolicySettings
from esfast.core import ConvForward, ConvNetwork
from esfast.errors import PolicyError

__all__ = ["CONV_LAYERS", "VBN_EPS", "ConvActor", "ConvLayer", "ConvPolicy"]

VBN_EPS = 1e-5  # the kernel's epsilon (kVbnEpsilon in cpp/include/esfast/conv_network.hpp)
HIDDEN_INIT_STD = 1.0
OUTPUT_INIT_STD = 0.01


@dataclass(frozen=True)
class ConvLayer:
    """A convolution without padding: ``filters`` kernels of ``kernel`` x ``kernel``, ``stride``."""

    filters: int
    kernel: int
    stride: int


CONV_LAYERS = (ConvLayer(16, 8, 4), ConvLayer(32, 4, 2))


@dataclass(frozen=True)
class _Conv:
    """Geometry of one conv layer for a given input, and its parameter slices."""

    channels: int  # input channels
    filters: int
    kernel: int
    stride: int
    out_h: int
    out_w: int
    weight: slice
    gamma: slice
    beta: slice


@dataclass(frozen=True)
class _Dense:
    inputs: int
    outputs: int
    weight: slice
    gamma: slice | None  # None: the output layer (bias, no normalization)
    beta: slice


class ConvPolicy:
    """The paper's Atari network with virtual batch normalization over a flat parameter vector.

    Actors of one policy share the kernel's refresh scratch memory under a lock, so they may
    refresh from several threads (one at a time); a step allocates nothing.

    Args:
        observation_space: ``Box`` of ``uint8``, shape ``(channels, height, width)`` (what
            :func:`esfast.envs.atari.make_atari_env` gives: ``(4, 84, 84)``).
        action_space: ``Discrete(n)``.
        settings: ``hidden_dims`` are the sizes of the fully connected layers after the convolutions
            (the paper: ``(256,)``); ``nonlin_type`` must be ``"relu"``.
        reference_batch: ``uint8`` array ``(N, channels, height, width)``, N >= 2, the observations
            the normalization statistics are computed on (copied into the kernel).

    Raises:
        PolicyError: an observation shape that does not fit the network, non-discrete actions, a
            reference batch of the wrong shape or dtype, or unsupported settings (one line each).
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        settings: PolicySettings,
        reference_batch: NDArray[np.uint8],
    ) -> None:
        shape = getattr(observation_space, "shape", None)
        if not isinstance(observation_space, gym.spaces.Box) or shape is None or len(shape) != 3:
            raise PolicyError(f"the Atari network needs a (channels, height, width) Box observation space, got {observation_space}")
        if observation_space.dtype != np.uint8:
            raise PolicyError(f"the Atari network needs uint8 observations (pixels), got {observation_space.dtype}")
        if not isinstance(action_space, gym.spaces.Discrete):
            raise PolicyError(f"the Atari network needs a Discrete action space, got {action_space}")
        if settings.nonlin_type != "relu":
            raise PolicyError(f"the Atari network uses relu, got nonlin_type {settings.nonlin_type!r}")
        if not settings.hidden_dims:
            raise PolicyError("the Atari network needs at least one fully connected layer (hidden_dims)")
        self.settings = settings
        self.obs_shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.act_dim = int(action_space.n)
        self.discrete = True
        self.continuous = False
        self.obs_stat_dim = 0  # normalized by its reference batch (VBN), not by running statistics
        channels, height, width = self.obs_shape
        self.convs: list[_Conv] = []
        start = 0
        for layer in CONV_LAYERS:
            out_h = (height - layer.kernel) // layer.stride + 1
            out_w = (width - layer.kernel) // layer.stride + 1
            if out_h < 1 or out_w < 1:
                raise PolicyError(
                    f"observation shape {self.obs_shape} does not fit the Atari network: height and width must be"
                    f" at least 20 (channels first, e.g. (4, 84, 84))"
                )
            size = layer.filters * channels * layer.kernel**2
            weight = slice(start, start + size)
            gamma = slice(weight.stop, weight.stop + layer.filters)
            beta = slice(gamma.stop, gamma.stop + layer.filters)
            start = beta.stop
            self.convs.append(_Conv(channels, layer.filters, layer.kernel, layer.stride, out_h, out_w, weight, gamma, beta))
            channels, height, width = layer.filters, out_h, out_w
        self.dense: list[_Dense] = []
        inputs = channels * height * width
        for index, outputs in enumerate((*settings.hidden_dims, self.act_dim)):
            weight = slice(start, start + inputs * outputs)
            hidden = index < len(settings.hidden_dims)
            scale = slice(weight.stop, weight.stop + outputs) if hidden else None
            shift = slice(weight.stop + (outputs if hidden else 0), weight.stop + (2 * outputs if hidden else outputs))
            start = shift.stop
            self.dense.append(_Dense(inputs, outputs, weight, scale, shift))
            inputs = outputs
        self.num_params = start

        batch = np.asarray(reference_batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != self.obs_shape or batch.shape[0] < 2:
            raise PolicyError(
                f"reference batch must be uint8 of shape (N >= 2, {', '.join(map(str, self.obs_shape))}), got {batch.dtype} {batch.shape}"
            )
        self.reference_size = int(batch.shape[0])
        try:
            self.network = ConvNetwork(
                self.obs_shape,
                [(layer.filters, layer.kernel, layer.stride) for layer in CONV_LAYERS],
                settings.hidden_dims,
                self.act_dim,
                batch,
            )
        except (TypeError, ValueError) as error:  # e.g. a layer too wide for the kernel's limits
            raise PolicyError(f"the Atari network cannot be built: {error}") from None
        assert self.network.num_params == self.num_params, "the documented layout and the kernel's disagree"

    def describe(self) -> str:
        """The layers in a few words, e.g. ``conv 16x8x8/4 32x4x4/2 fc 256-6 relu, VBN``."""
        convs = " ".join(f"{layer.filters}x{layer.kernel}x{layer.kernel}/{layer.stride}" for layer in CONV_LAYERS)
        return f"conv {convs} fc {'-'.join(map(str, (*self.settings.hidden_dims, self.act_dim)))} relu, VBN"

    def initial_theta(self, rng: np.random.Generator) -> NDArray[np.float32]:
        """Initial parameters: each filter or unit's weights a Gaussian vector of norm 1 (0.01 for the
        output layer), VBN gamma 1 and beta 0, output bias 0.

        Args:
            rng: the generator to draw the weights from.

        Returns:
            A new float32 vector of ``num_params`` entries.
        """
        theta = np.zeros(self.num_params, dtype=np.float32)
        for conv in self.convs:
            weight = rng.standard_normal((conv.filters, conv.channels * conv.kernel**2))
            weight *= HIDDEN_INIT_STD / np.linalg.norm(weight, axis=1, keepdims=True)
            theta[conv.weight] = weight.ravel()
            theta[conv.gamma] = 1.0
        for dense in self.dense:
            std = OUTPUT_INIT_STD if dense.gamma is None else HIDDEN_INIT_STD
            weight = rng.standard_normal((dense.inputs, dense.outputs))
            weight *= std / np.linalg.norm(weight, axis=0, keepdims=True)
            theta[dense.weight] = weight.ravel()
            if dense.gamma is not None:
                theta[dense.gamma] = 1.0
        return theta

    def actor(self, theta: NDArray[np.float32]) -> ConvActor:
        """An actor for ``theta`` (a view, not a copy), its normalization computed now.

        After writing new values into ``theta``, call :meth:`ConvActor.refresh` before the next
        rollout: the actor's folded weights are a snapshot.

        Args:
            theta: float32 parameter vector of ``num_params`` entries.

        Returns:
            The actor: ``actor(observation) -> int``.

        Raises:
            PolicyError: ``theta`` of the wrong shape or dtype.
        """
        if not isinstance(theta, np.ndarray) or theta.shape != (self.num_params,) or theta.dtype != np.float32:
            raise PolicyError(
                f"parameter vector must be float32 of shape ({self.num_params},), got"
                f" {getattr(theta, 'dtype', type(theta).__name__)} {getattr(theta, 'shape', '')}"
            )
        return ConvActor(self, theta)


class ConvActor:
    """Maps one observation to one action under fixed parameters and frozen VBN statistics.

    A thin holder of the kernel's :class:`esfast.core.ConvForward` for ``theta``: a step is one
    call, which allocates nothing.

    Attributes:
        statistics: per normalized layer, ``(mean, var)`` of its pre-activations on the reference
            batch (float64, shape ``(filters,)`` or ``(units,)``), as of the last :meth:`refresh`.
    """

    def __init__(self, policy: ConvPolicy, theta: NDArray[np.float32]) -> None:
        self.policy = policy
        self.theta = theta
        # The kernel reads θ in place, in one contiguous block; a strided θ is copied at each refresh.
        self._contiguous = theta if theta.flags.c_contiguous else np.empty(theta.shape, np.float32)
        self.forward = ConvForward(policy.network, self._contiguous)
        self.statistics: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = []
        self.refresh()

    def prepare(self, obs_mean: NDArray[np.float32], obs_std: NDArray[np.float32]) -> None:
        """Readies the actor for an episode: :meth:`refresh` (the observation statistics are unused)."""
        self.refresh()

    def refresh(self) -> None:
        """Recomputes the normalization from the current contents of ``theta`` and freezes it.

        Runs the reference batch through the network (batch statistics at every normalized layer),
        then folds ``gamma / sqrt(var + eps)`` into the weights and ``beta - mean * that`` into the
        biases; the output layer's weights and bias are copied too (the actor reads ``theta`` here
        only).
        """
        if self._contiguous is not self.theta:
            np.copyto(self._contiguous, self.theta)
        mean, var = self.forward.refresh()
        widths = [conv.filters for conv in self.policy.convs] + [dense.outputs for dense in self.policy.dense[:-1]]
        bounds = np.cumsum([0, *widths])
        self.statistics = [(mean[start:stop], var[start:stop]) for start, stop in itertools.pairwise(bounds)]

    def __call__(self, observation: NDArray[np.uint8], noise: NDArray[np.float32] | None = None) -> int:
        """The action (argmax of the outputs) for one observation.

        Args:
            observation: ``uint8`` array of the policy's observation shape (checked by the kernel:
                TypeError or ValueError otherwise).
            noise: ignored (actions are discrete); accepted for :func:`esfast.envs.rollout.run_episode`.

        Returns:
            The action index.
        """
        return self.forward(observation)

    def logits(self, observation: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The output layer's values for ``observation`` (a new array), as used by :meth:`__call__`."""
        return self.forward.logits(observation)
