"""Plain numpy re-implementations of the C++ kernels, written from their specifications.

The Gaussian reference repeats the kernel's float32 operations one by one (numpy rounds every
ufunc result, so no operation is fused), which makes exact equality a fair expectation.
"""

from __future__ import annotations

import numpy as np

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
