#pragma once
/**
 * @file thread_pool.hpp
 * A small fixed-size pool of std::threads for data-parallel kernels.
 */

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace esfast {

/**
 * Runs an indexed batch of tasks on `size()` threads (the caller counts as one of them).
 *
 * Kernels give each task a disjoint range of their output, so their results never depend on
 * how tasks are scheduled or how many threads there are.
 *
 * Thread-safety: run() may be called from several threads; calls are serialized.
 * Fork-safety: in a child process created by fork() the pool's threads do not exist; run()
 * notices the changed process id and executes every task on the calling thread.
 */
class ThreadPool {
public:
    /** @param threads number of threads including the caller; 0 means the machine's cores. */
    explicit ThreadPool(std::size_t threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    /** Number of threads that execute tasks, the caller included. */
    std::size_t size() const { return size_; }

    /**
     * Calls fn(task) once for every task in [0, tasks) and returns when all have finished.
     * `fn` must not throw. Blocks; O(tasks) scheduling overhead.
     */
    void run(std::size_t tasks, const std::function<void(std::size_t)>& fn);

private:
    void worker_loop();
    void drain();

    std::size_t size_;
    long owner_pid_;
    std::vector<std::thread>* workers_;  // leaked on purpose in a forked child, see ~ThreadPool
    std::mutex run_mutex_;               // serializes run()
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    const std::function<void(std::size_t)>* job_ = nullptr;
    std::size_t job_tasks_ = 0;
    std::size_t next_task_ = 0;
    std::size_t unfinished_ = 0;
    std::size_t epoch_ = 0;
    bool stopping_ = false;
};

/** Splits [0, n) into `parts` contiguous ranges; returns the bounds of range `part`. */
inline void split_range(std::size_t n, std::size_t parts, std::size_t part, std::size_t* begin,
                        std::size_t* end) {
    const std::size_t base = n / parts, extra = n % parts;
    *begin = part * base + (part < extra ? part : extra);
    *end = *begin + base + (part < extra ? 1 : 0);
}

}  // namespace esfast
