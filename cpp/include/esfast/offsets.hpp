#pragma once
/**
 * @file offsets.hpp
 * Seeded perturbation offsets: where each perturbation's slice starts in the noise table.
 */

#include <cstddef>
#include <cstdint>

namespace esfast {

/**
 * Writes `count` offsets uniform on [0, range) to out, where range = table_size - dim + 1.
 * Offset k uses Philox4x32-10 with key `seed` and counter (k, stream 1, attempt) and Lemire's
 * multiply-and-reject method, so it is unbiased and depends only on (seed, k, range).
 *
 * Preconditions: range >= 1; out holds `count` values. Thread-safe; O(count).
 */
void sample_offsets(std::uint64_t seed, std::size_t count, std::uint64_t range, std::int64_t* out);

}  // namespace esfast
