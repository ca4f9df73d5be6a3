// The attention kernels' code, included once per instruction set (attention_generic.cpp,
// attention_avx2.cpp, attention_avx512.cpp), each compiled with its own flags. It is plain
// C++ with GCC/Clang vector types (`vector_size`): each compiler turns them into that set's
// vector instructions (NEON on arm64, where the generic build is all there is). Elementwise
// loops (exps, scaling) are left to the auto-vectorizer; the dot products and multiply-adds
// use the vector types, since GCC 12 vectorized their lane-array form into shuffles (a
// 2,048-key decode step's attention took 0.7 ms a layer that way, 0.1 ms with vectors).
//
// Before including, define GLASSCHAT_ATTENTION_ISA (the namespace) and GLASSCHAT_LANES
// (floats per vector register: 4 for SSE2 and NEON, 8 for AVX2, 16 for AVX-512).

#if !defined(GLASSCHAT_ATTENTION_ISA) || !defined(GLASSCHAT_LANES)
#error "define GLASSCHAT_ATTENTION_ISA and GLASSCHAT_LANES before including attention_core.h"
#endif

#include "attention_decode.h"
#include "attention_prefill.h"

namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA {
namespace {

void run(const Problem& p, int threads) {
  if (p.L <= kDecodeRows) {
    decode(p, threads);
  } else {
    prefill(p, threads);
  }
}

}  // namespace

const Kernel& kernel() {
  static const Kernel k{GLASSCHAT_ATTENTION_NAME, run};
  return k;
}

}  // namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA
