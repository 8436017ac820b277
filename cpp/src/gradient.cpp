#include "esfast/gradient.hpp"

namespace esfast {
namespace {

// Output elements per task: the double accumulators (32 KiB) stay in L1 while every row streams
// past them.
constexpr std::size_t kTile = 4096;

void accumulate_tile(const float* table, const std::int64_t* offsets, const float* weights,
                     std::size_t n, std::size_t begin, std::size_t len, float* out) {
    double acc[kTile] = {};
    std::size_t i = 0;
    // Four rows per sweep over the tile; the additions stay in row order, so the sum is the same as
    // one row at a time.
    for (; i + 4 <= n; i += 4) {
        const float* r0 = table + offsets[i] + begin;
        const float* r1 = table + offsets[i + 1] + begin;
        const float* r2 = table + offsets[i + 2] + begin;
        const float* r3 = table + offsets[i + 3] + begin;
        const double w0 = weights[i], w1 = weights[i + 1], w2 = weights[i + 2], w3 = weights[i + 3];
        for (std::size_t j = 0; j < len; ++j) {
            double a = acc[j] + w0 * static_cast<double>(r0[j]);
            a = a + w1 * static_cast<double>(r1[j]);
            a = a + w2 * static_cast<double>(r2[j]);
            acc[j] = a + w3 * static_cast<double>(r3[j]);
        }
    }
    for (; i < n; ++i) {
        const float* r = table + offsets[i] + begin;
        const double w = weights[i];
        for (std::size_t j = 0; j < len; ++j) acc[j] = acc[j] + w * static_cast<double>(r[j]);
    }
    for (std::size_t j = 0; j < len; ++j) out[begin + j] = static_cast<float>(acc[j]);
}

}  // namespace

void weighted_noise_sum(ThreadPool& pool, const float* table, const std::int64_t* offsets,
                        const float* weights, std::size_t n, std::size_t dim, float* out) {
    const std::size_t tiles = (dim + kTile - 1) / kTile;
    pool.run(tiles, [&](std::size_t tile) {
        const std::size_t begin = tile * kTile;
        const std::size_t len = begin + kTile <= dim ? kTile : dim - begin;
        accumulate_tile(table, offsets, weights, n, begin, len, out);
    });
}

}  // namespace esfast
