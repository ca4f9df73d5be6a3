// The attention kernels (attention_core.h) for AVX2 + FMA: compiled with -mavx2 -mfma, called only after checking the CPU at run time.

#define GLASSCHAT_ATTENTION_ISA avx2
#define GLASSCHAT_ATTENTION_NAME "avx2"
#define GLASSCHAT_LANES 8
#include "attention_core.h"

namespace glasschat::attention {

const Kernel& avx2_kernel() {
  return avx2::kernel();
}

}  // namespace glasschat::attention
