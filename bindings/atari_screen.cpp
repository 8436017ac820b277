// esfast._core.AreaResize and palette_to_gray: the checked Python face of cpp/src/atari_screen.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "esfast/atari_screen.hpp"

namespace py = pybind11;
using namespace esfast::bindings;

namespace {

constexpr std::uint64_t kMaxSide = 1 << 16;

std::string shape_of(const py::array& a) {
    std::string shape = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(a.shape(d));
    return shape + (a.ndim() == 1 ? ",)" : ")");
}

/** A C-contiguous uint8 numpy array of exactly the given shape. */
py::array_t<std::uint8_t> exact_bytes(py::handle obj, const char* name, const std::vector<py::ssize_t>& shape,
                                      bool writeable) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy array of dtype uint8, got " + type_name(obj));
    }
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!a.dtype().is(py::dtype::of<std::uint8_t>())) {
        throw py::type_error(std::string(name) + " must have dtype uint8, got " + dtype_name(a));
    }
    bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == shape[static_cast<std::size_t>(d)];
    if (!same) {
        std::string expected = "(";
        for (std::size_t d = 0; d < shape.size(); ++d) expected += (d ? ", " : "") + std::to_string(shape[d]);
        expected += shape.size() == 1 ? ",)" : ")";
        throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_of(a));
    }
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    if (writeable && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
    return py::reinterpret_borrow<py::array_t<std::uint8_t>>(a);
}

/** A (height, width) pair of ints in [1, kMaxSide]. */
std::pair<std::size_t, std::size_t> to_size(py::handle obj, const char* name) {
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) || py::len(obj) != 2) {
        throw py::type_error(std::string(name) + " must be a (height, width) pair, got " + type_name(obj));
    }
    auto pair = py::reinterpret_borrow<py::sequence>(obj);
    const std::string what = std::string("each of ") + name;
    return {static_cast<std::size_t>(to_uint(pair[0], what.c_str(), 1, kMaxSide)),
            static_cast<std::size_t>(to_uint(pair[1], what.c_str(), 1, kMaxSide))};
}

class AreaResize {
public:
    AreaResize(py::handle source, py::handle target)
        : source_(to_size(source, "source")), target_(to_size(target, "target")), impl_(make(source_, target_)) {}

    void call(py::handle image, py::handle out, py::handle other) {
        const std::vector<py::ssize_t> in{static_cast<py::ssize_t>(source_.first), static_cast<py::ssize_t>(source_.second)};
        auto a = exact_bytes(image, "image", in, false);
        auto dst = exact_bytes(
            out, "out", {static_cast<py::ssize_t>(target_.first), static_cast<py::ssize_t>(target_.second)}, true);
        const bool pool = !other.is_none();
        auto b = pool ? exact_bytes(other, "other", in, false) : a;
        if (overlaps(dst, a) || overlaps(dst, b)) throw py::value_error("out must not overlap the input images");
        impl_(a.data(), pool ? b.data() : nullptr, dst.mutable_data());
    }

    std::uint64_t denominator() const {
        return esfast::AreaResize::denominator(source_.first, source_.second, target_.first, target_.second);
    }

    py::tuple source() const { return py::make_tuple(source_.first, source_.second); }
    py::tuple target() const { return py::make_tuple(target_.first, target_.second); }

private:
    static esfast::AreaResize make(std::pair<std::size_t, std::size_t> s, std::pair<std::size_t, std::size_t> t) {
        if (!esfast::AreaResize::fits(s.first, s.second, t.first, t.second)) {
            throw py::value_error("(" + std::to_string(s.first) + ", " + std::to_string(s.second) + ") -> (" +
                                  std::to_string(t.first) + ", " + std::to_string(t.second) +
                                  "): the common denominator " +
                                  std::to_string(esfast::AreaResize::denominator(s.first, s.second, t.first, t.second)) +
                                  " is too large for exact float32 sums (255 * denominator must be below 2**24)");
        }
        return esfast::AreaResize(s.first, s.second, t.first, t.second);
    }

    std::pair<std::size_t, std::size_t> source_, target_;
    esfast::AreaResize impl_;
};

}  // namespace

void bind_atari_screen(py::module_& m) {
    m.attr("PALETTE_TO_GRAY_VECTORIZED") = esfast::palette_to_gray_vectorized();
    py::class_<AreaResize>(m, "AreaResize")
        .def(py::init<py::handle, py::handle>(), py::arg("source"), py::arg("target"))
        .def("__call__", &AreaResize::call, py::arg("image"), py::arg("out"), py::arg("other") = py::none())
        .def_property_readonly("denominator", &AreaResize::denominator)
        .def_property_readonly("source", &AreaResize::source)
        .def_property_readonly("target", &AreaResize::target);

    m.def(
        "palette_to_gray",
        [](py::handle indices, py::handle table, py::handle known, py::handle out) {
            if (!py::isinstance<py::array>(indices)) {
                throw py::type_error("indices must be a numpy array of dtype uint8, got " + type_name(indices));
            }
            const auto any = py::reinterpret_borrow<py::array>(indices);
            const std::vector<py::ssize_t> shape(any.shape(), any.shape() + any.ndim());
            auto src = exact_bytes(indices, "indices", shape, false);
            auto dst = exact_bytes(out, "out", shape, true);
            auto lut = exact_bytes(table, "table", {256}, false);
            auto seen = exact_bytes(known, "known", {256}, false);
            const auto n = static_cast<std::size_t>(src.size());
            return esfast::palette_to_gray(src.data(), n, lut.data(), seen.data(), dst.mutable_data());
        },
        py::arg("indices"), py::arg("table"), py::arg("known"), py::arg("out"));
}
