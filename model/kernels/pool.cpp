// The shared worker pool (see pool.h).

#include "pool.h"
#include "step_clock.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GLASSCHAT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define GLASSCHAT_PAUSE() asm volatile("yield")
#else
#define GLASSCHAT_PAUSE() ((void)0)
#endif

#include <unistd.h>

namespace glasschat {

namespace {

constexpr auto kSpin = std::chrono::microseconds(30);  // then sleep: the caller is not coming back soon

// Spins while `busy()` holds, for up to kSpin; returns whether it still holds.
template <class F>
bool spin_while(F busy) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  while (busy()) {
    for (int i = 0; i < 16; i++) {
      GLASSCHAT_PAUSE();
    }
    if (std::chrono::steady_clock::now() > until) {
      return busy();
    }
  }
  return false;
}

struct Job {
  TaskFn fn = nullptr;
  void* context = nullptr;
  int tasks = 0;
  int threads = 0;  // workers with an index below threads - 1 take part
};

class Pool {
 public:
  explicit Pool(int workers) : workers_(workers) {
    for (int i = 0; i < workers; i++) {
      std::thread([this, i] { loop(i); }).detach();
    }
  }

  int workers() const { return workers_; }

  // Runs tasks here and on the first threads - 1 workers; returns when all are done.
  void run(const Job& job) {
    std::lock_guard<std::mutex> one_job_at_a_time(mutex_);  // were there two CPU streams
    job_ = job;
    next_.store(0, std::memory_order_relaxed);
    pending_.store(workers_, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    work();
    auto left = [this] { return pending_.load(std::memory_order_acquire); };
    if (spin_while([&] { return left() != 0; })) {
      for (int n = left(); n != 0; n = left()) {
        pending_.wait(n, std::memory_order_acquire);
      }
    }
  }

 private:
  void work() {
    for (int i = next_.fetch_add(1, std::memory_order_relaxed); i < job_.tasks;
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
      job_.fn(job_.context, i);
    }
  }

  void loop(int index) {
    // Not a load: the first job may already be posted before this thread runs.
    uint32_t seen = 0;
    for (;;) {
      auto current = [this] { return generation_.load(std::memory_order_acquire); };
      if (spin_while([&] { return current() == seen; })) {
        while (current() == seen) {
          generation_.wait(seen, std::memory_order_acquire);
        }
      }
      seen = current();
      if (index < job_.threads - 1) {
        work();
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        pending_.notify_one();
      }
    }
  }

  std::mutex mutex_;
  Job job_{};
  const int workers_;
  std::atomic<int> next_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
};

// One pool per thread count asked for (tests switch between a few). A forked
// child has no worker threads: it starts its own pools.
constexpr int kMaxThreads = 64;
std::mutex pools_mutex;
Pool* pools[kMaxThreads + 1] = {};
int pools_pid = 0;

Pool& pool_for(int threads) {
  std::lock_guard<std::mutex> lock(pools_mutex);
  if (pools_pid != getpid()) {
    std::fill(std::begin(pools), std::end(pools), nullptr);  // the parent's workers are not here
    pools_pid = getpid();
  }
  if (pools[threads] == nullptr) {
    pools[threads] = new Pool(threads - 1);  // lives as long as the process
  }
  return *pools[threads];
}

}  // namespace

StageTotals& stage_totals() {
  static StageTotals totals;
  return totals;
}

void parallel_for(int tasks, int threads, TaskFn task, void* context) {
  threads = std::min({threads, tasks, kMaxThreads});
  if (threads <= 1) {
    for (int i = 0; i < tasks; i++) {
      task(context, i);
    }
    return;
  }
  pool_for(threads).run(Job{task, context, tasks, threads});
}

}  // namespace glasschat
