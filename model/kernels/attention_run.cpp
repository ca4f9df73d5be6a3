// Picks the attention kernel for this CPU, once (see attention_kernels.h).

#include "attention_kernels.h"

namespace glasschat::attention {

std::vector<const Kernel*> usable_kernels() {
  std::vector<const Kernel*> out;
#if defined(__x86_64__) || defined(_M_X64)
#if defined(GLASSCHAT_HAVE_AVX512)
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  if (avx512) {
    out.push_back(&avx512_kernel());
  }
#endif
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) {
    out.push_back(&avx2_kernel());
  }
#endif
  out.push_back(&generic_kernel());
  return out;
}

const Kernel& best_kernel() {
  static const Kernel* best = usable_kernels().front();
  return *best;
}

}  // namespace glasschat::attention
