#include "esfast/perturb.hpp"

namespace esfast {
namespace {

constexpr std::size_t kParallelFrom = std::size_t{1} << 18;  // smaller vectors: one thread

std::size_t task_count(const ThreadPool& pool, std::size_t dim) {
    return dim >= kParallelFrom ? pool.size() : 1;
}

}  // namespace

void perturb(ThreadPool& pool, const float* theta, const float* eps, float sigma, std::size_t dim,
             float* out) {
    const std::size_t tasks = task_count(pool, dim);
    pool.run(tasks, [&](std::size_t task) {
        std::size_t begin, end;
        split_range(dim, tasks, task, &begin, &end);
        for (std::size_t j = begin; j < end; ++j) out[j] = theta[j] + sigma * eps[j];
    });
}

void perturb_pair(ThreadPool& pool, const float* theta, const float* eps, float sigma,
                  std::size_t dim, float* plus, float* minus) {
    const std::size_t tasks = task_count(pool, dim);
    pool.run(tasks, [&](std::size_t task) {
        std::size_t begin, end;
        split_range(dim, tasks, task, &begin, &end);
        for (std::size_t j = begin; j < end; ++j) {
            const float step = sigma * eps[j];
            plus[j] = theta[j] + step;
            minus[j] = theta[j] - step;
        }
    });
}

}  // namespace esfast
