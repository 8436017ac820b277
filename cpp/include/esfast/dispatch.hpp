#pragma once
/**
 * @file dispatch.hpp
 * The one switch between the kernels' code paths. A kernel with more than one path compiles one
 * function per path (target attributes below) and picks among them through a CodePath: the
 * paths do the same float operations in the same order for every output (no fused multiply-adds:
 * the kernels build with -ffp-contract=off), so they give bit-identical results, and the choice
 * changes only speed.
 *
 * The process has one selected path, which `CodePath::automatic` stands for wherever a kernel or
 * an object takes a path. It starts as the best path this CPU and build support, found once
 * (__builtin_cpu_supports), lowered by the environment if asked:
 * - ESFAST_CODE_PATH=baseline|avx2|avx512 (or auto): the process uses at most this path, as if
 *   the CPU had no more (a path the CPU lacks gives the best it has);
 * - ESFAST_NO_AVX512 (any value): as ESFAST_CODE_PATH=avx2.
 * Both are read once, at the first use. select_code_path changes the selection at run time, so
 * that one process can run every supported path and compare them.
 *
 * Objects (ConvForward, AreaResize, the MLP binding) resolve `automatic` when they are made and
 * keep that path; free functions given `automatic` read the selection at each call (one relaxed
 * atomic load). Nothing is resolved per element.
 */

// Which code paths the build has. With GCC on x86-64 Linux, ESFAST_X86_PATHS is 1 and
// ESFAST_TARGET_AVX2 / ESFAST_TARGET_AVX512 compile one function for that instruction set (called
// only on a path the CPU supports); a function without either is the baseline x86-64 (SSE2).
// Elsewhere there is only the baseline path.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define ESFAST_X86_PATHS 1
#define ESFAST_TARGET_AVX2 __attribute__((target("avx2")))
#define ESFAST_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define ESFAST_X86_PATHS 0
#endif
#define ESFAST_INLINE inline __attribute__((always_inline))

namespace esfast {

/** Which compiled code a kernel runs, in increasing order of the instructions it needs. */
enum class CodePath : int {
    automatic = 0,  ///< the process's selected path (selected_code_path), resolved where it is given
    baseline = 1,   ///< the build's baseline (x86-64: SSE2), any CPU; the only path off x86-64 Linux GCC
    avx2 = 2,       ///< AVX2: 256-bit vectors, 16 registers
    avx512 = 3,     ///< x86-64-v4 (AVX-512 F, VL, BW, DQ, CD): 512-bit vectors, 32 registers
};

/** The best path this build and CPU run, ignoring the environment. Detected once; thread-safe. */
CodePath cpu_code_path();

/**
 * The best path this process may use: cpu_code_path(), lowered to ESFAST_CODE_PATH (or to avx2
 * by ESFAST_NO_AVX512) if set. Never automatic. Thread-safe.
 */
CodePath best_code_path();

/** Whether this process can run `path`: baseline up to best_code_path(); automatic always. Thread-safe. */
bool code_path_supported(CodePath path);

/** The path `automatic` stands for: best_code_path() unless select_code_path changed it. Never
 *  automatic. Thread-safe; one relaxed atomic load once the environment has been read. */
CodePath selected_code_path();

/**
 * Makes `path` the selected one for the whole process (automatic: back to best_code_path()).
 * Objects made before keep the path they resolved; a kernel running in another thread finishes
 * on the path it started with. Precondition: code_path_supported(path). Thread-safe.
 */
void select_code_path(CodePath path);

/** `path`, or for automatic selected_code_path(). Thread-safe. */
inline CodePath resolve_code_path(CodePath path) {
    return path == CodePath::automatic ? selected_code_path() : path;
}

/** "auto", "baseline", "avx2" or "avx512". */
const char* code_path_name(CodePath path);

/** The path of one of code_path_name's names into `path`; false (path unchanged) for any other name. */
bool parse_code_path(const char* name, CodePath& path);

/** ESFAST_CODE_PATH's value if it is set, not empty, and names no path (it is then ignored), else nullptr. */
const char* invalid_code_path_setting();

/**
 * Index of a supported path's entry in a per-path table {baseline, avx2, avx512} (only
 * {baseline} without ESFAST_X86_PATHS): 0, 1 or 2, automatic resolved first.
 */
inline int code_path_index(CodePath path) { return static_cast<int>(resolve_code_path(path)) - 1; }

}  // namespace esfast
