#pragma once
/**
 * @file dispatch.hpp
 * The switch between a kernel's AVX-512 path and its AVX2 / baseline paths, which give
 * bit-identical results: the AVX-512 path is taken where the CPU has the instructions, unless the
 * environment variable ESFAST_NO_AVX512 is set (read once per process), which lets the tests run
 * both paths on one machine and compare them.
 */

#include <cstdlib>

namespace esfast {

/** Whether AVX-512 paths may be used at all in this process (ESFAST_NO_AVX512 unset). Thread-safe. */
inline bool avx512_allowed() {
    static const bool allowed = std::getenv("ESFAST_NO_AVX512") == nullptr;
    return allowed;
}

}  // namespace esfast
