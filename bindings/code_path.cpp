// esfast._core.code_path, set_code_path and supported_code_paths: the process's choice among the
// kernels' code paths (cpp/include/esfast/dispatch.hpp), so that tests can run each path the CPU
// supports in one process and compare their results.
#include <pybind11/pybind11.h>

#include <string>

#include "arguments.hpp"
#include "esfast/dispatch.hpp"

namespace py = pybind11;
using namespace esfast::bindings;

void bind_code_path(py::module_& m) {
    if (const char* invalid = esfast::invalid_code_path_setting()) {
        // Refused at import: running a path other than the one asked for would go unnoticed.
        throw py::value_error(std::string("the environment variable ESFAST_CODE_PATH must be 'baseline', 'avx2', "
                                          "'avx512' or 'auto', got '") + invalid + "'");
    }

    m.def("code_path", [] { return std::string(esfast::code_path_name(esfast::selected_code_path())); });

    m.def(
        "set_code_path",
        [](const std::string& path) { esfast::select_code_path(to_code_path(path, "path")); },
        py::arg("path"));

    m.def("supported_code_paths", [] {
        py::list names;
        for (auto path : {esfast::CodePath::baseline, esfast::CodePath::avx2, esfast::CodePath::avx512}) {
            if (esfast::code_path_supported(path)) names.append(esfast::code_path_name(path));
        }
        return py::tuple(names);
    });
}
