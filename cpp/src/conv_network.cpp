#include "esfast/conv_network.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace esfast {

namespace {

/** Columns per weight panel of a refresh's dense products. */
constexpr std::size_t kGemmPanel = 16;

/** The pixel scale 1/255, as the float32 the first layer's weights are multiplied by. */
const float kPixelScale = static_cast<float>(1.0 / 255.0);

/** VBN's scale and shift of one unit, in float64 and rounded once each, as numpy computes
 *  (gamma / sqrt(var + eps)).astype(float32) and (beta - mean * scale).astype(float32). */
void scale_and_shift(const float* gamma, const float* beta, const double* mean, const double* var, std::size_t n,
                     float* scale, float* shift) {
    for (std::size_t i = 0; i < n; ++i) {
        scale[i] = static_cast<float>(static_cast<double>(gamma[i]) / std::sqrt(var[i] + kVbnEpsilon));
        shift[i] = static_cast<float>(static_cast<double>(beta[i]) - mean[i] * static_cast<double>(scale[i]));
    }
}

}  // namespace

ConvNetwork::ConvNetwork(std::size_t channels, std::size_t height, std::size_t width,
                         const std::vector<ConvSpec>& convs, const std::vector<std::size_t>& hidden,
                         std::size_t actions, const std::uint8_t* reference, std::size_t reference_size)
    : channels_(channels),
      height_(height),
      width_(width),
      pixels_(channels * height * width),
      reference_size_(reference_size),
      reference_(reference, reference + reference_size * channels * height * width) {
    std::size_t c = channels, h = height, w = width, start = 0;
    for (std::size_t l = 0; l < convs.size(); ++l) {
        const ConvSpec& spec = convs[l];
        Conv conv;
        conv.channels = c;
        conv.filters = spec.filters;
        conv.kernel = spec.kernel;
        conv.stride = spec.stride;
        conv.out_h = (h - spec.kernel) / spec.stride + 1;
        conv.out_w = (w - spec.kernel) / spec.stride + 1;
        conv.weight = start;
        conv.gamma = conv.weight + spec.filters * c * spec.kernel * spec.kernel;
        conv.beta = conv.gamma + spec.filters;
        start = conv.beta + spec.filters;
        // The first layer reads the observation, (channel, row, column); the others read the
        // previous layer's output, (row, column, channel).
        const bool channel_first = l == 0;
        const std::size_t channel_step = channel_first ? h * w : 1;
        const std::size_t row_step = channel_first ? w : w * c;
        const std::size_t column_step = channel_first ? 1 : c;
        for (std::size_t ch = 0; ch < c; ++ch)
            for (std::size_t ky = 0; ky < spec.kernel; ++ky)
                for (std::size_t kx = 0; kx < spec.kernel; ++kx)
                    conv.offset.push_back(ch * channel_step + ky * row_step + kx * column_step);
        conv.row_step = spec.stride * row_step;
        conv.column_step = spec.stride * column_step;
        normalized_units_ += spec.filters;
        c = spec.filters;
        h = conv.out_h;
        w = conv.out_w;
        convs_.push_back(std::move(conv));
    }
    // The dense layers read the flattened conv output in θ's (channel, row, column) order.
    const std::size_t positions = h * w;
    for (std::size_t ch = 0; ch < c; ++ch)
        for (std::size_t p = 0; p < positions; ++p) flatten_order_.push_back(static_cast<std::uint32_t>(p * c + ch));
    std::size_t inputs = c * positions;
    for (std::size_t d = 0; d <= hidden.size(); ++d) {
        Dense dense;
        dense.normalized = d < hidden.size();
        dense.inputs = inputs;
        dense.outputs = dense.normalized ? hidden[d] : actions;
        dense.weight = start;
        dense.gamma = dense.weight + inputs * dense.outputs;
        dense.beta = dense.normalized ? dense.gamma + dense.outputs : dense.gamma;
        start = dense.beta + dense.outputs;
        for (std::size_t k = 0; k < inputs; ++k) dense.offset.push_back(k * reference_size);
        if (dense.normalized) normalized_units_ += dense.outputs;
        inputs = dense.outputs;
        dense_.push_back(std::move(dense));
    }
    num_params_ = start;

    reference_pixels_.resize(pixels_);
    std::size_t widest = 0;
    for (const Conv& conv : convs_) {
        conv_batch_.emplace_back(reference_size * conv.positions() * conv.filters);
        widest = std::max(widest, conv.filters);
    }
    std::size_t widest_dense = 0;
    for (const Dense& dense : dense_) {
        if (dense.normalized) widest_dense = std::max(widest_dense, dense.outputs);
    }
    dense_input_.resize(reference_size * std::max(dense_.front().inputs, widest_dense));
    dense_output_.resize(reference_size * widest_dense);
    std::size_t hidden_weights = 0;
    for (const Dense& dense : dense_) {
        if (dense.normalized) hidden_weights = std::max(hidden_weights, dense.inputs * dense.outputs);
    }
    packed_.resize(hidden_weights);
    scale_.resize(std::max(widest, widest_dense));
    shift_.resize(scale_.size());
}

ConvForward::ConvForward(std::shared_ptr<ConvNetwork> network, CodePath path)
    : net_(std::move(network)), path_(resolve_code_path(path)), pixels_(net_->pixels_) {
    std::size_t widest = 0;
    for (const ConvNetwork::Conv& conv : net_->convs_) {
        conv_weight_.emplace_back(conv.taps() * conv.filters);
        conv_bias_.emplace_back(conv.filters);
        conv_out_.emplace_back(conv.positions() * conv.filters);
    }
    for (const ConvNetwork::Dense& dense : net_->dense_) {
        dense_weight_.emplace_back(dense.inputs * dense.outputs);
        dense_bias_.emplace_back(dense.outputs);
        dense_out_.emplace_back(dense.outputs);
        widest = std::max(widest, dense.inputs);
    }
    index_.resize(widest);
    value_.resize(widest);
}

void ConvForward::refresh(const float* theta, double* mean, double* var) {
    std::lock_guard<std::mutex> own(mutex_);
    ConvNetwork& net = *net_;
    std::lock_guard<std::mutex> scratch(net.scratch_mutex_);
    const std::size_t examples = net.reference_size_;
    float* scale = net.scale_.data();
    float* shift = net.shift_.data();
    std::size_t unit = 0;

    for (std::size_t l = 0; l < net.convs_.size(); ++l) {
        const ConvNetwork::Conv& conv = net.convs_[l];
        const std::size_t taps = conv.taps(), filters = conv.filters, positions = conv.positions();
        // θ's (filter, tap) weights as (tap, filter), the pixel scale folded into the first layer.
        float* w = conv_weight_[l].data();
        const float* source = theta + conv.weight;
        const float factor = l == 0 ? kPixelScale : 1.0f;  // x * 1.0f is x, exactly
        for (std::size_t t = 0; t < taps; ++t)
            for (std::size_t f = 0; f < filters; ++f) w[t * filters + f] = source[f * taps + t] * factor;
        float* pre = net.conv_batch_[l].data();
        for (std::size_t e = 0; e < examples; ++e) {
            const float* in;
            if (l == 0) {  // one example at a time: 4 times smaller in memory than the batch as floats
                pixels_to_float(path_, net.reference_.data() + e * net.pixels_, net.pixels_, net.reference_pixels_.data());
                in = net.reference_pixels_.data();
            } else {
                const ConvNetwork::Conv& previous = net.convs_[l - 1];
                in = net.conv_batch_[l - 1].data() + e * previous.positions() * previous.filters;
            }
            gathered_matmul(path_, in, conv.out_h, conv.out_w, conv.row_step, conv.column_step, conv.offset.data(),
                            taps, w, filters, nullptr, false, pre + e * positions * filters, filters);
        }
        channel_statistics(path_, pre, examples * positions, filters, mean + unit, var + unit);
        scale_and_shift(theta + conv.gamma, theta + conv.beta, mean + unit, var + unit, filters, scale, shift);
        scale_columns(path_, w, taps, filters, scale, filters, w);
        std::memcpy(conv_bias_[l].data(), shift, filters * sizeof(float));
        // The normalized outputs feed the next layer: in place, or, after the last conv layer,
        // flattened in (channel, row, column) order into the dense input (input, example).
        if (l + 1 < net.convs_.size()) {
            normalize_relu(path_, pre, examples, positions, filters, scale, shift, pre, positions * filters, filters, 1);
        } else {
            normalize_relu(path_, pre, examples, positions, filters, scale, shift, net.dense_input_.data(), 1, examples,
                           positions * examples);
        }
        unit += filters;
    }

    for (std::size_t d = 0; d < net.dense_.size(); ++d) {
        const ConvNetwork::Dense& dense = net.dense_[d];
        const std::size_t n = dense.inputs, m = dense.outputs;
        const float* weight = theta + dense.weight;
        if (dense.normalized) {
            // θ's weights cut into panels of 16 columns, each stored contiguously: a block then
            // reads its weights front to back (twice as fast as 16 columns of 256-wide rows).
            float* packed = net.packed_.data();
            scale_columns(path_, weight, n, m, nullptr, kGemmPanel, packed);
            float* pre = net.dense_output_.data();
            for (std::size_t j0 = 0; j0 < m; j0 += kGemmPanel) {
                gathered_matmul(path_, net.dense_input_.data(), 1, examples, 0, 1, dense.offset.data(), n,
                                packed + j0 * n, std::min(kGemmPanel, m - j0), nullptr, false, pre + j0, m);
            }
            channel_statistics(path_, pre, examples, m, mean + unit, var + unit);
            scale_and_shift(theta + dense.gamma, theta + dense.beta, mean + unit, var + unit, m, scale, shift);
            normalize_relu(path_, pre, examples, 1, m, scale, shift, net.dense_input_.data(), 1, 0, examples);
            unit += m;
            // Folded into sparse_dense's panels.
            scale_columns(path_, weight, n, m, scale, kPanelWidth, dense_weight_[d].data());
            std::memcpy(dense_bias_[d].data(), shift, m * sizeof(float));
        } else {  // the output layer: weights and bias as they are
            scale_columns(path_, weight, n, m, nullptr, kPanelWidth, dense_weight_[d].data());
            std::memcpy(dense_bias_[d].data(), theta + dense.beta, m * sizeof(float));
        }
    }
}

std::size_t ConvForward::act(const std::uint8_t* observation, float* logits) {
    std::lock_guard<std::mutex> own(mutex_);
    const ConvNetwork& net = *net_;
    pixels_to_float(path_, observation, net.pixels_, pixels_.data());
    const float* in = pixels_.data();
    for (std::size_t l = 0; l < net.convs_.size(); ++l) {
        const ConvNetwork::Conv& conv = net.convs_[l];
        gathered_matmul(path_, in, conv.out_h, conv.out_w, conv.row_step, conv.column_step, conv.offset.data(),
                        conv.taps(), conv_weight_[l].data(), conv.filters, conv_bias_[l].data(), true,
                        conv_out_[l].data(), conv.filters);
        in = conv_out_[l].data();
    }
    const std::uint32_t* order = net.flatten_order_.data();
    for (std::size_t d = 0; d < net.dense_.size(); ++d) {
        const ConvNetwork::Dense& dense = net.dense_[d];
        const std::size_t count = nonzero_inputs(path_, in, order, dense.inputs, index_.data(), value_.data());
        sparse_dense(path_, index_.data(), value_.data(), count, dense_weight_[d].data(), dense.inputs,
                     dense.outputs, dense_bias_[d].data(), dense.normalized, backwards_, dense_out_[d].data());
        in = dense_out_[d].data();
        order = nullptr;
    }
    backwards_ = !backwards_;
    const std::size_t actions = net.dense_.back().outputs;
    std::memcpy(logits, in, actions * sizeof(float));
    std::size_t best = 0;
    for (std::size_t j = 0; j < actions; ++j) {
        if (std::isnan(logits[j])) return j;
        if (logits[j] > logits[best]) best = j;
    }
    return best;
}

}  // namespace esfast
