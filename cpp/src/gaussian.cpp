// Compiled with -ffp-contract=off (see CMakeLists.txt): every expression below must round each
// operation separately, or the samples would differ between machines that have FMA and those that
// do not.
#include "esfast/gaussian.hpp"

#include <cmath>
#include <cstring>

#include "esfast/philox.hpp"

namespace esfast {
namespace {

constexpr std::size_t kBatchBlocks = 64;  // Philox blocks per batch: 256 samples, 1 KiB

inline float bits_to_float(std::uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline std::uint32_t float_to_bits(float f) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return bits;
}

/** -2 ln(u) for u in (0, 1], from u = m * 2^e with m in [sqrt(1/2), sqrt(2)) and
 *  ln m = 2 atanh(s), s = (m - 1) / (m + 1), as an odd series truncated after s^9
 *  (|s| <= 0.172, truncation error below 2e-9 relative). */
inline float minus_two_log(float u) {
    const std::uint32_t bits = float_to_bits(u);
    // Mantissa above that of sqrt(2) (0x3504F3): halve m (exactly, by lowering its exponent).
    const std::uint32_t big = (bits & 0x007FFFFFu) > 0x003504F3u ? 1u : 0u;
    const std::int32_t e = static_cast<std::int32_t>(bits >> 23) - 127 + static_cast<std::int32_t>(big);
    const float m = bits_to_float(((bits & 0x007FFFFFu) | 0x3F800000u) - (big << 23));
    const float s = (m - 1.0f) / (m + 1.0f);
    const float z = s * s;
    const float series =
        s * (2.0f + z * (0.666666667f + z * (0.4f + z * (0.285714286f + z * 0.222222222f))));
    const float ef = static_cast<float>(e);
    // ln 2 split so that ef * kLn2Hi is exact for |e| < 2^11.
    constexpr float kLn2Hi = 0.693145751953125f;
    constexpr float kLn2Lo = 1.42860682e-06f;
    const float log_u = ef * kLn2Hi + (ef * kLn2Lo + series);
    return -2.0f * log_u;
}

/** Box-Muller for one pair of words: `radius_word` gives u in (0, 1) with 23 bits, `angle_word`
 *  an angle uniform in [0, 2 pi) with 24 bits (2 for the quadrant, 22 within it). */
inline void box_muller(std::uint32_t radius_word, std::uint32_t angle_word, float* z0, float* z1) {
    const float u = static_cast<float>(((radius_word >> 9) << 1) | 1u) * 5.9604644775390625e-08f;  // 2^-24
    const float r = std::sqrt(minus_two_log(u));

    // a in (-pi/4, pi/4); the angle is q * pi/2 + pi/4 + a.
    const float t = static_cast<float>((((angle_word >> 8) & 0x3FFFFFu) << 1) | 1u) *
                    1.1920928955078125e-07f;  // 2^-23
    const float a = (t - 0.5f) * 1.57079633f;
    const float a2 = a * a;
    const float sin_a =
        a * (1.0f + a2 * (-1.66666667e-01f +
                          a2 * (8.33333333e-03f + a2 * (-1.98412698e-04f + a2 * 2.75573192e-06f))));
    const float cos_a =
        1.0f + a2 * (-0.5f + a2 * (4.16666667e-02f +
                                   a2 * (-1.38888889e-03f +
                                         a2 * (2.48015873e-05f + a2 * -2.75573192e-07f))));
    constexpr float kHalfSqrt2 = 0.707106781f;
    const float c = kHalfSqrt2 * (cos_a - sin_a);  // cos(pi/4 + a)
    const float s = kHalfSqrt2 * (cos_a + sin_a);  // sin(pi/4 + a)

    // Rotate by q quarter turns: q=0 (c, s), 1 (-s, c), 2 (-c, -s), 3 (s, -c). Selects and sign
    // flips are done on the bits, which keeps the loop free of branches.
    const std::uint32_t q = angle_word >> 30;
    const std::uint32_t swap_mask = 0u - (q & 1u);
    const std::uint32_t c_bits = float_to_bits(c), s_bits = float_to_bits(s);
    const std::uint32_t x_bits = c_bits ^ ((c_bits ^ s_bits) & swap_mask);
    const std::uint32_t y_bits = s_bits ^ ((c_bits ^ s_bits) & swap_mask);
    const std::uint32_t x_sign = ((q ^ (q >> 1)) & 1u) << 31;
    const std::uint32_t y_sign = (q >> 1) << 31;
    *z0 = r * bits_to_float(x_bits ^ x_sign);
    *z1 = r * bits_to_float(y_bits ^ y_sign);
}

/** Samples of blocks [first_block, first_block + blocks) into out (4 per block). */
void fill_blocks(std::uint64_t seed, std::uint64_t first_block, std::size_t blocks, float* out) {
    std::uint32_t c0[kBatchBlocks], c1[kBatchBlocks], c2[kBatchBlocks], c3[kBatchBlocks];
    float z0[kBatchBlocks], z1[kBatchBlocks], z2[kBatchBlocks], z3[kBatchBlocks];
    for (std::size_t done = 0; done < blocks; done += kBatchBlocks) {
        const std::size_t n = blocks - done < kBatchBlocks ? blocks - done : kBatchBlocks;
        for (std::size_t j = 0; j < n; ++j) {
            const std::uint64_t block = first_block + done + j;
            c0[j] = static_cast<std::uint32_t>(block);
            c1[j] = static_cast<std::uint32_t>(block >> 32);
            c2[j] = static_cast<std::uint32_t>(PhiloxStream::kNoiseTable);
            c3[j] = 0;
        }
        philox4x32_soa(seed, n, c0, c1, c2, c3);
        for (std::size_t j = 0; j < n; ++j) box_muller(c0[j], c1[j], &z0[j], &z1[j]);
        for (std::size_t j = 0; j < n; ++j) box_muller(c2[j], c3[j], &z2[j], &z3[j]);
        float* dst = out + 4 * done;
        for (std::size_t j = 0; j < n; ++j) {
            dst[4 * j + 0] = z0[j];
            dst[4 * j + 1] = z1[j];
            dst[4 * j + 2] = z2[j];
            dst[4 * j + 3] = z3[j];
        }
    }
}

}  // namespace

void fill_gaussian(std::uint64_t seed, std::uint64_t start, std::size_t count, float* out) {
    if (count == 0) return;
    // Unaligned head: the tail lanes of the block that holds `start`.
    const std::uint64_t head_lane = start % 4;
    std::uint64_t block = start / 4;
    if (head_lane != 0) {
        float tmp[4];
        fill_blocks(seed, block, 1, tmp);
        const std::size_t n = count < 4 - head_lane ? count : static_cast<std::size_t>(4 - head_lane);
        std::memcpy(out, tmp + head_lane, n * sizeof(float));
        out += n;
        count -= n;
        ++block;
    }
    const std::size_t whole = count / 4;
    fill_blocks(seed, block, whole, out);
    const std::size_t rest = count % 4;
    if (rest != 0) {
        float tmp[4];
        fill_blocks(seed, block + whole, 1, tmp);
        std::memcpy(out + 4 * whole, tmp, rest * sizeof(float));
    }
}

}  // namespace esfast
