#include "esfast/mlp.hpp"

#include "esfast/dispatch.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

// The dense layers and the activations are compiled once per code path (dispatch.hpp): for the
// baseline x86-64 (SSE2), for AVX2 and for x86-64-v4 (AVX-512), and mlp_forward runs one path's
// table, picked once per call. The baseline and AVX2 dense layers are one body (blocks of up to 64
// columns in 8-float vectors); the AVX-512 one keeps up to 256 columns in its 32 registers. All
// paths do the same float operations in the same order for every output (no FMA contraction: see
// CMakeLists.txt), so their results are identical.

namespace esfast {
namespace {

// 8 floats, one AVX register (two SSE ones); aligned(4) allows unaligned loads and stores.
typedef float f8 __attribute__((vector_size(32), aligned(4)));
// 16 floats, one AVX-512 register.
typedef float f16 __attribute__((vector_size(64), aligned(4)));

/** y[j0 .. j0 + lanes * V) for one block of columns: V vector accumulators of `Vec`, summed over
 *  i in order. Every column sees the same operations whatever the vector width. */
template <typename Vec, int V>
ESFAST_INLINE void dense_block(const float* x, std::size_t inputs, const float* w, const float* b,
                               std::size_t outputs, std::size_t j0, float* y) {
    constexpr int lanes = sizeof(Vec) / sizeof(float);
    Vec acc[V];
    for (int v = 0; v < V; ++v) acc[v] = Vec{} + 0.0f;
    const float* row = w + j0;
    for (std::size_t i = 0; i < inputs; ++i, row += outputs) {
        const float xi = x[i];
        for (int v = 0; v < V; ++v) {
            Vec wv;
            std::memcpy(&wv, row + lanes * v, sizeof wv);
            acc[v] += xi * wv;
        }
    }
    for (int v = 0; v < V; ++v) {
        Vec bv;
        std::memcpy(&bv, b + j0 + lanes * v, sizeof bv);
        const Vec out = acc[v] + bv;
        std::memcpy(y + j0 + lanes * v, &out, sizeof out);
    }
}

/** The last columns, one at a time, in the same order as the blocks. */
ESFAST_INLINE void dense_columns(const float* x, std::size_t inputs, const float* w, const float* b,
                                 std::size_t outputs, std::size_t j, float* y) {
    for (; j < outputs; ++j) {
        float acc = 0.0f;
        const float* col = w + j;
        for (std::size_t i = 0; i < inputs; ++i) acc += x[i] * col[i * outputs];
        y[j] = acc + b[j];
    }
}

/** The dense layer in blocks of up to 64 columns, 8-float vectors: the baseline and AVX2 paths. */
ESFAST_INLINE void dense_narrow(const float* x, std::size_t inputs, const float* w, const float* b,
                                std::size_t outputs, float* y) {
    std::size_t j = 0;
    // 8 accumulators (64 columns) keep both AVX2 adders busy despite the add latency.
    for (; j + 64 <= outputs; j += 64) dense_block<f8, 8>(x, inputs, w, b, outputs, j, y);
    if (j + 32 <= outputs) { dense_block<f8, 4>(x, inputs, w, b, outputs, j, y); j += 32; }
    if (j + 16 <= outputs) { dense_block<f8, 2>(x, inputs, w, b, outputs, j, y); j += 16; }
    if (j + 8 <= outputs) { dense_block<f8, 1>(x, inputs, w, b, outputs, j, y); j += 8; }
    dense_columns(x, inputs, w, b, outputs, j, y);
}

/** The dense layer with AVX-512's 32 registers: up to 256 columns per pass over the rows, so each
 *  row of w is read once, front to back (a 256-wide layer streams its weights in one sequential
 *  pass instead of four). */
ESFAST_INLINE void dense_wide(const float* x, std::size_t inputs, const float* w, const float* b,
                              std::size_t outputs, float* y) {
    std::size_t j = 0;
    for (; j + 256 <= outputs; j += 256) dense_block<f16, 16>(x, inputs, w, b, outputs, j, y);
    if (j + 128 <= outputs) { dense_block<f16, 8>(x, inputs, w, b, outputs, j, y); j += 128; }
    if (j + 64 <= outputs) { dense_block<f16, 4>(x, inputs, w, b, outputs, j, y); j += 64; }
    if (j + 32 <= outputs) { dense_block<f16, 2>(x, inputs, w, b, outputs, j, y); j += 32; }
    if (j + 16 <= outputs) { dense_block<f16, 1>(x, inputs, w, b, outputs, j, y); j += 16; }
    if (j + 8 <= outputs) { dense_block<f8, 1>(x, inputs, w, b, outputs, j, y); j += 8; }
    dense_columns(x, inputs, w, b, outputs, j, y);
}

/** Eigen's generic_fast_tanh_float: odd numerator of degree 13 over even denominator of degree 6.
 *  T is float or f8; written with selects only (no branches), so both forms round alike. Takes
 *  and gives references: a 32-byte vector passed by value would have an ABI that depends on AVX. */
template <typename T>
ESFAST_INLINE void tanh_rational(const T& a, T& result) {
    const T limit = T{} + 7.90531110763549805f;
    T x = a > limit ? limit : a;  // a NaN passes both clamps and gives NaN
    x = x < -limit ? -limit : x;
    const T x2 = x * x;
    T p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
    p = x2 * p + -8.60467152213735e-11f;
    p = x2 * p + 5.12229709037114e-08f;
    p = x2 * p + 1.48572235717979e-05f;
    p = x2 * p + 6.37261928875436e-04f;
    p = x2 * p + 4.89352455891786e-03f;
    p = x * p;
    T q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
    q = x2 * q + 2.26843463243900e-03f;
    q = x2 * q + 4.89352518554385e-03f;
    const T r = p / q;
    const T magnitude = a < 0.0f ? -a : a;
    result = magnitude < 0.0004f ? a : r;  // tiny inputs: tanh(a) rounds to a
}

/** x[i] = activation(x[i]) for i < n, in place: tanh 8 floats at a time. */
ESFAST_INLINE void activate_body(Activation activation, float* x, std::size_t n) {
    switch (activation) {
        case Activation::identity:
            return;
        case Activation::tanh:
        {
            std::size_t i = 0;
            for (; i + 8 <= n; i += 8) {
                f8 v;
                std::memcpy(&v, x + i, sizeof v);
                tanh_rational(v, v);
                std::memcpy(x + i, &v, sizeof v);
            }
            for (; i < n; ++i) tanh_rational(x[i], x[i]);
            return;
        }
        case Activation::relu:
            for (std::size_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
            return;
    }
}

/** The kernels of one code path. */
struct Kernels {
    void (*dense)(const float*, std::size_t, const float*, const float*, std::size_t, float*);
    void (*activate)(Activation, float*, std::size_t);
};

// One set of entry points per path: ATTRIBUTE is the target, DENSE the dense layer's body.
#define ESFAST_MLP_KERNELS(NAME, ATTRIBUTE, DENSE)                                                              \
    ATTRIBUTE void dense_##NAME(const float* x, std::size_t inputs, const float* w, const float* b,            \
                                std::size_t outputs, float* y) {                                              \
        DENSE(x, inputs, w, b, outputs, y);                                                                   \
    }                                                                                                         \
    ATTRIBUTE void activate_##NAME(Activation activation, float* x, std::size_t n) {                          \
        activate_body(activation, x, n);                                                                      \
    }                                                                                                         \
    constexpr Kernels kKernels_##NAME = {dense_##NAME, activate_##NAME};

ESFAST_MLP_KERNELS(baseline, , dense_narrow)
#if ESFAST_X86_PATHS
ESFAST_MLP_KERNELS(avx2, ESFAST_TARGET_AVX2, dense_narrow)
ESFAST_MLP_KERNELS(avx512, ESFAST_TARGET_AVX512, dense_wide)
#endif

constexpr Kernels kPaths[] = {kKernels_baseline,
#if ESFAST_X86_PATHS
                              kKernels_avx2, kKernels_avx512
#endif
};

const Kernels& kernels(CodePath path) { return kPaths[code_path_index(path)]; }

}  // namespace

float tanh_approx(float x) {
    float result;
    tanh_rational(x, result);
    return result;
}

void dense(CodePath path, const float* x, std::size_t inputs, const float* w, const float* b, std::size_t outputs,
           float* y) {
    kernels(path).dense(x, inputs, w, b, outputs, y);
}

void activate(CodePath path, Activation activation, float* x, std::size_t n) {
    kernels(path).activate(activation, x, n);
}

namespace {

template <typename T>
ESFAST_INLINE void normalize(const T* obs, const float* mean, const float* inv_std, float clip, std::size_t n,
                             float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        // As numpy's (obs - mean) into float32, times inv_std, then min with clip and max with -clip.
        const float centered = static_cast<float>(obs[i] - static_cast<T>(mean[i]));
        const float scaled = centered * inv_std[i];
        const float upper = scaled < clip || scaled != scaled ? scaled : clip;
        out[i] = upper > -clip || upper != upper ? upper : -clip;
    }
}

}  // namespace

void normalize_observation(const double* obs, const float* mean, const float* inv_std, float clip, std::size_t n,
                           float* out) {
    normalize(obs, mean, inv_std, clip, n, out);
}

void normalize_observation(const float* obs, const float* mean, const float* inv_std, float clip, std::size_t n,
                           float* out) {
    normalize(obs, mean, inv_std, clip, n, out);
}

void mlp_forward(CodePath path, const float* theta, const std::size_t* sizes, std::size_t layers,
                 Activation hidden, const float* x, float* scratch, float* out) {
    const Kernels& k = kernels(path);
    std::size_t widest = 0;
    for (std::size_t l = 1; l < layers; ++l) widest = std::max(widest, sizes[l]);
    const float* in = x;
    for (std::size_t l = 0; l < layers; ++l) {
        const std::size_t n = sizes[l], m = sizes[l + 1];
        const bool last = l + 1 == layers;
        float* y = last ? out : scratch + (l % 2) * widest;
        k.dense(in, n, theta, theta + n * m, m, y);
        if (!last) k.activate(hidden, y, m);
        theta += n * m + m;
        in = y;
    }
}

void squash_actions(const float* y, const float* mid, const float* half, const std::uint8_t* bounded,
                    const float* noise, const float* low, const float* high, std::size_t n, float* action) {
    for (std::size_t i = 0; i < n; ++i) {
        float t = y[i];
        if (bounded[i]) tanh_rational(y[i], t);
        float a = t * half[i] + mid[i];
        if (noise != nullptr) {
            a = a + noise[i];
            a = a < high[i] || a != a ? a : high[i];
            a = a > low[i] || a != a ? a : low[i];
        }
        action[i] = a;
    }
}

}  // namespace esfast
