// The attention kernels (attention_core.h) for the baseline instruction set (SSE2 on x86-64, NEON on arm64).

#define GLASSCHAT_ATTENTION_ISA generic
#define GLASSCHAT_ATTENTION_NAME "generic"
#define GLASSCHAT_LANES 4
#include "attention_core.h"

namespace glasschat::attention {

const Kernel& generic_kernel() {
  return generic::kernel();
}

}  // namespace glasschat::attention
