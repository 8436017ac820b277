// esfast._core.MLPForward: the checked Python face of the policy forward pass (cpp/src/mlp.cpp).
// Shapes, dtypes and sizes are checked once, at construction; a call then checks only its
// observation and noise, so a step costs one Python call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "esfast/mlp.hpp"

namespace py = pybind11;
using namespace esfast::bindings;

namespace {

constexpr std::uint64_t kMaxWidth = std::uint64_t{1} << 24;

esfast::Activation to_activation(const std::string& name) {
    if (name == "tanh") return esfast::Activation::tanh;
    if (name == "relu") return esfast::Activation::relu;
    if (name == "identity") return esfast::Activation::identity;
    throw py::value_error("hidden_activation must be 'tanh', 'relu' or 'identity', got '" + name + "'");
}

/**
 * Holds references to numpy-owned arrays (θ, normalization, action bounds): their contents are
 * read at each call, so refilling them in place (np.copyto) takes effect at the next call.
 * Runs the code path selected when it was made. Not for concurrent calls on one object (each
 * call writes `normalized`).
 */
class MLPForward {
public:
    MLPForward(py::object theta, py::object sizes, const std::string& hidden_activation, py::object obs_mean,
               py::object obs_inv_std, py::object obs_clip, py::object normalized, py::object action_mid,
               py::object action_half, py::object action_bounded, py::object action_low, py::object action_high)
        : hidden_(to_activation(hidden_activation)), path_(esfast::resolve_code_path(esfast::CodePath::automatic)) {
        if (!py::isinstance<py::sequence>(sizes) || py::isinstance<py::str>(sizes) || py::len(sizes) < 2) {
            throw py::value_error("sizes must be a sequence of at least 2 layer widths (inputs, ..., outputs)");
        }
        for (py::handle w : py::reinterpret_borrow<py::sequence>(sizes)) {
            sizes_.push_back(static_cast<std::size_t>(to_uint(w, "each of sizes", 1, kMaxWidth)));
        }
        std::uint64_t params = 0;
        for (std::size_t l = 0; l + 1 < sizes_.size(); ++l) params += sizes_[l] * sizes_[l + 1] + sizes_[l + 1];
        for (std::size_t l = 1; l + 1 < sizes_.size(); ++l) widest_ = std::max(widest_, sizes_[l]);
        const auto inputs = static_cast<std::int64_t>(sizes_.front());
        outputs_ = sizes_.back();
        theta_ = exact_vector<float>(theta, "theta", static_cast<std::int64_t>(params), false);
        mean_ = exact_vector<float>(obs_mean, "obs_mean", inputs, false);
        inv_std_ = exact_vector<float>(obs_inv_std, "obs_inv_std", inputs, false);
        clip_ = static_cast<float>(to_finite(obs_clip, "obs_clip"));
        if (!(clip_ > 0.0f)) throw py::value_error("obs_clip must be positive, got " + std::to_string(clip_));
        normalized_ = exact_vector<float>(normalized, "normalized", inputs, true);
        const py::object bounds[] = {action_mid, action_half, action_bounded, action_low, action_high};
        int given = 0;
        for (const auto& b : bounds) given += b.is_none() ? 0 : 1;
        if (given != 0 && given != 5) {
            throw py::value_error("action_mid, action_half, action_bounded, action_low and action_high go together: give all or none");
        }
        squash_ = given == 5;
        if (squash_) {
            const auto n = static_cast<std::int64_t>(outputs_);
            mid_ = exact_vector<float>(action_mid, "action_mid", n, false);
            half_ = exact_vector<float>(action_half, "action_half", n, false);
            bounded_ = exact_vector<bool>(action_bounded, "action_bounded", n, false);
            low_ = exact_vector<float>(action_low, "action_low", n, false);
            high_ = exact_vector<float>(action_high, "action_high", n, false);
        }
    }

    py::array_t<float> call(py::handle observation, py::handle noise) {
        const float* eps = nullptr;
        py::array_t<float> noise_array;
        if (!noise.is_none()) {
            if (!squash_) throw py::value_error("noise needs the action bounds (this forward pass has none)");
            noise_array = exact_vector<float>(noise, "noise", static_cast<std::int64_t>(outputs_), false);
            eps = noise_array.data();
        }
        // float64 and float32 observations are read as they are; anything else is converted.
        py::array obs = py::array::ensure(observation);
        if (!obs) throw py::error_already_set();
        const bool is_double = holds<double>(obs);
        if (!(is_double || holds<float>(obs)) || !(obs.flags() & py::array::c_style)) {
            const char kind = obs.dtype().kind();
            if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
                throw py::type_error("observation must hold real numbers, got dtype " + dtype_name(obs));
            }
            return call(py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(obs), noise);
        }
        if (obs.ndim() != 1 || static_cast<std::size_t>(obs.shape(0)) != sizes_.front()) {
            throw py::value_error("observation must have shape (" + std::to_string(sizes_.front()) + ",), got " +
                                  shape_text(obs));
        }
        py::array_t<float> out(static_cast<py::ssize_t>(outputs_));
        float* y = out.mutable_data();
        float* x = normalized_.mutable_data();
        const void* src = obs.data();
        {
            py::gil_scoped_release release;
            std::vector<float> scratch(2 * widest_);
            if (is_double) {
                esfast::normalize_observation(static_cast<const double*>(src), mean_.data(), inv_std_.data(), clip_,
                                              sizes_.front(), x);
            } else {
                esfast::normalize_observation(static_cast<const float*>(src), mean_.data(), inv_std_.data(), clip_,
                                              sizes_.front(), x);
            }
            esfast::mlp_forward(path_, theta_.data(), sizes_.data(), sizes_.size() - 1, hidden_, x, scratch.data(), y);
            if (squash_) {
                esfast::squash_actions(y, mid_.data(), half_.data(), reinterpret_cast<const std::uint8_t*>(bounded_.data()),
                                       eps, low_.data(), high_.data(), outputs_, y);
            }
        }
        return out;
    }

    std::string code_path() const { return esfast::code_path_name(path_); }

private:
    std::vector<std::size_t> sizes_;
    std::size_t widest_ = 0;
    std::size_t outputs_ = 0;
    esfast::Activation hidden_;
    esfast::CodePath path_;
    float clip_ = 0.0f;
    bool squash_ = false;
    py::array_t<float> theta_, mean_, inv_std_, normalized_, mid_, half_, low_, high_;
    py::array_t<bool> bounded_;
};

}  // namespace

void bind_mlp_forward(py::module_& m) {
    py::class_<MLPForward>(m, "MLPForward")
        .def(py::init<py::object, py::object, const std::string&, py::object, py::object, py::object, py::object,
                      py::object, py::object, py::object, py::object, py::object>(),
             py::arg("theta"), py::arg("sizes"), py::arg("hidden_activation"), py::arg("obs_mean"),
             py::arg("obs_inv_std"), py::arg("obs_clip"), py::arg("normalized"), py::arg("action_mid"),
             py::arg("action_half"), py::arg("action_bounded"), py::arg("action_low"), py::arg("action_high"))
        .def_property_readonly("code_path", &MLPForward::code_path)
        .def("__call__", &MLPForward::call, py::arg("observation"), py::arg("noise") = py::none());

    m.def(
        "tanh_approx",
        [](py::object x) {
            auto values = exact_vector<float>(x, "x", -1, false);
            py::array_t<float> out(values.shape(0));
            const float* src = values.data();
            float* dst = out.mutable_data();
            const auto n = static_cast<std::size_t>(values.shape(0));
            {
                py::gil_scoped_release release;
                for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
                esfast::activate(esfast::CodePath::automatic, esfast::Activation::tanh, dst, n);
            }
            return out;
        },
        py::arg("x"));
}
