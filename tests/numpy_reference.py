"""Plain numpy re-implementations of the C++ kernels, written from their specifications.

The Gaussian reference repeats the kernel's float32 operations one by one (numpy rounds every
ufunc result, so no operation is fused), which makes exact equality a fair expectation.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
STREAM_NOISE, STREAM_OFFSETS = 0, 1


def philox4x32(key: int, c0, c1, c2, c3) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 over arrays of counter words (uint32 values held in uint64)."""
    c = [np.asarray(w, dtype=np.uint64) & MASK32 for w in (c0, c1, c2, c3)]
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for _ in range(10):
        p0 = M0 * c[0]
        p1 = M1 * c[2]
        c = [
            (p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0),
            p1 & MASK32,
            (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1),
            p0 & MASK32,
        ]
        k0 = (k0 + W0) & 0xFFFFFFFF
        k1 = (k1 + W1) & 0xFFFFFFFF
    return tuple(w.astype(np.uint32) for w in c)


def _f32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def _box_muller(radius_word: np.ndarray, angle_word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.float32
    u = (((radius_word >> 9) << 1) | 1).astype(np.float32) * f(2.0**-24)
    bits = u.view(np.uint32)
    big = ((bits & 0x007FFFFF) > 0x003504F3).astype(np.uint32)
    e = (bits >> 23).astype(np.int32) - 127 + big.astype(np.int32)
    m = _f32(((bits & 0x007FFFFF) | 0x3F800000) - (big << 23))
    s = (m - f(1)) / (m + f(1))
    z = s * s
    series = s * (f(2) + z * (f(0.666666667) + z * (f(0.4) + z * (f(0.285714286) + z * f(0.222222222)))))
    ef = e.astype(np.float32)
    log_u = ef * f(0.693145751953125) + (ef * f(1.42860682e-06) + series)
    r = np.sqrt(f(-2) * log_u)

    t = ((((angle_word >> 8) & 0x3FFFFF) << 1) | 1).astype(np.float32) * f(2.0**-23)
    a = (t - f(0.5)) * f(1.57079633)
    a2 = a * a
    sin_a = a * (f(1) + a2 * (f(-1.66666667e-01) + a2 * (f(8.33333333e-03) + a2 * (f(-1.98412698e-04) + a2 * f(2.75573192e-06)))))
    cos_a = f(1) + a2 * (
        f(-0.5) + a2 * (f(4.16666667e-02) + a2 * (f(-1.38888889e-03) + a2 * (f(2.48015873e-05) + a2 * f(-2.75573192e-07))))
    )
    c = f(0.707106781) * (cos_a - sin_a)
    s_ = f(0.707106781) * (cos_a + sin_a)
    q = angle_word >> 30
    swap = (q & 1).astype(bool)
    x = np.where(swap, s_, c)
    y = np.where(swap, c, s_)
    x = np.where(((q ^ (q >> 1)) & 1).astype(bool), -x, x)
    y = np.where((q >> 1).astype(bool), -y, y)
    return r * x, r * y


def noise_samples(seed: int, start: int, count: int) -> np.ndarray:
    """Samples [start, start + count) of the noise table of ``seed``."""
    first, last = start // 4, (start + count + 3) // 4
    blocks = np.arange(first, last, dtype=np.uint64)
    w0, w1, w2, w3 = philox4x32(seed, blocks & MASK32, blocks >> np.uint64(32), np.full_like(blocks, STREAM_NOISE), 0 * blocks)
    z0, z1 = _box_muller(w0, w1)
    z2, z3 = _box_muller(w2, w3)
    values = np.stack([z0, z1, z2, z3], axis=1).ravel()
    return values[start - 4 * first : start - 4 * first + count]


def sample_offsets(seed: int, count: int, dim: int, table_size: int) -> np.ndarray:
    """Lemire's unbiased multiply-and-reject on Philox stream 1, one offset at a time."""
    span = table_size - dim + 1
    threshold = (2**64 - span) % span
    out = []
    for k in range(count):
        attempt = 0
        while True:
            w = philox4x32(seed, [k & 0xFFFFFFFF], [k >> 32], [STREAM_OFFSETS], [attempt])
            product = (int(w[0][0]) | (int(w[1][0]) << 32)) * span
            if product % 2**64 >= threshold:
                out.append(product >> 64)
                break
            attempt += 1
    return np.array(out, dtype=np.int64)


def weighted_noise_sum(table: np.ndarray, offsets: np.ndarray, weights: np.ndarray, dim: int) -> np.ndarray:
    """Accumulates in float64 in the order of ``offsets`` and rounds once, like the kernel."""
    acc = np.zeros(dim, dtype=np.float64)
    for offset, weight in zip(offsets, weights):
        acc = acc + np.float64(weight) * table[offset : offset + dim].astype(np.float64)
    return acc.astype(np.float32)


def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks of ties, scaled to [-0.5, 0.5]."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    if flat.size == 1:
        return np.zeros(np.shape(x), dtype=np.float32)
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    average = first + (counts - 1) / 2.0
    ranks = average[inverse]
    return (ranks / (flat.size - 1) - 0.5).astype(np.float32).reshape(np.shape(x))


# ---- the convolutional policy with virtual batch normalization (cpp/src/conv_network.cpp)

PAPER_CONV_LAYERS = ((16, 8, 4), (32, 4, 2))  # (filters, kernel, stride)
VBN_EPS = 1e-5


def conv_unpack(
    theta: np.ndarray, shape: tuple[int, ...], hidden: tuple[int, ...], actions: int, conv_layers=PAPER_CONV_LAYERS
) -> list[dict[str, np.ndarray]]:
    """The documented parameter layout, unpacked on its own: float32 views of ``theta``."""
    layers, start = [], 0
    channels, height, width = shape

    def take(*part: int) -> np.ndarray:
        nonlocal start
        count = int(np.prod(part))
        view = theta[start : start + count].reshape(part)
        start += count
        return view

    for filters, kernel, stride in conv_layers:
        layers.append({"w": take(filters, channels, kernel, kernel), "gamma": take(filters), "beta": take(filters), "stride": stride})
        channels, height, width = filters, (height - kernel) // stride + 1, (width - kernel) // stride + 1
    inputs = channels * height * width
    for outputs in hidden:
        layers.append({"w": take(inputs, outputs), "gamma": take(outputs), "beta": take(outputs)})
        inputs = outputs
    layers.append({"w": take(inputs, actions), "b": take(actions)})
    assert start == theta.size
    return layers


def _patches(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """(N, C, H, W) -> (N, positions, taps): positions in (row, column) order, taps in (channel, row, column)."""
    windows = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]  # N, C, oh, ow, k, k
    n, c, oh, ow = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * kernel * kernel)


def conv_network_reference(
    theta: np.ndarray,
    batch: np.ndarray,
    observations: np.ndarray,
    hidden: tuple[int, ...],
    actions: int,
    conv_layers=PAPER_CONV_LAYERS,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Float64 batch norm: statistics on ``batch`` at every hidden layer, and the logits of
    ``observations`` under them (im2col convolutions, BLAS products)."""
    layers = conv_unpack(theta.astype(np.float64), batch.shape[1:], hidden, actions, conv_layers)
    ref = batch.astype(np.float64) / 255.0
    obs = observations.astype(np.float64) / 255.0
    statistics = []
    for layer in layers[: len(conv_layers)]:
        w = layer["w"]
        f, k = w.shape[0], w.shape[-1]

        def conv(x: np.ndarray) -> np.ndarray:
            cols = _patches(x, k, layer["stride"])  # N, P, T
            oh = (x.shape[2] - k) // layer["stride"] + 1
            return (cols @ w.reshape(f, -1).T).reshape(len(x), oh, -1, f).transpose(0, 3, 1, 2)

        pre_ref, pre_obs = conv(ref), conv(obs)
        mean, var = pre_ref.mean(axis=(0, 2, 3)), pre_ref.var(axis=(0, 2, 3))
        statistics.append((mean, var))

        def norm(z: np.ndarray) -> np.ndarray:
            scaled = (z - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + VBN_EPS)
            return np.maximum(layer["gamma"][None, :, None, None] * scaled + layer["beta"][None, :, None, None], 0)

        ref, obs = norm(pre_ref), norm(pre_obs)
    ref, obs = ref.reshape(len(ref), -1), obs.reshape(len(obs), -1)
    for layer in layers[len(conv_layers) : -1]:
        pre_ref, pre_obs = ref @ layer["w"], obs @ layer["w"]
        mean, var = pre_ref.mean(axis=0), pre_ref.var(axis=0)
        statistics.append((mean, var))
        ref = np.maximum(layer["gamma"] * (pre_ref - mean) / np.sqrt(var + VBN_EPS) + layer["beta"], 0)
        obs = np.maximum(layer["gamma"] * (pre_obs - mean) / np.sqrt(var + VBN_EPS) + layer["beta"], 0)
    return statistics, obs @ layers[-1]["w"] + layers[-1]["b"]


def _in_order(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (..., T) @ w (T, F) in float32, summed over t one term at a time from 0 (each numpy
    operation rounds, none is fused)."""
    acc = np.zeros((*x.shape[:-1], w.shape[1]), np.float32)
    for t in range(w.shape[0]):
        acc = acc + x[..., t : t + 1] * w[t]
    return acc


def _relu(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, np.float32(0), x)  # keeps a NaN, as the kernel


def _statistics_in_order(pre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 mean and variance per column of ``pre`` (rows, channels), rows summed one at a time."""
    total = np.zeros(pre.shape[1])
    for row in pre:
        total = total + row.astype(np.float64)
    mean = total / len(pre)
    center = mean.astype(np.float32)
    squares = np.zeros(pre.shape[1])
    for row in pre:
        d = (row - center).astype(np.float64)
        squares = squares + d * d
    return mean, squares / len(pre)


def _fold(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = (gamma.astype(np.float64) / np.sqrt(var + VBN_EPS)).astype(np.float32)
    shift = (beta.astype(np.float64) - mean * scale.astype(np.float64)).astype(np.float32)
    return scale, shift


def conv_network_exact(
    theta: np.ndarray,
    batch: np.ndarray,
    observations: np.ndarray,
    hidden: tuple[int, ...],
    actions: int,
    conv_layers=PAPER_CONV_LAYERS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's arithmetic, operation by operation, for exact comparison: (mean, var) of all
    normalized units in the kernel's order, the logits of ``observations``, and their inputs to the
    first dense layer (to check that some are zero).

    Float32 throughout, sums in the documented orders: conv taps in (channel, row, column) order,
    dense inputs in (channel, row, column) order with every input, zeros included (the kernel skips
    the zeros: equality shows that skipping them changes nothing); statistics in float64 over
    (example, position) in order. Pixels are floats 0..255, 1/255 is in the first layer's weights.
    """
    layers = conv_unpack(theta, batch.shape[1:], hidden, actions, conv_layers)
    means, variances = [], []
    x = batch.astype(np.float32)  # N, C, H, W
    folded = []
    for index, layer in enumerate(layers[: len(conv_layers)]):
        w = layer["w"]
        f, k, s = w.shape[0], w.shape[-1], layer["stride"]
        taps = w.reshape(f, -1).T * (np.float32(1.0 / 255.0) if index == 0 else np.float32(1.0))  # T, F
        oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
        pre = _in_order(_patches(x, k, s), taps)  # N, P, F
        mean, var = _statistics_in_order(pre.reshape(-1, f))
        means.append(mean)
        variances.append(var)
        scale, shift = _fold(layer["gamma"], layer["beta"], mean, var)
        folded.append((taps * scale, shift, k, s))
        y = _relu(pre * scale + shift)  # two roundings, as written
        x = y.reshape(len(x), oh, ow, f).transpose(0, 3, 1, 2)
    h = x.reshape(len(x), -1)  # (channel, row, column)
    for layer in layers[len(conv_layers) : -1]:
        pre = _in_order(h, layer["w"])
        mean, var = _statistics_in_order(pre)
        means.append(mean)
        variances.append(var)
        scale, shift = _fold(layer["gamma"], layer["beta"], mean, var)
        folded.append((layer["w"] * scale, shift, None, None))
        h = _relu(pre * scale + shift)
    logits, dense_inputs = [], []
    for observation in observations:
        x = observation[None].astype(np.float32)
        for w, bias, k, s in folded[: len(conv_layers)]:
            oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
            y = _relu(_in_order(_patches(x, k, s), w) + bias)
            x = y.reshape(1, oh, ow, -1).transpose(0, 3, 1, 2)
        h = x.reshape(-1)
        dense_inputs.append(h)
        for w, bias, _, _ in folded[len(conv_layers) :]:
            h = _relu(_in_order(h, w) + bias)
        logits.append(_in_order(h, layers[-1]["w"]) + layers[-1]["b"])
    return np.concatenate(means), np.concatenate(variances), np.array(logits), np.array(dense_inputs)
