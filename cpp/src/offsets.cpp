#include "esfast/offsets.hpp"

#include "esfast/philox.hpp"

namespace esfast {
namespace {

inline std::uint64_t draw64(std::uint64_t seed, std::uint64_t index, std::uint32_t attempt) {
    const Philox4x32Block r = philox4x32(
        seed, Philox4x32Block{{static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                               static_cast<std::uint32_t>(PhiloxStream::kOffsets), attempt}});
    return static_cast<std::uint64_t>(r.w[0]) | (static_cast<std::uint64_t>(r.w[1]) << 32);
}

/** The full 128-bit product a * b as (high, low) 64-bit halves, in portable C++. */
inline void multiply_wide(std::uint64_t a, std::uint64_t b, std::uint64_t* high, std::uint64_t* low) {
    const std::uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32;
    const std::uint64_t b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
    const std::uint64_t lo_lo = a_lo * b_lo;
    const std::uint64_t hi_lo = a_hi * b_lo;
    const std::uint64_t lo_hi = a_lo * b_hi;
    const std::uint64_t hi_hi = a_hi * b_hi;
    const std::uint64_t middle = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + lo_hi;
    *high = hi_hi + (hi_lo >> 32) + (middle >> 32);
    *low = (middle << 32) | (lo_lo & 0xFFFFFFFFu);
}

}  // namespace

void sample_offsets(std::uint64_t seed, std::size_t count, std::uint64_t range, std::int64_t* out) {
    const std::uint64_t threshold = (0 - range) % range;  // 2^64 mod range
    constexpr std::size_t kBatch = 64;
    std::uint32_t c0[kBatch], c1[kBatch], c2[kBatch], c3[kBatch];
    for (std::size_t done = 0; done < count; done += kBatch) {
        const std::size_t n = count - done < kBatch ? count - done : kBatch;
        // First attempts for a whole batch at once (vectorizable); rejections, with probability
        // below range / 2^64, are redrawn one at a time.
        for (std::size_t j = 0; j < n; ++j) {
            const std::uint64_t k = done + j;
            c0[j] = static_cast<std::uint32_t>(k);
            c1[j] = static_cast<std::uint32_t>(k >> 32);
            c2[j] = static_cast<std::uint32_t>(PhiloxStream::kOffsets);
            c3[j] = 0;
        }
        philox4x32_soa(seed, n, c0, c1, c2, c3);
        for (std::size_t j = 0; j < n; ++j) {
            std::uint64_t high, low;
            multiply_wide(static_cast<std::uint64_t>(c0[j]) | (static_cast<std::uint64_t>(c1[j]) << 32), range,
                          &high, &low);
            for (std::uint32_t attempt = 1; low < threshold; ++attempt) {
                multiply_wide(draw64(seed, done + j, attempt), range, &high, &low);
            }
            out[done + j] = static_cast<std::int64_t>(high);
        }
    }
}

}  // namespace esfast
