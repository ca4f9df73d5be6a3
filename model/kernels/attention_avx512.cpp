// The attention kernels (attention_core.h) for AVX-512: compiled with -mavx512f -mavx512bw -mavx512vl, called only after checking the CPU at run time.

#define GLASSCHAT_ATTENTION_ISA avx512
#define GLASSCHAT_ATTENTION_NAME "avx512"
#define GLASSCHAT_LANES 16
#include "attention_core.h"

namespace glasschat::attention {

const Kernel& avx512_kernel() {
  return avx512::kernel();
}

}  // namespace glasschat::attention
