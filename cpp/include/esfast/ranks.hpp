#pragma once
/**
 * @file ranks.hpp
 * Return shaping: centered ranks and normalization of a batch of returns.
 */

#include <cstddef>

namespace esfast {

/**
 * out[i] = rank(x[i]) / (n - 1) - 0.5, rank from 0 (smallest) to n - 1; equal values share the
 * mean of their ranks, so the result does not depend on the order of ties. n == 1 gives 0.
 * Preconditions: no NaN in x. Thread-safe; O(n log n) time, O(n) extra memory.
 */
void centered_ranks(const double* x, std::size_t n, float* out);

/**
 * out[i] = (x[i] - mean) / std with the population standard deviation; all zeros when std is 0.
 * Preconditions: x finite. Thread-safe; O(n).
 */
void normalized(const double* x, std::size_t n, float* out);

}  // namespace esfast
