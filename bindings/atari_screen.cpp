// esfast._core.AreaResize and palette_to_gray: the checked Python face of cpp/src/atari_screen.cpp.
// The GIL is kept during these calls: they take 1-14 us, and it serializes the use of an
// AreaResize's scratch row.
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

constexpr std::uint64_t kMaxSide = std::uint64_t{1} << 16;

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
        const std::vector<std::int64_t> in{static_cast<std::int64_t>(source_.first), static_cast<std::int64_t>(source_.second)};
        auto a = exact_array<std::uint8_t>(image, "image", in, false);
        auto dst = exact_array<std::uint8_t>(
            out, "out", {static_cast<std::int64_t>(target_.first), static_cast<std::int64_t>(target_.second)}, true);
        const bool pool = !other.is_none();
        auto b = pool ? exact_array<std::uint8_t>(other, "other", in, false) : a;
        if (overlaps(dst, a) || overlaps(dst, b)) throw py::value_error("out must not overlap the input images");
        impl_(a.data(), pool ? b.data() : nullptr, dst.mutable_data());
    }

    std::string code_path() const { return esfast::code_path_name(impl_.code_path()); }

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
    py::class_<AreaResize>(m, "AreaResize")
        .def(py::init<py::handle, py::handle>(), py::arg("source"), py::arg("target"))
        .def("__call__", &AreaResize::call, py::arg("image"), py::arg("out"), py::arg("other") = py::none())
        .def_property_readonly("code_path", &AreaResize::code_path)
        .def_property_readonly("denominator", &AreaResize::denominator)
        .def_property_readonly("source", &AreaResize::source)
        .def_property_readonly("target", &AreaResize::target);

    m.def(
        "palette_to_gray",
        [](py::handle indices, py::handle table, py::handle known, py::handle out) {
            // Any shape (a screen is (210, 160)); out has the same.
            const std::int64_t dims = py::isinstance<py::array>(indices) ? py::reinterpret_borrow<py::array>(indices).ndim() : 1;
            auto src = exact_array<std::uint8_t>(indices, "indices", std::vector<std::int64_t>(dims, -1), false);
            auto dst = exact_array<std::uint8_t>(out, "out", std::vector<std::int64_t>(src.shape(), src.shape() + src.ndim()), true);
            auto lut = exact_array<std::uint8_t>(table, "table", {256}, false);
            auto seen = exact_array<std::uint8_t>(known, "known", {256}, false);
            // The same buffer is fine (each byte is read before it is written); a shifted overlap
            // would depend on the vector width.
            if (overlaps(dst, src) && dst.data() != src.data()) {
                throw py::value_error("out must be indices itself or not overlap it");
            }
            const auto n = static_cast<std::size_t>(src.size());
            return esfast::palette_to_gray(esfast::CodePath::automatic, src.data(), n, lut.data(), seen.data(),
                                           dst.mutable_data());
        },
        py::arg("indices"), py::arg("table"), py::arg("known"), py::arg("out"));

    m.def("palette_to_gray_vectorized", [] { return esfast::palette_to_gray_vectorized(esfast::CodePath::automatic); });
}
