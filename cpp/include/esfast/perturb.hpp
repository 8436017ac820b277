#pragma once
/**
 * @file perturb.hpp
 * Perturbed parameter vectors: theta + sigma * eps and theta - sigma * eps, eps a table slice.
 */

#include <cstddef>

#include "esfast/thread_pool.hpp"

namespace esfast {

/**
 * out[j] = theta[j] + sigma * eps[j] for j < dim.
 * Preconditions: all arrays hold dim floats; `out` may equal `theta` (in place) but must not
 * otherwise overlap an input. Element-wise, so results do not depend on the pool's size. O(dim).
 */
void perturb(ThreadPool& pool, const float* theta, const float* eps, float sigma, std::size_t dim,
             float* out);

/**
 * plus[j] = theta[j] + sigma * eps[j] and minus[j] = theta[j] - sigma * eps[j], in one pass.
 * Preconditions: as perturb(); `plus` and `minus` do not overlap each other. O(dim).
 */
void perturb_pair(ThreadPool& pool, const float* theta, const float* eps, float sigma,
                  std::size_t dim, float* plus, float* minus);

}  // namespace esfast
