// esfast._core.ConvNetwork and ConvForward: the checked Python face of the convolutional policy
// (cpp/src/conv_network.cpp). Shapes, dtypes and sizes are checked once, at construction; a step
// then checks only its observation, so it costs one Python call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "esfast/conv_network.hpp"

namespace py = pybind11;
using namespace esfast::bindings;

namespace {

// Bounds that keep every index and size far from overflow (and memory requests sane).
constexpr std::uint64_t kMaxSide = std::uint64_t{1} << 16;
constexpr std::uint64_t kMaxPixels = std::uint64_t{1} << 26;
constexpr std::uint64_t kMaxWidth = std::uint64_t{1} << 20;
constexpr std::uint64_t kMaxParams = std::uint64_t{1} << 32;

std::vector<std::uint64_t> int_sequence(py::handle obj, const char* name, const char* each, std::uint64_t high) {
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj)) {
        throw py::type_error(std::string(name) + " must be a sequence of ints, got " + type_name(obj));
    }
    std::vector<std::uint64_t> values;
    for (py::handle item : py::reinterpret_borrow<py::sequence>(obj)) values.push_back(to_uint(item, each, 1, high));
    return values;
}

/** A uint8 array of exactly `shape` (dimension 0 free if shape[0] is 0), as a C-contiguous array
 *  (copied if it was not). TypeError for a non-array or another dtype, ValueError for a shape. */
py::array uint8_array(py::handle obj, const char* name, const std::vector<std::size_t>& shape) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy array of dtype uint8, got " + type_name(obj));
    }
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!holds<std::uint8_t>(a)) {
        throw py::type_error(std::string(name) + " must have dtype uint8, got " + dtype_name(a));
    }
    bool fits = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (std::size_t d = 0; fits && d < shape.size(); ++d) {
        fits = shape[d] == 0 ? a.shape(d) >= 1 : static_cast<std::size_t>(a.shape(d)) == shape[d];
    }
    if (!fits) {
        std::string expected = "(";
        for (std::size_t d = 0; d < shape.size(); ++d) {
            expected += (d ? ", " : "") + (shape[d] == 0 ? std::string("n >= 1") : std::to_string(shape[d]));
        }
        throw py::value_error(std::string(name) + " must have shape " + expected + "), got " + shape_text(a));
    }
    if (!(a.flags() & py::array::c_style)) a = py::array_t<std::uint8_t, py::array::c_style>::ensure(a);
    return a;
}

std::shared_ptr<esfast::ConvNetwork> make_network(py::object observation_shape, py::object conv_layers,
                                                  py::object hidden_dims, py::object actions,
                                                  py::object reference_batch) {
    const auto shape = int_sequence(observation_shape, "observation_shape", "each of observation_shape", kMaxSide);
    if (shape.size() != 3) {
        throw py::value_error("observation_shape must be (channels, height, width), got " +
                              std::to_string(shape.size()) + " entries");
    }
    if (shape[0] * shape[1] * shape[2] > kMaxPixels) {
        throw py::value_error("observation_shape must have at most " + std::to_string(kMaxPixels) + " pixels");
    }
    if (!py::isinstance<py::sequence>(conv_layers) || py::isinstance<py::str>(conv_layers) || py::len(conv_layers) < 1) {
        throw py::value_error("conv_layers must be a sequence of at least one (filters, kernel, stride)");
    }
    std::vector<esfast::ConvSpec> convs;
    std::uint64_t channels = shape[0], height = shape[1], width = shape[2], params = 0;
    for (py::handle layer : py::reinterpret_borrow<py::sequence>(conv_layers)) {
        const auto spec = int_sequence(layer, "each of conv_layers", "each of conv_layers' (filters, kernel, stride)", kMaxSide);
        if (spec.size() != 3) throw py::value_error("each of conv_layers must be (filters, kernel, stride)");
        const std::uint64_t filters = spec[0], kernel = spec[1], stride = spec[2];
        if (kernel > height || kernel > width) {
            throw py::value_error("conv layer " + std::to_string(convs.size()) + " (kernel " + std::to_string(kernel) +
                                  ") does not fit its input of " + std::to_string(height) + "x" +
                                  std::to_string(width) + ": observation_shape is too small");
        }
        params += filters * channels * kernel * kernel + 2 * filters;
        convs.push_back({filters, kernel, stride});
        channels = filters;
        height = (height - kernel) / stride + 1;
        width = (width - kernel) / stride + 1;
        if (channels * height * width > kMaxPixels) throw py::value_error("conv_layers give too many outputs");
    }
    const auto hidden = int_sequence(hidden_dims, "hidden_dims", "each of hidden_dims", kMaxWidth);
    if (hidden.empty()) throw py::value_error("hidden_dims must have at least one entry");
    const std::uint64_t n_actions = to_uint(actions, "actions", 1, kMaxWidth);
    std::uint64_t inputs = channels * height * width;
    for (const std::uint64_t h : hidden) {
        params += inputs * h + 2 * h;
        inputs = h;
    }
    params += inputs * n_actions + n_actions;
    if (params > kMaxParams) throw py::value_error("the network has more than 2**32 parameters");

    const py::array batch = uint8_array(reference_batch, "reference_batch", {0, shape[0], shape[1], shape[2]});
    const auto* pixels = static_cast<const std::uint8_t*>(batch.data());
    const auto examples = static_cast<std::size_t>(batch.shape(0));
    std::vector<std::size_t> widths(hidden.begin(), hidden.end());
    py::gil_scoped_release release;
    return std::make_shared<esfast::ConvNetwork>(shape[0], shape[1], shape[2], convs, widths, n_actions, pixels,
                                                 examples);
}

/**
 * Holds a reference to the numpy-owned θ, read at each refresh. Calls on one object are
 * serialized (by the kernel's mutex); the GIL is released while the kernel runs.
 */
class ConvForward {
public:
    ConvForward(const std::shared_ptr<esfast::ConvNetwork>& network, py::object theta, const std::string& code_path)
        : forward_(checked(network), to_code_path(code_path, "code_path")), logits_(network->actions()) {
        const esfast::ConvNetwork& net = *network;
        theta_ = exact_vector<float>(theta, "theta", static_cast<std::int64_t>(net.num_params()), false);
        shape_ = {net.channels(), net.height(), net.width()};
    }

    py::array_t<double> refresh() {
        const auto units = static_cast<py::ssize_t>(forward_.network().normalized_units());
        py::array_t<double> statistics({py::ssize_t{2}, units});
        double* mean = statistics.mutable_data();
        const float* theta = theta_.data();
        {
            py::gil_scoped_release release;
            forward_.refresh(theta, mean, mean + units);
        }
        return statistics;
    }

    std::size_t call(py::handle observation) {
        const py::array obs = uint8_array(observation, "observation", shape_);
        const auto* pixels = static_cast<const std::uint8_t*>(obs.data());
        float* logits = logits_.data();
        py::gil_scoped_release release;
        return forward_.act(pixels, logits);
    }

    py::array_t<float> logits(py::handle observation) {
        const py::array obs = uint8_array(observation, "observation", shape_);
        const auto* pixels = static_cast<const std::uint8_t*>(obs.data());
        py::array_t<float> out(static_cast<py::ssize_t>(logits_.size()));
        float* y = out.mutable_data();
        {
            py::gil_scoped_release release;
            forward_.act(pixels, y);
        }
        return out;
    }

    std::string code_path() const { return esfast::code_path_name(forward_.code_path()); }

private:
    static const std::shared_ptr<esfast::ConvNetwork>& checked(const std::shared_ptr<esfast::ConvNetwork>& network) {
        if (!network) throw py::type_error("network must be an esfast._core.ConvNetwork, got None");
        return network;
    }

    esfast::ConvForward forward_;
    py::array_t<float> theta_;
    std::vector<float> logits_;  // written under the kernel's mutex
    std::vector<std::size_t> shape_;  // of an observation, for the per-step check
};

}  // namespace

void bind_conv_forward(py::module_& m) {
    py::class_<esfast::ConvNetwork, std::shared_ptr<esfast::ConvNetwork>>(m, "ConvNetwork")
        .def(py::init(&make_network), py::arg("observation_shape"), py::arg("conv_layers"), py::arg("hidden_dims"),
             py::arg("actions"), py::arg("reference_batch"))
        .def_property_readonly("num_params", &esfast::ConvNetwork::num_params)
        .def_property_readonly("normalized_units", &esfast::ConvNetwork::normalized_units)
        .def_property_readonly("actions", &esfast::ConvNetwork::actions)
        .def_property_readonly("reference_size", &esfast::ConvNetwork::reference_size);

    py::class_<ConvForward>(m, "ConvForward")
        .def(py::init<const std::shared_ptr<esfast::ConvNetwork>&, py::object, const std::string&>(),
             py::arg("network"), py::arg("theta"), py::arg("code_path") = "auto")
        .def_property_readonly("code_path", &ConvForward::code_path)
        .def("refresh", &ConvForward::refresh)
        .def("__call__", &ConvForward::call, py::arg("observation"))
        .def("logits", &ConvForward::logits, py::arg("observation"));
}
