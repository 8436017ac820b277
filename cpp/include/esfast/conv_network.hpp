#pragma once
/**
 * @file conv_network.hpp
 * The convolutional policy with virtual batch normalization (python/esfast/conv_policy.py has
 * the parameter layout and the semantics): ConvNetwork holds the geometry and the reference
 * batch, ConvForward one parameter vector's normalization, folded into its weights, and the
 * forward pass of one observation.
 *
 * Data layout. Observations are uint8 (channels, height, width), converted to float once per
 * call; the 1/255 pixel scale is folded into the first layer's weights. Conv outputs are kept
 * channel-last, (row, column, filter), so that a register block of positions x filters stores
 * contiguously; folded conv weights are (tap, filter), taps in θ's (channel, row, column) order.
 * Folded dense weights are θ's (inputs, outputs) cut into column panels (sparse_dense); the
 * first dense layer's inputs are read in θ's (channel, row, column) order from the channel-last
 * conv output. In a refresh, dense inputs are stored (input, example), so that one tap of a block
 * of examples is one contiguous load.
 *
 * Summation order (fixed, so results are the same on every machine and code path):
 * a conv output sums over taps in θ's (channel, row, column) order, then adds its bias; a dense
 * output sums over its inputs in θ's order, skipping inputs that are zero (exact, see
 * sparse_dense), then adds its bias. VBN statistics are float64 sums over the reference batch
 * in (example, position) order (channel_statistics).
 */

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "esfast/conv.hpp"

namespace esfast {

/** One convolution without padding: `filters` kernels of kernel x kernel, moved by `stride`. */
struct ConvSpec {
    std::size_t filters;
    std::size_t kernel;
    std::size_t stride;
};

/** The epsilon of virtual batch normalization: gamma / sqrt(var + eps). */
constexpr double kVbnEpsilon = 1e-5;

/**
 * The network's geometry, its reference batch (copied) and the scratch memory that refreshing a
 * ConvForward needs (about reference_size * (the conv outputs + the dense inputs) floats).
 *
 * Layers: the conv layers in order, each followed by VBN and relu; then one dense layer per
 * entry of `hidden`, each followed by VBN and relu; then a dense output layer of `actions` units
 * with a bias.
 *
 * Thread-safety: const after construction, apart from the scratch, which refresh() locks.
 */
class ConvNetwork {
public:
    /**
     * Preconditions (the binding checks them): channels, height, width, actions, every filters,
     * kernel, stride and hidden width >= 1; each conv layer's kernel fits its input; `reference`
     * holds reference_size >= 1 observations of channels * height * width bytes, C-contiguous.
     * O(reference bytes + scratch).
     */
    ConvNetwork(std::size_t channels, std::size_t height, std::size_t width, const std::vector<ConvSpec>& convs,
                const std::vector<std::size_t>& hidden, std::size_t actions, const std::uint8_t* reference,
                std::size_t reference_size);

    /** Length of θ. */
    std::size_t num_params() const { return num_params_; }
    /** Normalized units: all conv filters, then all hidden widths; one mean and variance each. */
    std::size_t normalized_units() const { return normalized_units_; }
    std::size_t actions() const { return dense_.back().outputs; }
    /** The observation's shape, and its size channels * height * width. */
    std::size_t channels() const { return channels_; }
    std::size_t height() const { return height_; }
    std::size_t width() const { return width_; }
    std::size_t observation_size() const { return pixels_; }
    std::size_t reference_size() const { return reference_size_; }

private:
    friend class ConvForward;

    struct Conv {
        std::size_t channels, filters, kernel, stride, out_h, out_w;
        std::size_t weight, gamma, beta;     // offsets into θ
        std::size_t row_step, column_step;   // input index steps between output positions
        std::vector<std::size_t> offset;     // per tap (channel, row, column): index from the corner
        std::size_t positions() const { return out_h * out_w; }
        std::size_t taps() const { return channels * kernel * kernel; }
    };
    struct Dense {
        std::size_t inputs, outputs;
        std::size_t weight, gamma, beta;   // offsets into θ; beta is the bias of the output layer
        bool normalized;                   // a hidden layer (VBN and relu), not the output layer
        std::vector<std::size_t> offset;   // batch input stored (inputs, examples): offset[k] = k * examples
    };

    std::vector<Conv> convs_;
    std::vector<Dense> dense_;
    std::vector<std::uint32_t> flatten_order_;  // first dense input k -> index in the last conv output
    std::size_t channels_, height_, width_;
    std::size_t pixels_ = 0, num_params_ = 0, normalized_units_ = 0, reference_size_ = 0;
    std::vector<std::uint8_t> reference_;

    // Refresh scratch, one refresh at a time.
    std::mutex scratch_mutex_;
    std::vector<float> reference_pixels_;         // one example as floats
    std::vector<std::vector<float>> conv_batch_;  // per conv layer: (example, position, filter)
    std::vector<float> dense_input_;              // a dense layer's input: (inputs, example)
    std::vector<float> dense_output_;             // its pre-activations: (example, output)
    std::vector<float> packed_;                   // its weights in panels of 16 columns
    std::vector<float> scale_, shift_;
};

/**
 * The policy under one parameter vector: VBN statistics folded into the weights (refresh), then
 * the forward pass of single observations (act).
 *
 * Owns its folded weights and step buffers: no allocation after construction. Thread-safety:
 * calls on one object are serialized by a mutex; objects of one network may refresh from
 * several threads (the network's scratch is locked).
 */
class ConvForward {
public:
    /** Weights are zero until the first refresh. `path` is resolved here (automatic: the
     *  process's selected path now) and kept. Precondition: code_path_supported(path). */
    explicit ConvForward(std::shared_ptr<ConvNetwork> network, CodePath path = CodePath::automatic);

    /**
     * Runs the reference batch through the network under θ (batch statistics at every normalized
     * layer, in float64), writes each normalized unit's mean and population variance to
     * mean[u], var[u] (u in normalized_units() order), and folds them into the weights:
     * scale = float(gamma / sqrt(var + eps)), shift = float(beta - mean * scale) (in float64,
     * rounded once), weights * scale, bias shift. The output layer's weights and bias are copied.
     * Preconditions: theta holds num_params() floats; mean and var normalized_units() doubles.
     * O(reference_size * multiply-adds of one observation).
     */
    void refresh(const float* theta, double* mean, double* var);

    /**
     * The output layer's values for one observation into logits (actions() floats), and their
     * argmax: the first maximum, or the first NaN if there is one (as numpy's argmax).
     * Preconditions: observation holds observation_size() bytes. O(multiply-adds of the network).
     */
    std::size_t act(const std::uint8_t* observation, float* logits);

    const ConvNetwork& network() const { return *net_; }
    /** The code path the kernels run (never automatic). */
    CodePath code_path() const { return path_; }

private:
    std::shared_ptr<ConvNetwork> net_;
    CodePath path_;
    std::mutex mutex_;
    // Folded parameters: per conv layer (tap, filter) weights and a bias; per dense layer
    // (inputs, outputs) weights in sparse_dense's panel layout and a bias.
    std::vector<std::vector<float>> conv_weight_, conv_bias_, dense_weight_, dense_bias_;
    bool backwards_ = false;  // sparse_dense's panel order, alternated per call
    // Step buffers.
    std::vector<float> pixels_;
    std::vector<std::vector<float>> conv_out_, dense_out_;
    std::vector<std::uint32_t> index_;
    std::vector<float> value_;
};

}  // namespace esfast
