#pragma once
/**
 * @file mlp.hpp
 * The forward pass of a feed-forward policy for one observation: normalization, dense layers
 * over a flat float32 parameter vector, and the mapping of the outputs into an action box.
 *
 * Arithmetic: every output sums its products in one fixed order, ((x0*w0 + x1*w1) + ...) + b,
 * with no fused multiply-adds (the kernels build with -ffp-contract=off), so the SIMD and the
 * scalar code paths (AVX-512, AVX2, SSE2: dispatch.hpp) give bit-identical results. The functions
 * that take a CodePath have one compiled version per path; the others have one for all.
 * tanh is a rational approximation (tanh_approx), not libm's.
 */

#include <cstddef>
#include <cstdint>

#include "esfast/dispatch.hpp"

namespace esfast {

/** The nonlinearity after each hidden layer. */
enum class Activation : int { identity = 0, tanh = 1, relu = 2 };

/**
 * tanh(x) by a rational function of degree 13/6 (Eigen's float tanh): absolute error below
 * 1e-6 against the exact value for every float, odd, and exactly +-1 beyond |x| = 7.9.
 * Branch-free, so loops over it vectorize. NaN gives NaN.
 */
float tanh_approx(float x);

/**
 * y[j] = sum_i x[i] * w[i * outputs + j] + b[j] for j < outputs, summed over i in increasing
 * order (see the file comment), w row-major (inputs, outputs).
 * Preconditions: code_path_supported(path); x holds `inputs` floats, w inputs*outputs, b and y
 * `outputs`; y overlaps no input. Thread-safe for distinct y. O(inputs * outputs).
 */
void dense(CodePath path, const float* x, std::size_t inputs, const float* w, const float* b, std::size_t outputs,
           float* y);

/** x[i] = activation(x[i]) for i < n, in place (tanh: tanh_approx). Precondition: code_path_supported(path). */
void activate(CodePath path, Activation activation, float* x, std::size_t n);

/**
 * out[i] = min(max(float(obs[i] - mean[i]) * inv_std[i], -clip), clip): the difference is taken
 * in the observation's precision (double or float), then rounded to float. NaN stays NaN.
 * Preconditions: all arrays hold n elements. O(n).
 */
void normalize_observation(const double* obs, const float* mean, const float* inv_std, float clip, std::size_t n,
                           float* out);
void normalize_observation(const float* obs, const float* mean, const float* inv_std, float clip, std::size_t n,
                           float* out);

/**
 * The layers of a policy over flat parameters. `sizes` holds layers + 1 widths (inputs, hidden
 * widths..., outputs); theta holds, for each layer l in order, its weight (sizes[l], sizes[l+1])
 * row-major, then its bias (sizes[l+1]). `hidden` follows every layer but the last.
 * `scratch` holds 2 * max(sizes[1..layers-1]) floats (may be null for one layer); `out` holds
 * sizes[layers] floats, the last layer's outputs before any squashing.
 * The path is resolved once per call: dense() and activate() of that path for every layer.
 * Preconditions: code_path_supported(path); layers >= 1; no buffer overlaps another.
 * Thread-safe for distinct scratch and out. O(number of weights).
 */
void mlp_forward(CodePath path, const float* theta, const std::size_t* sizes, std::size_t layers,
                 Activation hidden, const float* x, float* scratch, float* out);

/**
 * Continuous actions in a box: a[i] = mid[i] + half[i] * t where t = tanh_approx(y[i]) if
 * bounded[i] else y[i]; then, if noise is not null, a[i] = min(max(a[i] + noise[i], low[i]), high[i])
 * (low/high may be -inf/+inf). In place allowed (action == y). O(n).
 */
void squash_actions(const float* y, const float* mid, const float* half, const std::uint8_t* bounded,
                    const float* noise, const float* low, const float* high, std::size_t n, float* action);

}  // namespace esfast
