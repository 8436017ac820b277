#pragma once
/**
 * @file gradient.hpp
 * The ES gradient's heavy part: a weighted sum of noise-table slices.
 */

#include <cstddef>
#include <cstdint>

#include "esfast/thread_pool.hpp"

namespace esfast {

/**
 * out[j] = sum over i of weights[i] * table[offsets[i] + j], for j < dim.
 *
 * Each element is accumulated in double precision in the order i = 0, 1, ..., n - 1 and rounded
 * to float once; threads own disjoint ranges of `out`, so the result is bit-identical for any
 * pool size.
 *
 * Preconditions: offsets[i] + dim <= the table's size for every i; out holds dim floats.
 * Reads n * dim floats once; O(n * dim).
 */
void weighted_noise_sum(ThreadPool& pool, const float* table, const std::int64_t* offsets,
                        const float* weights, std::size_t n, std::size_t dim, float* out);

}  // namespace esfast
