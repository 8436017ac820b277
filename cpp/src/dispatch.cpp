#include "esfast/dispatch.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace esfast {
namespace {

constexpr const char* kNames[] = {"auto", "baseline", "avx2", "avx512"};

CodePath lower(CodePath a, CodePath b) { return static_cast<int>(a) < static_cast<int>(b) ? a : b; }

/** What the environment asks for, read once. */
struct Setting {
    CodePath limit = CodePath::avx512;
    const char* invalid = nullptr;  // ESFAST_CODE_PATH's value if it names no path
};

const Setting& setting() {
    static const Setting read = [] {
        Setting s;
        if (std::getenv("ESFAST_NO_AVX512") != nullptr) s.limit = CodePath::avx2;
        const char* value = std::getenv("ESFAST_CODE_PATH");
        if (value != nullptr && *value != '\0') {
            CodePath path = CodePath::automatic;
            if (!parse_code_path(value, path)) {
                s.invalid = value;
            } else if (path != CodePath::automatic) {
                s.limit = lower(s.limit, path);
            }
        }
        return s;
    }();
    return read;
}

// 0 (automatic) until select_code_path: then best_code_path() is the selection.
std::atomic<int> selected{0};

}  // namespace

CodePath cpu_code_path() {
#if ESFAST_X86_PATHS
    static const CodePath best = [] {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("x86-64-v4")) return CodePath::avx512;
        if (__builtin_cpu_supports("avx2")) return CodePath::avx2;
        return CodePath::baseline;
    }();
    return best;
#else
    return CodePath::baseline;
#endif
}

CodePath best_code_path() {
    static const CodePath best = lower(cpu_code_path(), setting().limit);
    return best;
}

bool code_path_supported(CodePath path) {
    return path == CodePath::automatic || static_cast<int>(path) <= static_cast<int>(best_code_path());
}

CodePath selected_code_path() {
    const int path = selected.load(std::memory_order_relaxed);
    return path == 0 ? best_code_path() : static_cast<CodePath>(path);
}

void select_code_path(CodePath path) { selected.store(static_cast<int>(path), std::memory_order_relaxed); }

const char* code_path_name(CodePath path) { return kNames[static_cast<int>(path)]; }

bool parse_code_path(const char* name, CodePath& path) {
    for (int i = 0; i < 4; ++i) {
        if (std::strcmp(name, kNames[i]) == 0) {
            path = static_cast<CodePath>(i);
            return true;
        }
    }
    return false;
}

const char* invalid_code_path_setting() { return setting().invalid; }

}  // namespace esfast
