#include "esfast/ranks.hpp"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace esfast {

void centered_ranks(const double* x, std::size_t n, float* out) {
    if (n == 0) return;
    if (n == 1) {
        out[0] = 0.0f;
        return;
    }
    // Sorting (value, index) pairs in one contiguous array is several times faster than sorting
    // indices through an indirect comparison.
    std::vector<std::pair<double, std::size_t>> sorted(n);
    for (std::size_t i = 0; i < n; ++i) sorted[i] = {x[i], i};
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    const double scale = 1.0 / static_cast<double>(n - 1);
    for (std::size_t first = 0; first < n;) {
        std::size_t last = first;  // [first, last] is one group of equal values
        while (last + 1 < n && sorted[last + 1].first == sorted[first].first) ++last;
        const double rank = 0.5 * static_cast<double>(first + last);
        const float value = static_cast<float>(rank * scale - 0.5);
        for (std::size_t k = first; k <= last; ++k) out[sorted[k].second] = value;
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
