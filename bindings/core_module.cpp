// esfast._core: the Python face of the C++ kernels. This file converts and validates arguments
// (see arguments.hpp), holds the noise table's memory alive for every view handed out, and releases
// the GIL around each compute block. It contains no numerics of its own.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "arguments.hpp"
#include "esfast/gaussian.hpp"
#include "esfast/gradient.hpp"
#include "esfast/noise_table.hpp"
#include "esfast/offsets.hpp"
#include "esfast/perturb.hpp"
#include "esfast/ranks.hpp"

namespace py = pybind11;
using esfast::NoiseTable;

void bind_atari_screen(py::module_& m);  // atari_screen.cpp
void bind_code_path(py::module_& m);  // code_path.cpp
void bind_mlp_forward(py::module_& m);  // mlp_forward.cpp
void bind_conv_forward(py::module_& m);  // conv_forward.cpp
using namespace esfast::bindings;

namespace {

constexpr std::uint64_t kMaxSeed = ~std::uint64_t{0};
constexpr std::uint64_t kMaxThreads = 1024;
// Table sizes up to 2^40 samples; far above any machine's memory, far below overflow.
constexpr std::uint64_t kMaxTableSize = std::uint64_t{1} << 40;
constexpr std::size_t kMaxNameLength = 200;

std::size_t to_threads(const std::optional<py::object>& threads) {
    if (!threads || threads->is_none()) return 0;
    return static_cast<std::size_t>(to_uint(*threads, "threads", 1, kMaxThreads));
}

/** "/name" from "name" or "/name"; letters, digits, '.', '_' and '-' only. */
std::string shm_name(const std::string& name) {
    const std::string bare = !name.empty() && name[0] == '/' ? name.substr(1) : name;
    if (bare.empty() || bare.size() > kMaxNameLength) {
        throw py::value_error("name must have 1 to " + std::to_string(kMaxNameLength) +
                              " characters, got '" + name + "'");
    }
    for (char c : bare) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '.' || c == '_' || c == '-';
        if (!ok) {
            throw py::value_error("name may hold only letters, digits, '.', '_' and '-', got '" + name + "'");
        }
    }
    if (bare == "." || bare == "..") throw py::value_error("name must not be '.' or '..'");
    return "/" + bare;
}

/** The table's memory, checked open; the returned pointer keeps it mapped during a computation. */
std::shared_ptr<esfast::Mapping> open_mapping(const NoiseTable& table) {
    if (table.closed()) throw py::value_error("table is closed");
    return table.mapping();
}

/** Checks that [offset, offset + dim) lies in the table. */
void check_slice(const NoiseTable& table, std::uint64_t offset, std::uint64_t dim, const char* name) {
    if (dim > table.size() || offset > table.size() - dim) {
        throw py::value_error(std::string(name) + " must be in [0, " +
                              std::to_string(dim > table.size() ? 0 : table.size() - dim) +
                              "] (table size " + std::to_string(table.size()) + " minus dim " +
                              std::to_string(dim) + "), got " + std::to_string(offset));
    }
}

/** A read-only float32 array over table[offset : offset + dim] that keeps the memory mapped. */
py::array table_view(const NoiseTable& table, std::uint64_t offset, std::uint64_t dim) {
    auto mapping = open_mapping(table);
    check_slice(table, offset, dim, "offset");
    auto* holder = new std::shared_ptr<esfast::Mapping>(std::move(mapping));
    py::capsule base(holder, [](void* p) { delete static_cast<std::shared_ptr<esfast::Mapping>*>(p); });
    py::array_t<float> view({static_cast<py::ssize_t>(dim)}, {static_cast<py::ssize_t>(sizeof(float))},
                            table.data() + offset, base);
    py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return std::move(view);
}

/** The checked common arguments of perturb and perturb_pair. `mapping` keeps the table's memory
 *  mapped while the kernel reads `eps` without the GIL. */
struct Perturbation {
    py::array_t<float> theta;
    std::uint64_t dim;
    const float* eps;
    float sigma;
    std::shared_ptr<esfast::Mapping> mapping;
};

Perturbation perturbation(py::handle theta, const NoiseTable& table, py::handle offset, py::handle sigma) {
    auto th = exact_vector<float>(theta, "theta", -1, false);
    const auto dim = static_cast<std::uint64_t>(th.shape(0));
    auto mapping = open_mapping(table);
    if (dim == 0) throw py::value_error("theta must not be empty");
    const auto o = to_uint(offset, "offset", 0, kMaxTableSize);
    check_slice(table, o, dim, "offset");
    const auto sg = static_cast<float>(to_finite(sigma, "sigma"));
    return Perturbation{th, dim, table.data() + o, sg, std::move(mapping)};
}

/** Return shaping (ranks or normalization): real values of any shape in, float32 of that shape out.
 *  Every element must pass `valid`, or ValueError(`message` and the element's flat index). */
template <typename Kernel, typename Valid>
py::array_t<float> shape_returns(py::handle x, Kernel kernel, Valid valid, const char* message) {
    auto values = real_values(x, "x");
    const double* src = values.data();
    const auto n = static_cast<std::size_t>(values.size());
    for (std::size_t i = 0; i < n; ++i) {
        if (!valid(src[i])) throw py::value_error(std::string(message) + " (at flat index " + std::to_string(i) + ")");
    }
    py::array_t<float> out(std::vector<py::ssize_t>(values.shape(), values.shape() + values.ndim()));
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        kernel(src, n, dst);
    }
    return out;
}

void translate_system_error(std::exception_ptr p) {
    try {
        if (p) std::rethrow_exception(p);
    } catch (const std::system_error& e) {
        // OSError(errno, message) becomes the matching subclass (FileExistsError, ...).
        py::object error = py::reinterpret_borrow<py::object>(PyExc_OSError)(e.code().value(), e.what());
        PyErr_SetObject(PyExc_OSError, error.ptr());
    }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "esfast's compiled kernels. Use esfast.core, which wraps and documents them.";
    py::register_exception_translator(&translate_system_error);
    m.attr("SHARED_LAYOUT_VERSION") = esfast::kSharedLayoutVersion;
    m.attr("SHARED_HEADER_BYTES") = esfast::kSharedHeaderBytes;
    bind_code_path(m);
    bind_atari_screen(m);
    bind_mlp_forward(m);
    bind_conv_forward(m);

    py::class_<NoiseTable>(m, "NoiseTable")
        .def_static(
            "create",
            [](py::object size, py::object seed, std::optional<py::object> threads) {
                const auto n = to_uint(size, "size", 1, kMaxTableSize);
                const auto s = to_uint(seed, "seed", 0, kMaxSeed);
                const auto t = to_threads(threads);
                py::gil_scoped_release release;
                return NoiseTable::create_private(n, s, t);
            },
            py::arg("size"), py::arg("seed"), py::arg("threads") = py::none())
        .def_static(
            "create_shared",
            [](const std::string& name, py::object size, py::object seed, std::optional<py::object> threads) {
                const auto full = shm_name(name);
                const auto n = to_uint(size, "size", 1, kMaxTableSize);
                const auto s = to_uint(seed, "seed", 0, kMaxSeed);
                const auto t = to_threads(threads);
                py::gil_scoped_release release;
                return NoiseTable::create_shared(full, n, s, t);
            },
            py::arg("name"), py::arg("size"), py::arg("seed"), py::arg("threads") = py::none())
        .def_static(
            "attach",
            [](const std::string& name, std::optional<py::object> threads) {
                const auto full = shm_name(name);
                const auto t = to_threads(threads);
                py::gil_scoped_release release;
                return NoiseTable::attach(full, t);
            },
            py::arg("name"), py::arg("threads") = py::none())
        .def_static(
            "remove_if_stale", [](const std::string& name) { return NoiseTable::remove_if_stale(shm_name(name)); },
            py::arg("name"))
        .def_property_readonly("size", &NoiseTable::size)
        .def_property_readonly("seed", &NoiseTable::seed)
        .def_property_readonly("name", [](const NoiseTable& t) -> std::optional<std::string> {
            if (t.name().empty()) return std::nullopt;
            return t.name();
        })
        .def_property_readonly("owner", &NoiseTable::owner)
        .def_property_readonly("closed", &NoiseTable::closed)
        .def_property_readonly("threads", [](const NoiseTable& t) { return t.pool().size(); })
        .def(
            "view",
            [](const NoiseTable& t, py::object offset, py::object dim) {
                const auto o = to_uint(offset, "offset", 0, kMaxTableSize);
                const auto d = to_uint(dim, "dim", 1, kMaxTableSize);
                return table_view(t, o, d);
            },
            py::arg("offset"), py::arg("dim"))
        .def("close", &NoiseTable::close);

    m.def(
        "noise_samples",
        [](py::object seed, py::object start, py::object count) {
            const auto s = to_uint(seed, "seed", 0, kMaxSeed);
            const auto c = to_uint(count, "count", 0, kMaxTableSize);
            // Any start whose samples stay below 2^64 is addressable.
            const auto first = to_uint(start, "start", 0, kMaxSeed - c);
            py::array_t<float> out(static_cast<py::ssize_t>(c));
            float* dst = out.mutable_data();
            {
                py::gil_scoped_release release;
                esfast::fill_gaussian(s, first, c, dst);
            }
            return out;
        },
        py::arg("seed"), py::arg("start"), py::arg("count"));

    m.def(
        "sample_offsets",
        [](py::object seed, py::object count, py::object dim, py::object table_size) {
            const auto s = to_uint(seed, "seed", 0, kMaxSeed);
            const auto c = to_uint(count, "count", 0, kMaxTableSize);
            const auto n = to_uint(table_size, "table_size", 1, kMaxTableSize);
            const auto d = to_uint(dim, "dim", 1, n);
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(c));
            std::int64_t* dst = out.mutable_data();
            {
                py::gil_scoped_release release;
                esfast::sample_offsets(s, c, n - d + 1, dst);
            }
            return out;
        },
        py::arg("seed"), py::arg("count"), py::arg("dim"), py::arg("table_size"));

    m.def(
        "perturb",
        [](py::object theta, const NoiseTable& table, py::object offset, py::object sigma, py::object out) {
            const auto args = perturbation(theta, table, offset, sigma);
            auto dst = exact_vector<float>(out, "out", static_cast<std::int64_t>(args.dim), true);
            if (overlaps(args.theta, dst) && args.theta.data() != dst.data()) {
                throw py::value_error("out must be theta itself or not overlap it");
            }
            float* res = dst.mutable_data();
            {
                py::gil_scoped_release release;
                esfast::perturb(table.pool(), args.theta.data(), args.eps, args.sigma, args.dim, res);
            }
            return out;
        },
        py::arg("theta"), py::arg("table"), py::arg("offset"), py::arg("sigma"), py::arg("out"));

    m.def(
        "perturb_pair",
        [](py::object theta, const NoiseTable& table, py::object offset, py::object sigma, py::object out_plus,
           py::object out_minus) {
            const auto args = perturbation(theta, table, offset, sigma);
            const auto dim = static_cast<std::int64_t>(args.dim);
            auto plus = exact_vector<float>(out_plus, "out_plus", dim, true);
            auto minus = exact_vector<float>(out_minus, "out_minus", dim, true);
            if (overlaps(plus, minus)) throw py::value_error("out_plus and out_minus must not overlap");
            if (overlaps(args.theta, plus) || overlaps(args.theta, minus)) {
                throw py::value_error("out_plus and out_minus must not overlap theta");
            }
            float* p = plus.mutable_data();
            float* q = minus.mutable_data();
            {
                py::gil_scoped_release release;
                esfast::perturb_pair(table.pool(), args.theta.data(), args.eps, args.sigma, args.dim, p, q);
            }
            return py::make_tuple(out_plus, out_minus);
        },
        py::arg("theta"), py::arg("table"), py::arg("offset"), py::arg("sigma"), py::arg("out_plus"),
        py::arg("out_minus"));

    m.def(
        "centered_ranks",
        [](py::object x) {
            return shape_returns(x, esfast::centered_ranks, [](double v) { return !std::isnan(v); },
                                 "x must not contain NaN");
        },
        py::arg("x"));

    m.def(
        "normalized",
        [](py::object x) {
            return shape_returns(x, esfast::normalized, [](double v) { return std::isfinite(v); }, "x must be finite");
        },
        py::arg("x"));

    m.def(
        "weighted_noise_sum",
        [](const NoiseTable& table, py::object offsets, py::object weights, py::object dim, py::object out) {
            auto mapping = open_mapping(table);
            const auto d = to_uint(dim, "dim", 1, kMaxTableSize);
            if (d > table.size()) {
                throw py::value_error("dim must be at most the table size " + std::to_string(table.size()) +
                                      ", got " + std::to_string(d));
            }
            auto offs = exact_vector<std::int64_t>(offsets, "offsets", -1, false);
            const auto n = offs.shape(0);
            auto w = exact_vector<float>(weights, "weights", n, false);
            auto dst = exact_vector<float>(out, "out", static_cast<std::int64_t>(d), true);
            const std::int64_t* o = offs.data();
            const std::int64_t last = static_cast<std::int64_t>(table.size() - d);
            for (py::ssize_t i = 0; i < n; ++i) {
                if (o[i] < 0 || o[i] > last) {
                    throw py::value_error("offsets[" + std::to_string(i) + "] must be in [0, " + std::to_string(last) +
                                          "], got " + std::to_string(o[i]));
                }
            }
            const float* wt = w.data();
            for (py::ssize_t i = 0; i < n; ++i) {
                if (!std::isfinite(wt[i])) {
                    throw py::value_error("weights[" + std::to_string(i) + "] must be finite, got " + std::to_string(wt[i]));
                }
            }
            const float* noise = table.data();
            float* res = dst.mutable_data();
            {
                py::gil_scoped_release release;
                esfast::weighted_noise_sum(table.pool(), noise, o, wt, static_cast<std::size_t>(n), d, res);
            }
            return out;
        },
        py::arg("table"), py::arg("offsets"), py::arg("weights"), py::arg("dim"), py::arg("out"));
}
