#include "esfast/conv.hpp"

#include "esfast/dispatch.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Code paths. Each kernel is one always-inline body, compiled three times: for x86-64-v4
// (AVX-512), for AVX2 and for the baseline x86-64 (SSE2), and run through the table of the code
// path the caller gives (dispatch.hpp), so tests can run every path on one machine and compare the
// results bit for bit. The vector width and block size follow each path's register file (a block
// of the products is 12 positions x one 16-float vector with AVX-512's 32 registers, 6 x two
// 8-float vectors with AVX2's 16, 3 x four 4-float vectors with SSE2's 16). No path changes a
// result: the operations, and their order for every output, are the same; -ffp-contract=off
// (CMakeLists.txt) forbids fused multiply-adds in all of them.

namespace esfast {
namespace {

// Vectors of 4, 8 and 16 floats: one SSE, AVX or AVX-512 register. Each path uses its own
// width or less (GCC compiles wider vectors than the target has through the stack). aligned(4)
// allows unaligned loads and stores.
typedef float f4 __attribute__((vector_size(16), aligned(4)));
typedef float f8 __attribute__((vector_size(32), aligned(4)));
typedef float f16 __attribute__((vector_size(64), aligned(4)));
// Loads and stores go through may_alias types: one unaligned vector move each. (A memcpy into
// an element of an array of vectors was compiled as two 16-byte copies through the stack, whose
// reload as one 32-byte vector stalls store forwarding.)
typedef float f4_memory __attribute__((vector_size(16), aligned(4), may_alias));
typedef float f8_memory __attribute__((vector_size(32), aligned(4), may_alias));
typedef float f16_memory __attribute__((vector_size(64), aligned(4), may_alias));

ESFAST_INLINE void load(f4& v, const float* p) { v = *reinterpret_cast<const f4_memory*>(p); }
ESFAST_INLINE void load(f8& v, const float* p) { v = *reinterpret_cast<const f8_memory*>(p); }
ESFAST_INLINE void store(float* p, const f4& v) { *reinterpret_cast<f4_memory*>(p) = v; }
ESFAST_INLINE void store(float* p, const f8& v) { *reinterpret_cast<f8_memory*>(p) = v; }
ESFAST_INLINE void load(f16& v, const float* p) { v = *reinterpret_cast<const f16_memory*>(p); }
ESFAST_INLINE void store(float* p, const f16& v) { *reinterpret_cast<f16_memory*>(p) = v; }

/** The vector of L floats. (Templates take L, not the type: a typedef's aligned attribute
 *  would be dropped from a template argument.) */
template <int L>
struct Vector;
template <>
struct Vector<4> {
    typedef f4 type;
};
template <>
struct Vector<8> {
    typedef f8 type;
};
template <>
struct Vector<16> {
    typedef f16 type;
};

/** y + bias (if any), then the relu (if asked): x < 0 ? 0 : x, which keeps a NaN. */
template <int L>
ESFAST_INLINE void finish(typename Vector<L>::type& y, const float* bias, bool relu) {
    typedef typename Vector<L>::type Vec;
    if (bias != nullptr) {
        Vec b;
        load(b, bias);
        y += b;
    }
    if (relu) {
        const Vec zero = Vec{} + 0.0f;
        y = y < zero ? zero : y;
    }
}

ESFAST_INLINE float finish(float y, const float* bias, bool relu) {
    if (bias != nullptr) y += *bias;
    return relu && y < 0.0f ? 0.0f : y;
}

// ---- gathered_matmul

/**
 * R consecutive positions of a grid row x V vectors of outputs, in registers: per tap, V weight
 * vectors and R broadcast inputs. `in` points at the first position's input, `step` apart (Step
 * when Step > 0: a compile-time step lets all R inputs be addressed from one pointer); w and bias
 * at the block's first column, out at its first position and column.
 */
template <int L, int V, int Step, int R>
ESFAST_INLINE void matmul_block(const float* in, std::size_t step, const std::size_t* offset, std::size_t taps,
                                const float* w, std::size_t outputs, const float* bias, bool relu, float* out,
                                std::size_t out_stride) {
    typedef typename Vector<L>::type Vec;
    Vec acc[R][V];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) acc[r][v] = Vec{} + 0.0f;
    const float* row = w;
    if constexpr (Step > 0) {
        for (std::size_t t = 0; t < taps; ++t, row += outputs) {
            const float* src = in + offset[t];
            Vec wv[V];
            for (int v = 0; v < V; ++v) load(wv[v], row + L * v);
            for (int r = 0; r < R; ++r) {
                const float x = src[r * Step];
                for (int v = 0; v < V; ++v) acc[r][v] += x * wv[v];
            }
        }
    } else {
        const float* src[R];
        for (int r = 0; r < R; ++r) src[r] = in + r * step;
        for (std::size_t t = 0; t < taps; ++t, row += outputs) {
            const std::size_t o = offset[t];
            Vec wv[V];
            for (int v = 0; v < V; ++v) load(wv[v], row + L * v);
            for (int r = 0; r < R; ++r) {
                const float x = src[r][o];
                for (int v = 0; v < V; ++v) acc[r][v] += x * wv[v];
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int v = 0; v < V; ++v) {
            Vec y = acc[r][v];  // a copy: a reference into acc would keep acc in memory
            finish<L>(y, bias == nullptr ? nullptr : bias + L * v, relu);
            store(out + r * out_stride + L * v, y);
        }
    }
}

/** matmul_block for a block of `count` positions, 1 <= count <= R. */
template <int L, int V, int Step, int R>
ESFAST_INLINE void matmul_block_of(std::size_t count, const float* in, std::size_t step, const std::size_t* offset,
                                   std::size_t taps, const float* w, std::size_t outputs, const float* bias, bool relu,
                                   float* out, std::size_t out_stride) {
    if constexpr (R >= 1) {
        if (count == R) {
            matmul_block<L, V, Step, R>(in, step, offset, taps, w, outputs, bias, relu, out, out_stride);
        } else {
            matmul_block_of<L, V, Step, R - 1>(count, in, step, offset, taps, w, outputs, bias, relu, out, out_stride);
        }
    }
}

/** Columns [j, j + V lanes) for the whole grid. Each row is cut into blocks of at most Rmax
 *  positions, as even as possible (a row of 20 with Rmax 12: two blocks of 10). */
template <int L, int V, int Step, int Rmax>
ESFAST_INLINE void matmul_columns(const float* in, std::size_t rows, std::size_t cols, std::size_t row_step,
                                  std::size_t col_step, const std::size_t* offset, std::size_t taps, const float* w,
                                  std::size_t outputs, const float* bias, bool relu, float* out, std::size_t out_stride,
                                  std::size_t j) {
    const std::size_t blocks = (cols + Rmax - 1) / Rmax, size = cols / blocks, larger = cols % blocks;
    const float* b = bias == nullptr ? nullptr : bias + j;
    for (std::size_t y = 0; y < rows; ++y) {
        std::size_t x = 0;
        for (std::size_t k = 0; k < blocks; ++k) {
            const std::size_t count = size + (k < larger ? 1 : 0);
            matmul_block_of<L, V, Step, Rmax>(count, in + y * row_step + x * col_step, col_step, offset, taps, w + j,
                                                outputs, b, relu, out + (y * cols + x) * out_stride + j, out_stride);
            x += count;
        }
    }
}

/** Columns [j, j + V lanes) for the whole grid, the steps of the Atari network's grids (1, 4, 32)
 *  with one-pointer blocks. */
template <int L, int V, int Rmax>
ESFAST_INLINE void matmul_chunk(const float* in, std::size_t rows, std::size_t cols, std::size_t row_step,
                                std::size_t col_step, const std::size_t* offset, std::size_t taps, const float* w,
                                std::size_t outputs, const float* bias, bool relu, float* out, std::size_t out_stride,
                                std::size_t j) {
    switch (col_step) {
        case 1:
            matmul_columns<L, V, 1, Rmax>(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out, out_stride, j);
            break;
        case 4:
            matmul_columns<L, V, 4, Rmax>(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out, out_stride, j);
            break;
        case 32:
            matmul_columns<L, V, 32, Rmax>(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out, out_stride, j);
            break;
        default:
            matmul_columns<L, V, 0, Rmax>(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out, out_stride, j);
    }
}

/** Chunks of 16 columns (one, two or four vectors of L floats), then one of 8, then single columns. */
template <int L, int Rmax>
ESFAST_INLINE void matmul_body(const float* in, std::size_t rows, std::size_t cols, std::size_t row_step,
                               std::size_t col_step, const std::size_t* offset, std::size_t taps, const float* w,
                               std::size_t outputs, const float* bias, bool relu, float* out, std::size_t out_stride) {
    std::size_t j = 0;
    for (; j + 16 <= outputs; j += 16) {
        matmul_chunk<L, 16 / L, Rmax>(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out, out_stride, j);
    }
    if (j + 8 <= outputs) {
        constexpr int Half = L == 16 ? 8 : L;  // 8 columns: one AVX vector, or two SSE ones
        matmul_columns<Half, 8 / Half, 0, Rmax>(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out, out_stride, j);
        j += 8;
    }
    for (; j < outputs; ++j) {  // the last columns, one at a time, in the same order
        for (std::size_t y = 0; y < rows; ++y) {
            for (std::size_t x = 0; x < cols; ++x) {
                const float* src = in + y * row_step + x * col_step;
                float acc = 0.0f;
                for (std::size_t t = 0; t < taps; ++t) acc += src[offset[t]] * w[t * outputs + j];
                out[(y * cols + x) * out_stride + j] = finish(acc, bias == nullptr ? nullptr : bias + j, relu);
            }
        }
    }
}

// ---- sparse_dense

constexpr std::size_t kPrefetchRows = 8;  // rows ahead: measured best of 4, 8, 16

/** V vectors of columns of one panel (rows `width` apart) for the listed inputs, in registers. */
template <int L, int V>
ESFAST_INLINE void sparse_block(const std::uint32_t* index, const float* value, std::size_t count, const float* w,
                                std::size_t width, const float* bias, bool relu, float* y) {
    typedef typename Vector<L>::type Vec;
    Vec acc[V];
    for (int v = 0; v < V; ++v) acc[v] = Vec{} + 0.0f;
    for (std::size_t i = 0; i < count; ++i) {
        // The rows are scattered (zero inputs skipped): the hardware prefetcher cannot guess them.
        if (i + kPrefetchRows < count) {
            const float* ahead = w + static_cast<std::size_t>(index[i + kPrefetchRows]) * width;
            for (int line = 0; line < (V * L + 15) / 16; ++line) __builtin_prefetch(ahead + 16 * line);
        }
        const float* row = w + static_cast<std::size_t>(index[i]) * width;
        const float x = value[i];
        for (int v = 0; v < V; ++v) {
            Vec wv;
            load(wv, row + L * v);
            acc[v] += x * wv;
        }
    }
    for (int v = 0; v < V; ++v) {
        Vec out = acc[v];
        finish<L>(out, bias == nullptr ? nullptr : bias + L * v, relu);
        store(y + L * v, out);
    }
}

template <int L>
ESFAST_INLINE void sparse_body(const std::uint32_t* index, const float* value, std::size_t count, const float* w,
                               std::size_t inputs, std::size_t outputs, const float* bias, bool relu, bool backwards,
                               float* y) {
    const std::size_t panels = (outputs + kPanelWidth - 1) / kPanelWidth;
    for (std::size_t q = 0; q < panels; ++q) {
        const std::size_t start = (backwards ? panels - 1 - q : q) * kPanelWidth;
        const std::size_t width = outputs - start < kPanelWidth ? outputs - start : kPanelWidth;
        const float* panel = w + start * inputs;
        const float* b = bias == nullptr ? nullptr : bias + start;
        const auto at = [&](std::size_t j) { return b == nullptr ? nullptr : b + j; };
        std::size_t j = 0;
        // 8 accumulators (a full panel with AVX) keep both adders busy despite the add latency.
        for (; j + 8 * L <= width; j += 8 * L) sparse_block<L, 8>(index, value, count, panel + j, width, at(j), relu, y + start + j);
        if (j + 4 * L <= width) { sparse_block<L, 4>(index, value, count, panel + j, width, at(j), relu, y + start + j); j += 4 * L; }
        if (j + 2 * L <= width) { sparse_block<L, 2>(index, value, count, panel + j, width, at(j), relu, y + start + j); j += 2 * L; }
        if (j + L <= width) { sparse_block<L, 1>(index, value, count, panel + j, width, at(j), relu, y + start + j); j += L; }
        for (; j < width; ++j) {
            float acc = 0.0f;
            for (std::size_t i = 0; i < count; ++i) acc += value[i] * panel[static_cast<std::size_t>(index[i]) * width + j];
            y[start + j] = finish(acc, at(j), relu);
        }
    }
}

// ---- channel_statistics, normalize_relu, pixels_to_float: plain loops the compiler vectorizes
// across channels (never across the summed rows, which would reorder a sum).

ESFAST_INLINE void statistics_body(const float* x, std::size_t rows, std::size_t channels, double* mean, double* var) {
    // 16 channels at a time, their sums in registers (a sum kept in memory through the loop
    // would wait on store forwarding at every row).
    constexpr std::size_t kChunk = 16;
    for (std::size_t c0 = 0; c0 < channels; c0 += kChunk) {
        const std::size_t n = channels - c0 < kChunk ? channels - c0 : kChunk;
        double sum[kChunk] = {};
        if (n == kChunk) {
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t c = 0; c < kChunk; ++c) sum[c] += static_cast<double>(x[r * channels + c0 + c]);
        } else {
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t c = 0; c < n; ++c) sum[c] += static_cast<double>(x[r * channels + c0 + c]);
        }
        float center[kChunk] = {};
        for (std::size_t c = 0; c < n; ++c) {
            mean[c0 + c] = sum[c] / static_cast<double>(rows);
            center[c] = static_cast<float>(mean[c0 + c]);
        }
        double squares[kChunk] = {};
        if (n == kChunk) {
            for (std::size_t r = 0; r < rows; ++r) {
                for (std::size_t c = 0; c < kChunk; ++c) {
                    const float d = x[r * channels + c0 + c] - center[c];
                    squares[c] += static_cast<double>(d) * static_cast<double>(d);
                }
            }
        } else {
            for (std::size_t r = 0; r < rows; ++r) {
                for (std::size_t c = 0; c < n; ++c) {
                    const float d = x[r * channels + c0 + c] - center[c];
                    squares[c] += static_cast<double>(d) * static_cast<double>(d);
                }
            }
        }
        for (std::size_t c = 0; c < n; ++c) var[c0 + c] = squares[c] / static_cast<double>(rows);
    }
}

ESFAST_INLINE void normalize_body(const float* x, std::size_t groups, std::size_t positions, std::size_t channels,
                                  const float* scale, const float* shift, float* out, std::size_t out_group,
                                  std::size_t out_position, std::size_t out_channel) {
    if (out_group == 1 && out_channel != 1) {
        // Groups contiguous in the output (a transpose): groups innermost, so that the writes
        // run along a row and the rows read (one per group) stay in L1 from one channel to the next.
        for (std::size_t p = 0; p < positions; ++p) {
            for (std::size_t c = 0; c < channels; ++c) {
                float* dst = out + p * out_position + c * out_channel;
                for (std::size_t g = 0; g < groups; ++g) {
                    const float y = x[(g * positions + p) * channels + c] * scale[c] + shift[c];
                    dst[g] = y < 0.0f ? 0.0f : y;
                }
            }
        }
        return;
    }
    for (std::size_t g = 0; g < groups; ++g) {
        for (std::size_t p = 0; p < positions; ++p) {
            const float* src = x + (g * positions + p) * channels;
            float* dst = out + g * out_group + p * out_position;
            if (out_channel == 1) {  // contiguous: vectorized
                for (std::size_t c = 0; c < channels; ++c) {
                    const float y = src[c] * scale[c] + shift[c];
                    dst[c] = y < 0.0f ? 0.0f : y;
                }
            } else {
                for (std::size_t c = 0; c < channels; ++c) {
                    const float y = src[c] * scale[c] + shift[c];
                    dst[c * out_channel] = y < 0.0f ? 0.0f : y;
                }
            }
        }
    }
}

ESFAST_INLINE void scale_columns_body(const float* w, std::size_t rows, std::size_t cols, const float* scale,
                                      std::size_t panel, float* out) {
    for (std::size_t start = 0; start < cols; start += panel) {
        const std::size_t width = cols - start < panel ? cols - start : panel;
        float* dst = out + start * rows;
        for (std::size_t r = 0; r < rows; ++r) {
            const float* src = w + r * cols + start;
            float* row = dst + r * width;
            if (scale == nullptr) {
                for (std::size_t j = 0; j < width; ++j) row[j] = src[j];
            } else {
                for (std::size_t j = 0; j < width; ++j) row[j] = src[j] * scale[start + j];
            }
        }
    }
}

ESFAST_INLINE void pixels_body(const std::uint8_t* pixels, std::size_t n, float* out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(pixels[i]);
}

std::size_t nonzero_scalar(const float* x, const std::uint32_t* order, std::size_t n, std::uint32_t* index,
                           float* value) {
    std::size_t count = 0;
    for (std::size_t k = 0; k < n; ++k) {
        const float v = order == nullptr ? x[k] : x[order[k]];
        index[count] = static_cast<std::uint32_t>(k);
        value[count] = v;
        count += v != 0.0f ? 1 : 0;  // written always, kept only if nonzero: no branch to mispredict
    }
    return count;
}

#if ESFAST_X86_PATHS
/** 16 inputs at a time: gathered (or loaded), a mask of the nonzero ones, compressed in
 *  registers and stored whole (the lanes past the kept ones are overwritten later; compress
 *  stores straight to memory are microcoded on AMD Zen 4, slower than the scalar loop). */
ESFAST_TARGET_AVX512 std::size_t nonzero_avx512(const float* x, const std::uint32_t* order, std::size_t n,
                                                std::uint32_t* index, float* value) {
    std::size_t count = 0, k = 0;
    __m512i ks = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sixteen = _mm512_set1_epi32(16);
    for (; k + 16 <= n; k += 16) {  // count <= k, so the 16 stored lanes stay below n
        // (The masked gather with a zero source: the plain one trips GCC 12's -Wmaybe-uninitialized.)
        const __m512 v = order == nullptr ? _mm512_loadu_ps(x + k)
                                          : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xffff,
                                                                     _mm512_loadu_si512(order + k), x, 4);
        const __mmask16 kept = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);  // NaN is kept
        _mm512_storeu_ps(value + count, _mm512_maskz_compress_ps(kept, v));
        _mm512_storeu_si512(index + count, _mm512_maskz_compress_epi32(kept, ks));
        count += static_cast<std::size_t>(__builtin_popcount(kept));
        ks = _mm512_add_epi32(ks, sixteen);
    }
    const std::size_t tail =
        nonzero_scalar(order == nullptr ? x + k : x, order == nullptr ? nullptr : order + k, n - k, index + count,
                       value + count);
    for (std::size_t i = 0; i < tail; ++i) index[count + i] += static_cast<std::uint32_t>(k);  // were relative to k
    return count + tail;
}
#endif

// ---- the paths

/** The kernels of one code path. */
struct Kernels {
    void (*matmul)(const float*, std::size_t, std::size_t, std::size_t, std::size_t, const std::size_t*, std::size_t,
                   const float*, std::size_t, const float*, bool, float*, std::size_t);
    void (*sparse)(const std::uint32_t*, const float*, std::size_t, const float*, std::size_t, std::size_t,
                   const float*, bool, bool, float*);
    void (*statistics)(const float*, std::size_t, std::size_t, double*, double*);
    void (*normalize)(const float*, std::size_t, std::size_t, std::size_t, const float*, const float*, float*,
                      std::size_t, std::size_t, std::size_t);
    void (*scale_columns)(const float*, std::size_t, std::size_t, const float*, std::size_t, float*);
    std::size_t (*nonzero)(const float*, const std::uint32_t*, std::size_t, std::uint32_t*, float*);
    void (*pixels)(const std::uint8_t*, std::size_t, float*);
};

// One set of entry points per path: ATTRIBUTE is the target, LANES the floats per vector of the
// products, ROWS the most positions in one of their blocks (Rmax), SPARSE_LANES the floats per
// vector of sparse_dense, NONZERO the nonzero_inputs function.
#define ESFAST_KERNELS(NAME, ATTRIBUTE, LANES, ROWS, SPARSE_LANES, NONZERO)                                    \
    ATTRIBUTE void matmul_##NAME(const float* in, std::size_t rows, std::size_t cols, std::size_t row_step,          \
                                 std::size_t col_step, const std::size_t* offset, std::size_t taps, const float* w,  \
                                 std::size_t outputs, const float* bias, bool relu, float* out,                      \
                                 std::size_t out_stride) {                                                           \
        matmul_body<LANES, ROWS>(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out,     \
                                 out_stride);                                                                        \
    }                                                                                                                \
    ATTRIBUTE void sparse_##NAME(const std::uint32_t* index, const float* value, std::size_t count, const float* w,  \
                                 std::size_t inputs, std::size_t outputs, const float* bias, bool relu,              \
                                 bool backwards, float* y) {                                                         \
        sparse_body<SPARSE_LANES>(index, value, count, w, inputs, outputs, bias, relu, backwards, y);               \
    }                                                                                                                \
    ATTRIBUTE void statistics_##NAME(const float* x, std::size_t rows, std::size_t channels, double* mean,           \
                                     double* var) {                                                                  \
        statistics_body(x, rows, channels, mean, var);                                                               \
    }                                                                                                                \
    ATTRIBUTE void normalize_##NAME(const float* x, std::size_t groups, std::size_t positions, std::size_t channels, \
                                    const float* scale, const float* shift, float* out, std::size_t out_group,       \
                                    std::size_t out_position, std::size_t out_channel) {                             \
        normalize_body(x, groups, positions, channels, scale, shift, out, out_group, out_position, out_channel);     \
    }                                                                                                                \
    ATTRIBUTE void scale_columns_##NAME(const float* w, std::size_t rows, std::size_t cols, const float* scale,      \
                                        std::size_t panel, float* out) {                                             \
        scale_columns_body(w, rows, cols, scale, panel, out);                                                        \
    }                                                                                                                \
    ATTRIBUTE void pixels_##NAME(const std::uint8_t* pixels, std::size_t n, float* out) {                            \
        pixels_body(pixels, n, out);                                                                                 \
    }                                                                                                                \
    constexpr Kernels kKernels_##NAME = {matmul_##NAME,    sparse_##NAME,        statistics_##NAME,                  \
                                         normalize_##NAME, scale_columns_##NAME, NONZERO,                            \
                                         pixels_##NAME};

// SSE2 has 16 registers of 4 floats: 3 positions x 16 filters take 12 of them.
ESFAST_KERNELS(baseline, , 4, 3, 4, nonzero_scalar)
#if ESFAST_X86_PATHS
ESFAST_KERNELS(avx2, ESFAST_TARGET_AVX2, 8, 6, 8, nonzero_scalar)
ESFAST_KERNELS(avx512, ESFAST_TARGET_AVX512, 16, 12, 8, nonzero_avx512)
#endif

constexpr Kernels kPaths[] = {kKernels_baseline,
#if ESFAST_X86_PATHS
                              kKernels_avx2, kKernels_avx512
#endif
};

const Kernels& kernels(CodePath path) { return kPaths[code_path_index(path)]; }

}  // namespace

void gathered_matmul(CodePath path, const float* in, std::size_t rows, std::size_t cols, std::size_t row_step,
                     std::size_t col_step, const std::size_t* offset, std::size_t taps, const float* w,
                     std::size_t outputs, const float* bias, bool relu, float* out, std::size_t out_stride) {
    kernels(path).matmul(in, rows, cols, row_step, col_step, offset, taps, w, outputs, bias, relu, out, out_stride);
}

std::size_t nonzero_inputs(CodePath path, const float* x, const std::uint32_t* order, std::size_t n,
                           std::uint32_t* index, float* value) {
    return kernels(path).nonzero(x, order, n, index, value);
}

void sparse_dense(CodePath path, const std::uint32_t* index, const float* value, std::size_t count, const float* w,
                  std::size_t inputs, std::size_t outputs, const float* bias, bool relu, bool backwards, float* y) {
    kernels(path).sparse(index, value, count, w, inputs, outputs, bias, relu, backwards, y);
}

void channel_statistics(CodePath path, const float* x, std::size_t rows, std::size_t channels, double* mean,
                        double* var) {
    kernels(path).statistics(x, rows, channels, mean, var);
}

void normalize_relu(CodePath path, const float* x, std::size_t groups, std::size_t positions, std::size_t channels,
                    const float* scale, const float* shift, float* out, std::size_t out_group,
                    std::size_t out_position, std::size_t out_channel) {
    kernels(path).normalize(x, groups, positions, channels, scale, shift, out, out_group, out_position, out_channel);
}

void scale_columns(CodePath path, const float* w, std::size_t rows, std::size_t cols, const float* scale,
                   std::size_t panel, float* out) {
    kernels(path).scale_columns(w, rows, cols, scale, panel, out);
}

void pixels_to_float(CodePath path, const std::uint8_t* pixels, std::size_t n, float* out) {
    kernels(path).pixels(pixels, n, out);
}

}  // namespace esfast
