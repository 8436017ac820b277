#pragma once
/**
 * @file atari_screen.hpp
 * The per-step image work of the Atari preprocessing, on the emulator's palette-indexed screens:
 * palette indices to grayscale through a table, the pixelwise max of two frames, and an exact
 * area-averaging resize.
 *
 * Arithmetic: integer sums, then one float32 division per output pixel, exactly rounded (see
 * AreaResize), so the results do not depend on the machine or the code path (dispatch.hpp): the
 * AVX-512 VBMI table lookup and the scalar one give the same bytes, and so do the resize's
 * baseline, AVX2 and AVX-512 builds.
 */

#include <cstddef>
#include <cstdint>
#include <vector>

#include "esfast/dispatch.hpp"

namespace esfast {

/**
 * gray[i] = table[indices[i]] for i < n, by the vector lookup where palette_to_gray_vectorized(path),
 * else by the scalar one. Returns true if known[indices[i]] != 0 for every i; if
 * not, gray's contents are unspecified (a table learned from the emulator's own grayscale screens
 * may not cover every palette entry yet).
 * Preconditions: code_path_supported(path); table and known hold 256 bytes; indices and gray
 * hold n bytes (they may be the same buffer, but must not overlap otherwise). Thread-safe. O(n).
 */
bool palette_to_gray(CodePath path, const std::uint8_t* indices, std::size_t n, const std::uint8_t* table,
                     const std::uint8_t* known, std::uint8_t* gray);

/**
 * Whether palette_to_gray on `path` runs the vector lookup (64 bytes a step with AVX-512 VBMI: the
 * avx512 path on a CPU that also has VBMI) or the scalar one (a byte at a time, slower than ALE's
 * own grayscale conversion, which callers then prefer). Thread-safe.
 */
bool palette_to_gray_vectorized(CodePath path);

/**
 * Resize of uint8 images by area averaging (OpenCV's INTER_AREA when shrinking), exactly.
 *
 * Along each axis, output pixel a of T covers the interval [a S / T, (a + 1) S / T) of the S input
 * pixels; its weight on input pixel b is the length of the overlap. Scaled by T these lengths are
 * integers, divided here by their greatest common divisor: every output is an integer sum s of
 * integer weights times pixels over an integer denominator D (D = 5 * 40 = 200 for 210x160 ->
 * 84x84), and the result is s / D rounded to the nearest integer, ties to even. s < 255 D < 2^24,
 * so float32(s) / float32(D) is exactly rounded and its distance to a half-integer, when not
 * zero, is at least 1 / (2D), far more than its rounding error: rint of it is the exact result.
 */
class AreaResize {
public:
    /**
     * Precomputes the weights; `path` is resolved here (automatic: the process's selected path
     * now) and kept. Preconditions: all sizes >= 1, fits(in_h, in_w, out_h, out_w) and
     * code_path_supported(path). O(in_h + in_w + out_h + out_w).
     */
    AreaResize(std::size_t in_h, std::size_t in_w, std::size_t out_h, std::size_t out_w,
               CodePath path = CodePath::automatic);

    /** The denominator D of a resize between these sizes (product of the two axes' denominators). */
    static std::uint64_t denominator(std::size_t in_h, std::size_t in_w, std::size_t out_h, std::size_t out_w);

    /** Whether sums stay exact in float32: 255 * denominator(...) < 2^24. */
    static bool fits(std::size_t in_h, std::size_t in_w, std::size_t out_h, std::size_t out_w);

    /**
     * out = resize(a), or resize(max(a, b)) pixelwise if b is not null. Images are row-major,
     * in_h x in_w (a, b) and out_h x out_w (out); out overlaps neither input.
     * Not thread-safe (one scratch row per object). O(in_h * in_w + out_h * out_w).
     */
    void operator()(const std::uint8_t* a, const std::uint8_t* b, std::uint8_t* out);

    /** The code path the resize runs (never automatic). */
    CodePath code_path() const { return path_; }

private:
    /** One axis: output j sums weights[j * taps + t] * input[first[j] + t] for t < taps. */
    struct Axis {
        std::size_t inputs = 0, outputs = 0, taps = 0;
        std::uint32_t denominator = 1;
        std::vector<std::uint32_t> first, weights;
        Axis(std::size_t source, std::size_t target);
    };
    Axis rows_, cols_;
    CodePath path_;
    float denominator_;
    bool narrow_;  // row sums fit 16 bits
    std::vector<std::uint32_t> row_sums_, totals_;  // scratch: one output row
};

}  // namespace esfast
