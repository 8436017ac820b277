#pragma once
/**
 * @file gaussian.hpp
 * Portable standard-normal samples addressed by index.
 *
 * Sample i of seed s is computed from Philox4x32-10 with key s and counter (i / 4, stream 0):
 * the block's four words give two Box-Muller pairs, lanes i % 4. The logarithm, sine and cosine
 * of Box-Muller are evaluated with fixed polynomials that use only IEEE-754 add, subtract,
 * multiply, divide and square root, each correctly rounded, and this code is compiled with
 * floating-point contraction off. The samples are therefore bit-identical on every IEEE-754
 * platform, whatever the compiler, C library or thread count.
 *
 * Resolution: the radius uses 23 random bits (|z| <= 5.77), the angle 24 bits.
 */

#include <cstddef>
#include <cstdint>

namespace esfast {

/**
 * Writes samples [start, start + count) of seed `seed` to out[0 .. count).
 *
 * Preconditions: `out` holds `count` floats; start + count does not overflow.
 * Thread-safe (writes only `out`); O(count).
 */
void fill_gaussian(std::uint64_t seed, std::uint64_t start, std::size_t count, float* out);

}  // namespace esfast
