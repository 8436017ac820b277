#include "esfast/thread_pool.hpp"

#include <unistd.h>

#include <algorithm>

namespace esfast {

ThreadPool::ThreadPool(std::size_t threads)
    : size_(threads != 0 ? threads : std::max<std::size_t>(1, std::thread::hardware_concurrency())),
      owner_pid_(static_cast<long>(::getpid())),
      workers_(new std::vector<std::thread>()) {
    workers_->reserve(size_ - 1);
    for (std::size_t i = 0; i + 1 < size_; ++i) workers_->emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
    if (static_cast<long>(::getpid()) != owner_pid_) {
        // A forked child: the threads and possibly the mutexes' state belong to the parent.
        // Joining would fail and destroying joinable std::thread objects would terminate, so the
        // thread objects are deliberately leaked.
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : *workers_) t.join();
    delete workers_;
}

void ThreadPool::drain() {
    // Claims tasks one at a time until none is left; used by the workers and the caller.
    for (;;) {
        std::size_t task;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (next_task_ >= job_tasks_) return;
            task = next_task_++;
        }
        (*job_)(task);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (--unfinished_ == 0) done_.notify_all();
        }
    }
}

void ThreadPool::worker_loop() {
    std::size_t seen_epoch = 0;
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || epoch_ != seen_epoch; });
            if (stopping_) return;
            seen_epoch = epoch_;
        }
        drain();
    }
}

void ThreadPool::run(std::size_t tasks, const std::function<void(std::size_t)>& fn) {
    if (tasks == 0) return;
    if (static_cast<long>(::getpid()) != owner_pid_ || size_ == 1 || tasks == 1) {
        for (std::size_t t = 0; t < tasks; ++t) fn(t);
        return;
    }
    std::lock_guard<std::mutex> serial(run_mutex_);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        job_ = &fn;
        job_tasks_ = tasks;
        next_task_ = 0;
        unfinished_ = tasks;
        ++epoch_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return unfinished_ == 0; });
    job_ = nullptr;
}

}  // namespace esfast
