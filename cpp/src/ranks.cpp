#include "esfast/ranks.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace esfast {

void centered_ranks(const double* x, std::size_t n, float* out) {
    if (n == 0) return;
    if (n == 1) {
        out[0] = 0.0f;
        return;
    }
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [x](std::size_t a, std::size_t b) { return x[a] < x[b]; });
    const double scale = 1.0 / static_cast<double>(n - 1);
    for (std::size_t first = 0; first < n;) {
        std::size_t last = first;  // [first, last] is one group of equal values
        while (last + 1 < n && x[order[last + 1]] == x[order[first]]) ++last;
        const double rank = 0.5 * static_cast<double>(first + last);
        const float value = static_cast<float>(rank * scale - 0.5);
        for (std::size_t k = first; k <= last; ++k) out[order[k]] = value;
        first = last + 1;
    }
}

void normalized(const double* x, std::size_t n, float* out) {
    if (n == 0) return;
    const auto [lo, hi] = std::minmax_element(x, x + n);
    if (*lo == *hi) {
        std::fill(out, out + n, 0.0f);
        return;
    }
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += x[i];
    const double mean = sum / static_cast<double>(n);
    double squares = 0.0;
    for (std::size_t i = 0; i < n; ++i) squares += (x[i] - mean) * (x[i] - mean);
    const double stdev = std::sqrt(squares / static_cast<double>(n));
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>((x[i] - mean) / stdev);
}

}  // namespace esfast
