#pragma once
/**
 * @file conv.hpp
 * The layer kernels of the convolutional policy (conv_network.hpp): a matrix product over
 * gathered inputs, which is a convolution without an im2col copy or a dense layer over a batch;
 * a dense layer for one input vector that skips the inputs that are zero; per-channel
 * statistics; the normalization and relu of a batch.
 *
 * Arithmetic: every output sums its products in one fixed order, stated per function, with no
 * fused multiply-adds (the kernels build with -ffp-contract=off) and no reassociation. Each SIMD
 * lane does the scalar code's operations in the scalar code's order, so every code path gives
 * bit-identical results on every machine. The code paths differ only in vector width and in how
 * many outputs they keep in registers at once, which changes no sum. Every kernel here takes the
 * CodePath to run (dispatch.hpp; automatic: the process's selected one).
 */

#include <cstddef>
#include <cstdint>

#include "esfast/dispatch.hpp"

namespace esfast {

/**
 * out[p * out_stride + j] = act(s + bias[j]) (act(s) without a bias) for the positions p of a
 * rows x cols grid, p = y * cols + x, and j < outputs, where
 * s = sum over t < taps of in[y * row_step + x * col_step + offset[t]] * w[t * outputs + j],
 * summed in increasing t starting from 0; act(x) = (x < 0 ? 0 : x) if relu, else x (a NaN stays
 * NaN). bias may be null.
 *
 * A convolution without padding is this product with (y, x) the output position, t running over
 * the kernel's taps (offset[t]: the tap's index relative to the window's corner) and j over
 * filters: im2col without the copy. A dense layer over a batch stored (inputs, examples) is a
 * grid of 1 x examples with col_step 1 and offset[t] = t * examples.
 * Fastest for col_step 1, 4 or 32 (the grids of the Atari network) and outputs a multiple of 16.
 *
 * Preconditions: path supported; taps >= 1; every input index above is readable; w holds
 * taps * outputs floats; out_stride >= outputs; out holds rows * cols * out_stride floats and
 * overlaps no input. Thread-safe for distinct out. O(rows * cols * taps * outputs).
 */
void gathered_matmul(CodePath path, const float* in, std::size_t rows, std::size_t cols, std::size_t row_step,
                     std::size_t col_step, const std::size_t* offset, std::size_t taps, const float* w,
                     std::size_t outputs, const float* bias, bool relu, float* out, std::size_t out_stride);

/** Width of the column panels of sparse_dense's weights. */
constexpr std::size_t kPanelWidth = 64;

/** Index of w[k][j] of an (inputs, outputs) matrix in the panel layout: columns cut into panels
 *  of kPanelWidth (the last one narrower), each panel stored (inputs, its width) row-major. */
inline std::size_t panel_index(std::size_t k, std::size_t j, std::size_t inputs, std::size_t outputs) {
    const std::size_t start = j - j % kPanelWidth;
    const std::size_t width = outputs - start < kPanelWidth ? outputs - start : kPanelWidth;
    return start * inputs + k * width + (j - start);
}

/**
 * The inputs that are not zero: for k < n in increasing order, x_k = x[order[k]] (x[k] if order
 * is null); each x_k != 0 (NaN included) gives index[count] = k, value[count] = x_k, count + 1.
 * Returns count. Branch-free (AVX-512: gathers and compresses 16 at a time).
 * Preconditions: path supported; index and value hold n entries; order[k] < 2^31. O(n).
 */
std::size_t nonzero_inputs(CodePath path, const float* x, const std::uint32_t* order, std::size_t n,
                           std::uint32_t* index, float* value);

/**
 * y[j] = act(s + bias[j]) for j < outputs, s = sum over i < count of value[i] * w[index[i]][j] in
 * increasing i starting from 0, w (inputs, outputs) in the panel layout (panel_index), act as for
 * gathered_matmul. With the lists of nonzero_inputs this is the dense layer x @ w + bias summed
 * in input order, minus the terms whose input is zero: for finite weights those terms are exact
 * zeros and the sum is unchanged, bit for bit, while the weights they would multiply are never
 * read. `backwards` visits the panels last to first, which changes no result: alternating it
 * between calls starts each call on the panel the previous one read last, still in cache.
 * Preconditions: path supported; index[i] < inputs; y holds outputs floats. Thread-safe for
 * distinct y. O(count * outputs).
 */
void sparse_dense(CodePath path, const std::uint32_t* index, const float* value, std::size_t count, const float* w,
                  std::size_t inputs, std::size_t outputs, const float* bias, bool relu, bool backwards, float* y);

/**
 * Per channel c < channels of x (rows, channels) row-major, in float64, rows summed in order:
 * mean[c] = sum_r x[r][c] / rows, var[c] = sum_r d * d / rows with d = float(x[r][c] - float(mean[c]))
 * (the deviation taken in float32 from the float32-rounded mean, then squared in float64).
 * Preconditions: path supported; rows >= 1. O(rows * channels).
 */
void channel_statistics(CodePath path, const float* x, std::size_t rows, std::size_t channels, double* mean,
                        double* var);

/**
 * For x of shape (groups, positions, channels) row-major: y = max(x * scale[c] + shift[c], 0) in
 * float32, rounded after each operation (a NaN stays NaN), written to
 * out[g * out_group + p * out_position + c * out_channel]. In place only with the input's own
 * layout (out_group, out_position, out_channel) = (positions * channels, channels, 1).
 * Preconditions: path supported. O(groups * positions * channels).
 */
void normalize_relu(CodePath path, const float* x, std::size_t groups, std::size_t positions, std::size_t channels,
                    const float* scale, const float* shift, float* out, std::size_t out_group,
                    std::size_t out_position, std::size_t out_channel);

/**
 * out = w * scale[column] (a copy if scale is null) for w (rows, cols) row-major, written in
 * column panels of `panel` columns (the last one narrower), each panel stored (rows, its width)
 * row-major: the layout of panel_index when panel is kPanelWidth, w's own when panel >= cols
 * (then out may be w itself; otherwise out overlaps nothing). O(rows * cols).
 */
void scale_columns(CodePath path, const float* w, std::size_t rows, std::size_t cols, const float* scale,
                   std::size_t panel, float* out);

/** out[i] = float(pixels[i]) for i < n (exact on every path). Precondition: path supported. */
void pixels_to_float(CodePath path, const std::uint8_t* pixels, std::size_t n, float* out);

}  // namespace esfast
