#pragma once
// Argument checking for esfast._core: every check raises TypeError or ValueError with a message that
// names the argument and what was expected, before any kernel runs.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "esfast/dispatch.hpp"

namespace esfast::bindings {

namespace py = pybind11;

/** The name of obj's type for messages: "int", or "numpy.float32" for types outside builtins. */
inline std::string type_name(py::handle obj) {
    py::handle type = py::type::of(obj);
    const std::string module = py::str(type.attr("__module__"));
    const std::string name = py::str(type.attr("__qualname__"));
    return module == "builtins" ? name : module + "." + name;
}

/** A Python int (not bool) in [low, high], as uint64. */
inline std::uint64_t to_uint(py::handle obj, const char* name, std::uint64_t low, std::uint64_t high) {
    if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr())) {
        throw py::type_error(std::string(name) + " must be an int, got " + type_name(obj));
    }
    py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
    if (value.ptr() == nullptr) throw py::error_already_set();
    py::int_ py_low(low), py_high(high);
    if (value < py_low || value > py_high) {
        throw py::value_error(std::string(name) + " must be in [" + std::to_string(low) + ", " +
                              std::to_string(high) + "], got " + std::string(py::str(value)));
    }
    return value.cast<std::uint64_t>();
}

/** A finite real number. */
inline double to_finite(py::handle obj, const char* name) {
    if (PyBool_Check(obj.ptr()) ||
        !(PyIndex_Check(obj.ptr()) || PyObject_HasAttrString(obj.ptr(), "__float__"))) {
        throw py::type_error(std::string(name) + " must be a real number, got " + type_name(obj));
    }
    const double value = PyFloat_AsDouble(obj.ptr());
    if (value == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    if (!std::isfinite(value)) {
        throw py::value_error(std::string(name) + " must be finite, got " + std::to_string(value));
    }
    return value;
}

inline std::string dtype_name(const py::array& a) { return std::string(py::str(a.dtype())); }

/** "(2, 3)", "(4,)": an array's shape as numpy prints it. */
inline std::string shape_text(const py::array& a) {
    std::string shape = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(a.shape(d));
    return shape + (a.ndim() == 1 ? ",)" : ")");
}

/** Whether `a` holds T: an equivalent dtype, not necessarily the same object (an unpickled array
 *  carries its own dtype instance). */
template <typename T>
bool holds(const py::array& a) {
    return py::isinstance<py::array_t<T>>(a);
}

/** A C-contiguous numpy array of exactly dtype T and exactly `shape`, a -1 entry meaning any
 *  length there. TypeError for a non-array or another dtype, ValueError for the rest. */
template <typename T>
py::array_t<T> exact_array(py::handle obj, const char* name, const std::vector<std::int64_t>& shape, bool writeable) {
    // The messages are built only on failure: str(dtype) costs microseconds, and some callers
    // check arrays on every environment step.
    const auto want = [] { return std::string(py::str(py::dtype::of<T>())); };
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy array of dtype " + want() + ", got " + type_name(obj));
    }
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!holds<T>(a)) throw py::type_error(std::string(name) + " must have dtype " + want() + ", got " + dtype_name(a));
    bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (py::ssize_t d = 0; same && d < a.ndim(); ++d) {
        const std::int64_t length = shape[static_cast<std::size_t>(d)];
        same = length < 0 || a.shape(d) == length;
    }
    if (!same) {
        std::string expected = "(";
        for (std::size_t d = 0; d < shape.size(); ++d) {
            expected += (d ? ", " : "") + (shape[d] < 0 ? std::string("n") : std::to_string(shape[d]));
        }
        expected += shape.size() == 1 ? ",)" : ")";
        throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_text(a));
    }
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    if (writeable && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

/** A 1-D C-contiguous numpy array of exactly dtype T and length `length` (any length if -1). */
template <typename T>
py::array_t<T> exact_vector(py::handle obj, const char* name, std::int64_t length, bool writeable) {
    return exact_array<T>(obj, name, {length}, writeable);
}

/** Real-valued array-like (bool, int or float dtype), converted to a C-contiguous float64 copy. */
inline py::array_t<double> real_values(py::handle obj, const char* name) {
    py::array a = py::array::ensure(obj);
    if (!a) {
        PyErr_Clear();
        throw py::type_error(std::string(name) + " must be array-like of real numbers");
    }
    const char kind = a.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u') {
        throw py::type_error(std::string(name) + " must hold real numbers, got dtype " + dtype_name(a));
    }
    return py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(a);
}

/** Whether two arrays' byte ranges overlap. */
inline bool overlaps(const py::array& a, const py::array& b) {
    const auto* a0 = static_cast<const char*>(a.data());
    const auto* b0 = static_cast<const char*>(b.data());
    return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

/** The code paths this process can run, from the baseline up: "'baseline', 'avx2'". */
inline std::string supported_code_path_list() {
    std::string list;
    for (auto path : {CodePath::baseline, CodePath::avx2, CodePath::avx512}) {
        if (code_path_supported(path)) list += std::string(list.empty() ? "'" : ", '") + code_path_name(path) + "'";
    }
    return list;
}

/** The CodePath named `value` ("auto", "avx512", "avx2" or "baseline"). ValueError for another
 *  name, or for a path this process cannot run (naming those it can). */
inline CodePath to_code_path(const std::string& value, const char* name) {
    CodePath path = CodePath::automatic;
    if (!parse_code_path(value.c_str(), path)) {
        throw py::value_error(std::string(name) + " must be 'auto', 'avx512', 'avx2' or 'baseline', got '" + value +
                              "'");
    }
    if (!code_path_supported(path)) {
        std::string message = std::string(name) + " '" + value + "' is not supported here: this process runs " +
                              supported_code_path_list();
        if (best_code_path() != cpu_code_path()) {
            message += std::string(" (the CPU has '") + code_path_name(cpu_code_path()) +
                       "', limited by ESFAST_CODE_PATH or ESFAST_NO_AVX512)";
        }
        throw py::value_error(message);
    }
    return path;
}

}  // namespace esfast::bindings
