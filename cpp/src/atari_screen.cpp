#include "esfast/atari_screen.hpp"

#include "esfast/dispatch.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#if ESFAST_X86_PATHS
#include <immintrin.h>
#endif

namespace esfast {
namespace {

bool palette_to_gray_scalar(const std::uint8_t* indices, std::size_t n, const std::uint8_t* table,
                            const std::uint8_t* known, std::uint8_t* gray) {
    unsigned all = 1;
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t index = indices[i];
        all &= known[index] != 0;
        gray[i] = table[index];
    }
    return all != 0;
}

#if ESFAST_X86_PATHS
/** 64 pixels a step: two 128-byte table lookups (vpermi2b), picked by the index's top bit. */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) bool palette_to_gray_vbmi(
    const std::uint8_t* indices, std::size_t n, const std::uint8_t* table, const std::uint8_t* known,
    std::uint8_t* gray) {
    const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
    const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
    const __m512i k0 = _mm512_loadu_si512(known), k1 = _mm512_loadu_si512(known + 64);
    const __m512i k2 = _mm512_loadu_si512(known + 128), k3 = _mm512_loadu_si512(known + 192);
    __mmask64 missing = 0;
    std::size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m512i index = _mm512_loadu_si512(indices + i);
        const __mmask64 high = _mm512_movepi8_mask(index);
        const __m512i low_half = _mm512_permutex2var_epi8(t0, index, t1);
        const __m512i high_half = _mm512_permutex2var_epi8(t2, index, t3);
        _mm512_storeu_si512(gray + i, _mm512_mask_blend_epi8(high, low_half, high_half));
        const __m512i k = _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(k0, index, k1),
                                                 _mm512_permutex2var_epi8(k2, index, k3));
        missing |= _mm512_cmpeq_epi8_mask(k, _mm512_setzero_si512());
    }
    const bool rest = palette_to_gray_scalar(indices + i, n - i, table, known, gray + i);
    return missing == 0 && rest;
}
#endif

typedef std::uint8_t u8x16 __attribute__((vector_size(16), aligned(1)));
typedef std::uint16_t u16x16 __attribute__((vector_size(32), aligned(2)));
typedef std::uint32_t u32x8 __attribute__((vector_size(32), aligned(4)));
typedef std::uint16_t u16x8 __attribute__((vector_size(16), aligned(2)));

/** Sums over the row taps of one output row, over the whole input width, of max(a, b) (or of a),
 *  16 columns at a time in 16-bit lanes (callers check that 255 times the row weights' sum fits). */
ESFAST_INLINE void row_sums_narrow_body(const std::uint8_t* a, const std::uint8_t* b, std::size_t width,
                                        std::size_t first, const std::uint32_t* weights, std::size_t taps,
                                        std::uint32_t* sums) {
    std::size_t x = 0;
    for (; x + 16 <= width; x += 16) {
        u16x16 acc = {};
        for (std::size_t t = 0; t < taps; ++t) {
            u8x16 pixels;
            std::memcpy(&pixels, a + (first + t) * width + x, sizeof pixels);
            if (b != nullptr) {
                u8x16 other;
                std::memcpy(&other, b + (first + t) * width + x, sizeof other);
                pixels = pixels > other ? pixels : other;
            }
            acc += static_cast<std::uint16_t>(weights[t]) * __builtin_convertvector(pixels, u16x16);
        }
        const u16x8 low = {acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]};
        const u16x8 high = {acc[8], acc[9], acc[10], acc[11], acc[12], acc[13], acc[14], acc[15]};
        const u32x8 low_wide = __builtin_convertvector(low, u32x8), high_wide = __builtin_convertvector(high, u32x8);
        std::memcpy(sums + x, &low_wide, sizeof low_wide);
        std::memcpy(sums + x + 8, &high_wide, sizeof high_wide);
    }
    for (; x < width; ++x) {
        std::uint32_t acc = 0;
        for (std::size_t t = 0; t < taps; ++t) {
            const std::size_t at = (first + t) * width + x;
            acc += weights[t] * (b == nullptr ? a[at] : std::max(a[at], b[at]));
        }
        sums[x] = acc;
    }
}

/** As row_sums_narrow, in 32-bit sums (any weights). */
void row_sums_wide(const std::uint8_t* a, const std::uint8_t* b, std::size_t width, std::size_t first,
                   const std::uint32_t* weights, std::size_t taps, std::uint32_t* sums) {
    std::fill(sums, sums + width, 0u);
    for (std::size_t t = 0; t < taps; ++t) {
        const std::uint8_t* pa = a + (first + t) * width;
        const std::uint8_t* pb = b == nullptr ? pa : b + (first + t) * width;
        for (std::size_t x = 0; x < width; ++x) sums[x] += weights[t] * std::max(pa[x], pb[x]);
    }
}

/** Output j's sum over its column taps (T of them when T > 0, else `taps`). */
template <int T>
ESFAST_INLINE void column_totals(const std::uint32_t* sums, std::size_t outputs, const std::uint32_t* first,
                                 const std::uint32_t* weights, std::size_t taps, std::uint32_t* totals) {
    const std::size_t n = T > 0 ? T : taps;
    for (std::size_t j = 0; j < outputs; ++j) {
        const std::uint32_t* s = sums + first[j];
        const std::uint32_t* w = weights + j * n;
        std::uint32_t total = 0;
        for (std::size_t t = 0; t < n; ++t) total += w[t] * s[t];
        totals[j] = total;
    }
}

/** One output row from its row sums: the column taps, then the exactly rounded division (a
 *  vector at a time). */
ESFAST_INLINE void column_pass_body(const std::uint32_t* sums, std::size_t outputs, const std::uint32_t* first,
                                    const std::uint32_t* weights, std::size_t taps, float denominator,
                                    std::uint32_t* totals, std::uint8_t* out) {
    switch (taps) {  // the usual tap counts unrolled (shrinking by less than 4x needs at most 3 or 4)
        case 2: column_totals<2>(sums, outputs, first, weights, taps, totals); break;
        case 3: column_totals<3>(sums, outputs, first, weights, taps, totals); break;
        case 4: column_totals<4>(sums, outputs, first, weights, taps, totals); break;
        default: column_totals<0>(sums, outputs, first, weights, taps, totals); break;
    }
    for (std::size_t j = 0; j < outputs; ++j) {
        out[j] = static_cast<std::uint8_t>(std::nearbyint(static_cast<float>(totals[j]) / denominator));
    }
}

/** The resize's kernels of one code path: the same bodies, compiled for its target. */
struct ResizeKernels {
    void (*row_sums_narrow)(const std::uint8_t*, const std::uint8_t*, std::size_t, std::size_t, const std::uint32_t*,
                            std::size_t, std::uint32_t*);
    void (*column_pass)(const std::uint32_t*, std::size_t, const std::uint32_t*, const std::uint32_t*, std::size_t,
                        float, std::uint32_t*, std::uint8_t*);
};

#define ESFAST_RESIZE_KERNELS(NAME, ATTRIBUTE)                                                                    \
    ATTRIBUTE void row_sums_narrow_##NAME(const std::uint8_t* a, const std::uint8_t* b, std::size_t width,        \
                                          std::size_t first, const std::uint32_t* weights, std::size_t taps,      \
                                          std::uint32_t* sums) {                                                  \
        row_sums_narrow_body(a, b, width, first, weights, taps, sums);                                            \
    }                                                                                                             \
    ATTRIBUTE void column_pass_##NAME(const std::uint32_t* sums, std::size_t outputs, const std::uint32_t* first, \
                                      const std::uint32_t* weights, std::size_t taps, float denominator,          \
                                      std::uint32_t* totals, std::uint8_t* out) {                                 \
        column_pass_body(sums, outputs, first, weights, taps, denominator, totals, out);                          \
    }                                                                                                             \
    constexpr ResizeKernels kResize_##NAME = {row_sums_narrow_##NAME, column_pass_##NAME};

ESFAST_RESIZE_KERNELS(baseline, )
#if ESFAST_X86_PATHS
ESFAST_RESIZE_KERNELS(avx2, ESFAST_TARGET_AVX2)
ESFAST_RESIZE_KERNELS(avx512, ESFAST_TARGET_AVX512)
#endif

constexpr ResizeKernels kResizePaths[] = {kResize_baseline,
#if ESFAST_X86_PATHS
                                          kResize_avx2, kResize_avx512
#endif
};

std::uint64_t axis_denominator(std::size_t source, std::size_t target) {
    // Overlap lengths in units of 1/target pixel; their gcd divides every weight and the total.
    std::uint64_t divisor = 0;
    for (std::size_t a = 0; a < target; ++a) {
        const std::uint64_t low = a * source, high = (a + 1) * source;
        for (std::uint64_t b = low / target; b * target < high; ++b) {
            const std::uint64_t w = std::min<std::uint64_t>(high, (b + 1) * target) - std::max<std::uint64_t>(low, b * target);
            divisor = std::gcd(divisor, w);
        }
    }
    return source / divisor;
}

}  // namespace

bool palette_to_gray_vectorized(CodePath path) {
#if ESFAST_X86_PATHS
    // VBMI is not part of x86-64-v4 (Skylake-SP has AVX-512 without it): checked on its own, once.
    static const bool vbmi = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw");
    }();
    return vbmi && resolve_code_path(path) == CodePath::avx512;
#else
    (void)path;
    return false;
#endif
}

bool palette_to_gray(CodePath path, const std::uint8_t* indices, std::size_t n, const std::uint8_t* table,
                     const std::uint8_t* known, std::uint8_t* gray) {
#if ESFAST_X86_PATHS
    if (palette_to_gray_vectorized(path)) return palette_to_gray_vbmi(indices, n, table, known, gray);
#else
    (void)path;
#endif
    return palette_to_gray_scalar(indices, n, table, known, gray);
}

AreaResize::Axis::Axis(std::size_t source, std::size_t target) : inputs(source), outputs(target) {
    const std::uint64_t total = source;  // sum of one output's overlaps, before division
    const std::uint64_t divisor = total / axis_denominator(source, target);
    denominator = static_cast<std::uint32_t>(total / divisor);
    // Each output's taps: the input pixels its interval touches, at most ceil(S / T) + 1.
    std::vector<std::vector<std::uint32_t>> per_output(target);
    first.assign(target, 0);
    for (std::size_t a = 0; a < target; ++a) {
        const std::uint64_t low = a * source, high = (a + 1) * source;
        first[a] = static_cast<std::uint32_t>(low / target);
        for (std::uint64_t b = low / target; b * target < high; ++b) {
            const std::uint64_t w = std::min<std::uint64_t>(high, (b + 1) * target) - std::max<std::uint64_t>(low, b * target);
            per_output[a].push_back(static_cast<std::uint32_t>(w / divisor));
        }
        taps = std::max(taps, per_output[a].size());
    }
    // Pad every output to `taps` weights, keeping first + taps within the input (leading zeros
    // where an output near the end would run past it).
    weights.assign(target * taps, 0u);
    for (std::size_t a = 0; a < target; ++a) {
        const std::size_t shift = std::min<std::size_t>(first[a], first[a] + taps > source ? first[a] + taps - source : 0);
        first[a] -= static_cast<std::uint32_t>(shift);
        std::copy(per_output[a].begin(), per_output[a].end(), weights.begin() + a * taps + shift);
    }
}

AreaResize::AreaResize(std::size_t in_h, std::size_t in_w, std::size_t out_h, std::size_t out_w, CodePath path)
    : rows_(in_h, out_h),
      cols_(in_w, out_w),
      path_(resolve_code_path(path)),
      denominator_(static_cast<float>(rows_.denominator) * static_cast<float>(cols_.denominator)),
      narrow_(255u * rows_.denominator < (1u << 16)),
      row_sums_(in_w),
      totals_(out_w) {}

std::uint64_t AreaResize::denominator(std::size_t in_h, std::size_t in_w, std::size_t out_h, std::size_t out_w) {
    return axis_denominator(in_h, out_h) * axis_denominator(in_w, out_w);
}

bool AreaResize::fits(std::size_t in_h, std::size_t in_w, std::size_t out_h, std::size_t out_w) {
    return 255 * denominator(in_h, in_w, out_h, out_w) < (std::uint64_t{1} << 24);
}

void AreaResize::operator()(const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out) {
    const ResizeKernels& k = kResizePaths[code_path_index(path_)];
    std::uint32_t* sums = row_sums_.data();
    for (std::size_t r = 0; r < rows_.outputs; ++r) {
        const std::uint32_t* weights = rows_.weights.data() + r * rows_.taps;
        if (narrow_) {
            k.row_sums_narrow(a, b, cols_.inputs, rows_.first[r], weights, rows_.taps, sums);
        } else {
            row_sums_wide(a, b, cols_.inputs, rows_.first[r], weights, rows_.taps, sums);
        }
        k.column_pass(sums, cols_.outputs, cols_.first.data(), cols_.weights.data(), cols_.taps, denominator_,
                    totals_.data(), out + r * cols_.outputs);
    }
}

}  // namespace esfast
