// Picks the instruction set once and splits a product's output rows over threads.
//
// The pool is tiny on purpose: a decode step makes ~120 of these calls, each
// tens of microseconds, so a wake-up must cost far less than that. Workers spin
// on a generation counter for a few tens of microseconds (the next layer's call
// usually comes within that), then sleep on it (C++20 atomic wait: a futex on
// Linux), so an idle model costs no CPU.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <cstdlib>
#include <thread>
#include <vector>

#include "qmv_kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GLASSCHAT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define GLASSCHAT_PAUSE() asm volatile("yield")
#else
#define GLASSCHAT_PAUSE() ((void)0)
#endif

#include <unistd.h>

namespace glasschat::qmv {

std::vector<const Kernel*> usable_kernels() {
  std::vector<const Kernel*> out;
#if defined(__x86_64__) || defined(_M_X64)
#if defined(GLASSCHAT_HAVE_AVX512)
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  if (avx512) {
    out.push_back(&avx512_kernel());
  }
#endif
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) {
    out.push_back(&avx2_kernel());
  }
#elif defined(__aarch64__)
  out.push_back(&neon_kernel());
#endif
  out.push_back(&scalar_kernel());
  return out;
}

const Kernel& best_kernel() {
  static const Kernel* best = usable_kernels().front();
  return *best;
}

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
  const Problem* p;
  const Kernel* kernel;
  const Activations* acts;  // null: dequantize rather than multiply
  int parts;
};

// Output rows [begin, end) of `part` out of `parts`, in multiples of 8 rows.
void part_rows(int n, int part, int parts, int* begin, int* end) {
  const int chunks = (n + 7) / 8;
  *begin = std::min(n, 8 * (chunks * part / parts));
  *end = std::min(n, 8 * (chunks * (part + 1) / parts));
}

void run_part(const Job& job, int part) {
  int r0, r1;
  part_rows(job.p->N, part, job.parts, &r0, &r1);
  if (r0 < r1 && job.acts) {
    job.kernel->rows(*job.p, *job.acts, r0, r1);
  } else if (r0 < r1) {
    job.kernel->dequantize(*job.p, r0, r1);
  }
}

class Pool {
 public:
  explicit Pool(int workers) : workers_(workers) {
    for (int i = 0; i < workers; i++) {
      std::thread([this, i] { loop(i + 1); }).detach();
    }
  }

  int workers() const { return workers_; }

  // Runs part 0 here and parts 1.. on the workers; returns when all are done.
  void run(const Job& job) {
    std::lock_guard<std::mutex> one_job_at_a_time(mutex_);  // were there two CPU streams
    job_ = job;
    pending_.store(workers_, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    run_part(job, 0);
    auto left = [this] { return pending_.load(std::memory_order_acquire); };
    if (spin_while([&] { return left() != 0; })) {
      for (int n = left(); n != 0; n = left()) {
        pending_.wait(n, std::memory_order_acquire);
      }
    }
  }

 private:
  void loop(int part) {
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
      if (part < job_.parts) {
        run_part(job_, part);
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        pending_.notify_one();
      }
    }
  }

  std::mutex mutex_;
  Job job_{};
  const int workers_;
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
  threads = std::min(threads, kMaxThreads);
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

void run(const Problem& p, const Kernel& kernel, int threads) {
  thread_local Activations acts;
  // Threads only pay off when each gets a few blocks of rows.
  const int parts = std::max(1, std::min(threads, p.N / 64));
  // Up to kMaxRows input rows share one pass over the weights.
  for (int m0 = 0; m0 < p.M; m0 += kMaxRows) {
    Problem chunk = p;
    chunk.M = std::min(kMaxRows, p.M - m0);
    chunk.x = p.x + size_t(m0) * p.K;
    chunk.y = p.y + size_t(m0) * p.N;
    kernel.prepare(chunk, acts);
    const Job job{&chunk, &kernel, &acts, parts};
    if (parts == 1) {
      run_part(job, 0);
    } else {
      pool_for(threads).run(job);
    }
  }
}

void run_dequantize(const Problem& p, const Kernel& kernel, int threads) {
  const int parts = std::max(1, std::min(threads, p.N / 64));
  const Job job{&p, &kernel, nullptr, parts};
  if (parts == 1) {
    run_part(job, 0);
  } else {
    pool_for(threads).run(job);
  }
}

}  // namespace glasschat::qmv
