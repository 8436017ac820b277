"""The paper's convolutional Atari policy, with virtual batch normalization, in numpy.

Network (Mnih et al. 2016, the A3C network, as used by Salimans et al. 2017), on ``uint8``
observations of shape ``(C, H, W)`` scaled to [0, 1]::

    conv 16 filters 8x8 stride 4 -> VBN -> relu -> conv 32 filters 4x4 stride 2 -> VBN -> relu
    -> [fully connected 256 -> VBN -> relu] (per entry of hidden_dims) -> fully connected n_actions -> argmax

Virtual batch normalization (Salimans et al. 2016, "Improved techniques for training GANs"): a
reference batch of observations is fixed once per run (:func:`esfast.atari.collect_reference_batch`).
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

Convolutions: kernel k is a multiple m of stride s here (8 = 2 x 4, 4 = 2 x 2), so the input is cut
into s x s blocks once (one strided copy, no overlapping patches), one matmul applies all m x m
kernel offsets to every block, and the conv output is the sum of m x m shifted copies of that
product. This is im2col without its k*k/s*s-fold duplication of the input (measured: the strided
im2col copy cost more than the matmul). The sum is taken on the whole block grid
``(bh, bw) = (oh + m - 1, ow + m - 1)`` flattened to one dimension, so each shift is one contiguous
add; positions in the last m - 1 rows or columns of the grid are then meaningless and never read
(a shift never reaches past the example's own grid from a valid position). The tests check all of
this against a plain ``sliding_window_view`` im2col reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esfast.config import PolicySettings
from esfast.policies import PolicyError

__all__ = ["CONV_LAYERS", "ConvActor", "ConvLayer", "ConvPolicy", "VBN_EPS"]

VBN_EPS = 1e-5
PIXEL_SCALE = 1.0 / 255.0
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
    stride: int
    offsets: int  # m = kernel // stride
    out_h: int
    out_w: int
    weight: slice
    gamma: slice
    beta: slice

    @property
    def kernel(self) -> int:
        return self.offsets * self.stride

    @property
    def blocks_h(self) -> int:
        return self.out_h + self.offsets - 1

    @property
    def blocks_w(self) -> int:
        return self.out_w + self.offsets - 1

    @property
    def block_rows(self) -> int:
        """Rows of the block matrix: one per (channel, row in block, column in block)."""
        return self.channels * self.stride * self.stride


@dataclass(frozen=True)
class _Dense:
    inputs: int
    outputs: int
    weight: slice
    gamma: slice | None  # None: the output layer (bias, no normalization)
    beta: slice


def _blocks_view(x: NDArray, conv: _Conv, channel_first: bool) -> NDArray:
    """Strided view of ``x`` as ``(C, s, s, N, blocks_h, blocks_w)``; x is (N, C, H, W) or (C, N, H, W)."""
    s, bh, bw = conv.stride, conv.blocks_h, conv.blocks_w
    cropped = x[..., : bh * s, : bw * s]
    if channel_first:  # (C, N, H, W)
        return cropped.reshape(cropped.shape[0], cropped.shape[1], bh, s, bw, s).transpose(0, 3, 5, 1, 2, 4)
    return cropped.reshape(cropped.shape[0], cropped.shape[1], bh, s, bw, s).transpose(1, 3, 5, 0, 2, 4)


def _big_weight(weight: NDArray[np.float32], conv: _Conv) -> NDArray[np.float32]:
    """``(F, C, k, k)`` -> ``(m*m*F, C*s*s)``: rows (dy, dx, filter), columns (channel, row, column in block)."""
    m, s = conv.offsets, conv.stride
    six = weight.reshape(conv.filters, conv.channels, m, s, m, s).transpose(2, 4, 0, 1, 3, 5)
    return np.ascontiguousarray(six.reshape(m * m * conv.filters, conv.block_rows))


def _shift_views(z: NDArray[np.float32], conv: _Conv, out: NDArray[np.float32]) -> tuple[list[NDArray[np.float32]], NDArray[np.float32]]:
    """The m*m shifted parts of the block product ``z (m*m*F, N*bh*bw)`` and the part of ``out`` they sum into."""
    m, bw = conv.offsets, conv.blocks_w
    flat = z.reshape(m * m, -1)
    span = flat.shape[1] - (m - 1) * (bw + 1)
    parts = [flat[dy * m + dx, dy * bw + dx : dy * bw + dx + span] for dy in range(m) for dx in range(m)]
    return parts, out[:span]


def _sum_parts(parts: list[NDArray[np.float32]], target: NDArray[np.float32]) -> None:
    if len(parts) == 1:
        np.copyto(target, parts[0])
        return
    np.add(parts[0], parts[1], out=target)
    for part in parts[2:]:
        np.add(target, part, out=target)


def _shift_sum(z: NDArray[np.float32], conv: _Conv, out: NDArray[np.float32]) -> None:
    """Conv output on the block grid, ``out`` (F*N*bh*bw,), from the block product ``z (m*m*F, N*bh*bw)``.

    Valid where ``out.reshape(F, N, bh, bw)[:, :, :oh, :ow]``; the rest is left as it was.
    """
    _sum_parts(*_shift_views(z, conv, out))


def _valid(grid: NDArray[np.float32], conv: _Conv, batch: int) -> NDArray[np.float32]:
    """The valid part ``(F, N, oh, ow)`` of a conv output on the block grid."""
    return grid.reshape(conv.filters, batch, conv.blocks_h, conv.blocks_w)[:, :, : conv.out_h, : conv.out_w]


class ConvPolicy:
    """The paper's Atari network with virtual batch normalization over a flat parameter vector.

    Not thread-safe: actors of one policy share its scratch buffers while they compute their
    normalization (:meth:`ConvActor.refresh`); run them from one thread (one policy per process).

    Args:
        observation_space: ``Box`` of ``uint8``, shape ``(channels, height, width)`` (what
            :func:`esfast.atari.make_atari_env` gives: ``(4, 84, 84)``).
        action_space: ``Discrete(n)``.
        settings: ``hidden_dims`` are the sizes of the fully connected layers after the convolutions
            (the paper: ``(256,)``); ``nonlin_type`` must be ``"relu"``.
        reference_batch: ``uint8`` array ``(N, channels, height, width)``, N >= 2, the observations
            the normalization statistics are computed on (copied here, as float32 blocks).

    Raises:
        PolicyError: an observation shape that does not fit the network, non-discrete actions, a
            reference batch of the wrong shape or dtype, or unsupported settings (one line each).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
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
            self.convs.append(_Conv(channels, layer.filters, layer.stride, layer.kernel // layer.stride, out_h, out_w, weight, gamma, beta))
            channels, height, width = layer.filters, out_h, out_w
        self.dense: list[_Dense] = []
        inputs = channels * height * width
        for index, outputs in enumerate((*settings.hidden_dims, self.act_dim)):
            weight = slice(start, start + inputs * outputs)
            hidden = index < len(settings.hidden_dims)
            gamma = slice(weight.stop, weight.stop + outputs) if hidden else None
            beta = slice(weight.stop + (outputs if hidden else 0), weight.stop + (2 * outputs if hidden else outputs))
            start = beta.stop
            self.dense.append(_Dense(inputs, outputs, weight, gamma, beta))
            inputs = outputs
        self.num_params = start

        batch = np.asarray(reference_batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != self.obs_shape or batch.shape[0] < 2:
            raise PolicyError(
                f"reference batch must be uint8 of shape (N >= 2, {', '.join(map(str, self.obs_shape))}),"
                f" got {batch.dtype} {batch.shape}"
            )
        self.reference_size = int(batch.shape[0])
        first = self.convs[0]
        blocks = np.empty((first.channels, first.stride, first.stride, self.reference_size, first.blocks_h, first.blocks_w), np.float32)
        np.copyto(blocks, _blocks_view(batch, first, channel_first=False), casting="unsafe")
        self._reference_blocks = blocks.reshape(first.block_rows, -1)
        self._scratch: dict[str, NDArray[np.float32]] = {}

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
            weight = rng.standard_normal((conv.filters, conv.block_rows * conv.offsets**2))
            weight *= HIDDEN_INIT_STD / np.linalg.norm(weight, axis=1, keepdims=True)
            theta[conv.weight] = weight.ravel()
            theta[conv.gamma] = 1.0
        for index, dense in enumerate(self.dense):
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

    def _buffer(self, name: str, shape: tuple[int, ...]) -> NDArray[np.float32]:
        buffer = self._scratch.get(name)
        if buffer is None or buffer.shape != shape:
            buffer = self._scratch[name] = np.empty(shape, dtype=np.float32)
        return buffer


def _stats(pre: NDArray[np.float32], axes: tuple[int, ...]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mean = pre.mean(axis=axes, dtype=np.float64)
    centered = pre - mean.reshape([-1 if axis not in axes else 1 for axis in range(pre.ndim)]).astype(np.float32)
    var = np.square(centered, dtype=np.float64).mean(axis=axes)
    return mean, var


class ConvActor:
    """Maps one observation to one action under fixed parameters and frozen VBN statistics.

    Holds its own buffers; a step allocates nothing beyond numpy's temporaries of ``argmax``.

    Attributes:
        statistics: per normalized layer, ``(mean, var)`` of its pre-activations on the reference
            batch (float64, shape ``(filters,)`` or ``(units,)``), as of the last :meth:`refresh`.
    """

    def __init__(self, policy: ConvPolicy, theta: NDArray[np.float32]) -> None:
        self.policy = policy
        self.theta = theta
        convs, dense = policy.convs, policy.dense
        self.statistics: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = []
        # Frozen, folded parameters (refreshed from theta).
        self.conv_weights = [np.empty((c.offsets**2 * c.filters, c.block_rows), np.float32) for c in convs]
        self.conv_biases = [np.empty((c.filters, 1), np.float32) for c in convs]
        self.dense_weights = [np.empty((d.inputs, d.outputs), np.float32) for d in dense[:-1]]
        self.dense_biases = [np.empty(d.outputs, np.float32) for d in dense[:-1]]
        last = dense[-1]
        self.out_weight = theta[last.weight].reshape(last.inputs, last.outputs)
        self.out_bias = theta[last.beta]
        # Step buffers (batch of one).
        self.blocks = [np.empty((c.block_rows, c.blocks_h * c.blocks_w), np.float32) for c in convs]
        self.block_views = [
            b.reshape(c.channels, c.stride, c.stride, 1, c.blocks_h, c.blocks_w) for b, c in zip(self.blocks, convs)
        ]
        self.products = [np.empty((c.offsets**2 * c.filters, c.blocks_h * c.blocks_w), np.float32) for c in convs]
        self.grids = [np.zeros(c.filters * c.blocks_h * c.blocks_w, np.float32) for c in convs]
        self.grid_rows = [g.reshape(c.filters, -1) for g, c in zip(self.grids, convs)]
        self.valid = [_valid(g, c, 1) for g, c in zip(self.grids, convs)]
        self.dense_outs = [np.empty(d.outputs, np.float32) for d in dense]
        self.flat = np.empty(convs[-1].filters * convs[-1].out_h * convs[-1].out_w, np.float32)
        self.flat_view = self.flat.reshape(convs[-1].filters, 1, convs[-1].out_h, convs[-1].out_w)
        # Views over those buffers, made once (making them per step cost a few us of Python).
        self.observation_buffer = np.empty((1, *policy.obs_shape), np.uint8)
        self.observation_blocks = _blocks_view(self.observation_buffer, convs[0], channel_first=False)
        self.shift_parts = [_shift_views(z, c, g) for z, c, g in zip(self.products, convs, self.grids)]
        self.next_sources = [_blocks_view(v, c, channel_first=True) for v, c in zip(self.valid, convs[1:])]
        self.relu_outs = [*self.block_views[1:], self.flat_view]  # relu writes straight into the next layer's input
        self.relu_ins = [*self.next_sources, self.valid[-1]]
        self.refresh()

    def refresh(self) -> None:
        """Recomputes the normalization from the current contents of ``theta`` and freezes it.

        Runs the reference batch through the network (batch statistics at every normalized layer),
        then folds ``gamma / sqrt(var + eps)`` into the weights and ``beta - mean * that`` into the
        biases.
        """
        policy, theta = self.policy, self.theta
        batch = policy.reference_size
        self.statistics = []
        x = policy._reference_blocks
        for index, conv in enumerate(policy.convs):
            weight = theta[conv.weight].reshape(conv.filters, conv.channels, conv.kernel, conv.kernel)
            big = _big_weight(weight, conv)
            if index == 0:
                big *= np.float32(PIXEL_SCALE)
            product = policy._buffer(f"z{index}", (big.shape[0], x.shape[1]))
            np.matmul(big, x, out=product)
            grid = policy._buffer(f"grid{index}", (conv.filters * batch * conv.blocks_h * conv.blocks_w,))
            _shift_sum(product, conv, grid)
            pre = _valid(grid, conv, batch)
            mean, var = _stats(pre, (1, 2, 3))
            self.statistics.append((mean, var))
            scale = (theta[conv.gamma] / np.sqrt(var + VBN_EPS)).astype(np.float32)
            shift = (theta[conv.beta] - mean * scale).astype(np.float32)
            np.multiply(big.reshape(conv.offsets**2, conv.filters, -1), scale[None, :, None], out=self.conv_weights[index].reshape(conv.offsets**2, conv.filters, -1))
            self.conv_biases[index][:, 0] = shift
            pre *= scale[:, None, None, None]
            pre += shift[:, None, None, None]
            np.maximum(pre, 0, out=pre)
            if index + 1 < len(policy.convs):
                following = policy.convs[index + 1]
                x = policy._buffer(f"blocks{index + 1}", (following.block_rows, batch * following.blocks_h * following.blocks_w))
                np.copyto(x.reshape(following.channels, following.stride, following.stride, batch, following.blocks_h, following.blocks_w),
                          _blocks_view(pre, following, channel_first=True))
        h = np.ascontiguousarray(pre.transpose(1, 0, 2, 3)).reshape(batch, -1)
        for index, dense in enumerate(policy.dense[:-1]):
            weight = theta[dense.weight].reshape(dense.inputs, dense.outputs)
            out = policy._buffer(f"dense{index}", (batch, dense.outputs))
            np.matmul(h, weight, out=out)
            mean, var = _stats(out, (0,))
            self.statistics.append((mean, var))
            gamma = theta[dense.gamma] if dense.gamma is not None else 1.0  # hidden layers always have one
            scale = (gamma / np.sqrt(var + VBN_EPS)).astype(np.float32)
            shift = (theta[dense.beta] - mean * scale).astype(np.float32)
            np.multiply(weight, scale[None, :], out=self.dense_weights[index])
            self.dense_biases[index][:] = shift
            out *= scale
            out += shift
            np.maximum(out, 0, out=out)
            h = out

    def __call__(self, observation: NDArray[np.uint8], noise: NDArray[np.float32] | None = None) -> int:
        """The action (argmax of the outputs) for one observation.

        Args:
            observation: ``uint8`` array of the policy's observation shape; not checked here (the
                hot path): the environment's observation space was checked when the policy was made.
            noise: ignored (actions are discrete); accepted for :func:`esfast.rollout.run_episode`.

        Returns:
            The action index.
        """
        convs = self.policy.convs
        np.copyto(self.observation_buffer, observation)  # a memcpy into a buffer whose block view is made once
        np.copyto(self.block_views[0], self.observation_blocks, casting="unsafe")
        for index in range(len(convs)):
            np.matmul(self.conv_weights[index], self.blocks[index], out=self.products[index])
            _sum_parts(*self.shift_parts[index])
            rows = self.grid_rows[index]
            np.add(rows, self.conv_biases[index], out=rows)
            np.maximum(self.relu_ins[index], 0, out=self.relu_outs[index])
        h = self.flat
        for weight, bias, out in zip(self.dense_weights, self.dense_biases, self.dense_outs):
            np.matmul(h, weight, out=out)
            np.add(out, bias, out=out)
            np.maximum(out, 0, out=out)
            h = out
        logits = self.dense_outs[-1]
        np.matmul(h, self.out_weight, out=logits)
        np.add(logits, self.out_bias, out=logits)
        return int(logits.argmax())

    def logits(self, observation: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The output layer's values for ``observation`` (a copy), as used by :meth:`__call__`."""
        self(observation)
        return self.dense_outs[-1].copy()
