#pragma once
/**
 * @file dispatch.hpp
 * The switch between a kernel's AVX-512 path and its AVX2 / baseline paths, which give
 * bit-identical results: the AVX-512 path is taken where the CPU has the instructions, unless the
 * environment variable ESFAST_NO_AVX512 is set (read once per process), which lets the tests run
 * both paths on one machine and compare them.
 */

#include <cstdlib>

// Which code paths the build has. With GCC on x86-64 Linux: ESFAST_X86_PATHS is 1, and
// ESFAST_CLONES builds a function for AVX2 and for the baseline (target_clones, picked by the
// dynamic loader), ESFAST_TARGET_AVX2 / ESFAST_TARGET_AVX512 compile one function for that
// instruction set (called only after a CPU check). Elsewhere there is only the baseline path.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define ESFAST_X86_PATHS 1
#define ESFAST_CLONES __attribute__((target_clones("avx2", "default")))
#define ESFAST_TARGET_AVX2 __attribute__((target("avx2")))
#define ESFAST_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define ESFAST_X86_PATHS 0
#define ESFAST_CLONES
#endif
#define ESFAST_INLINE inline __attribute__((always_inline))

namespace esfast {

/** Whether AVX-512 paths may be used at all in this process (ESFAST_NO_AVX512 unset). Thread-safe. */
inline bool avx512_allowed() {
    static const bool allowed = std::getenv("ESFAST_NO_AVX512") == nullptr;
    return allowed;
}

}  // namespace esfast
