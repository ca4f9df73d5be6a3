// Picks the instruction set once and splits a product's output rows over the
// shared worker pool (pool.h).

#include <algorithm>
#include <vector>

#include "pool.h"
#include "qmv_kernels.h"

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

void run_part(void* context, int part) {
  const Job& job = *static_cast<const Job*>(context);
  int r0, r1;
  part_rows(job.p->N, part, job.parts, &r0, &r1);
  if (r0 < r1 && job.acts) {
    job.kernel->rows(*job.p, *job.acts, r0, r1);
  } else if (r0 < r1) {
    job.kernel->dequantize(*job.p, r0, r1);
  }
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
    Job job{&chunk, &kernel, &acts, parts};
    parallel_for(parts, parts, run_part, &job);
  }
}

void run_dequantize(const Problem& p, const Kernel& kernel, int threads) {
  const int parts = std::max(1, std::min(threads, p.N / 64));
  Job job{&p, &kernel, nullptr, parts};
  parallel_for(parts, parts, run_part, &job);
}

}  // namespace glasschat::qmv
