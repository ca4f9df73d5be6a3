// Attention over a KV cache, free of MLX: softmax(q k^T * scale [capped, masked]) v.
//
// Two ways through, by the number of new query rows L:
//
// - Decode (L <= kDecodeRows: one-row steps and prompt lookup's verify passes).
//   Memory-bound: every key and value is read once. The keys are split into
//   blocks (split-K); a task takes one key/value head and one block and, for
//   all of that head's query rows at once (its query heads times L), computes
//   the scores, their max m, the exps' sum l and the weighted sum of values.
//   The blocks are then merged per row: out = sum e^(m_b - M) acc_b / sum e^(m_b - M) l_b.
//
// - Prefill (more rows): blocked, flash-style. The keys of each head are first
//   packed into tiles of kTile keys stored transposed (D x kTile), so the scores
//   of a few query rows against a tile are broadcast-multiply-adds along the
//   tile; each task takes kRowBlock query rows of one head and walks the key
//   tiles it may see, keeping a running max and sum and rescaling its output
//   when the max grows. Memory is the packed keys (and dequantized values for a
//   quantized cache): linear in the length, never a score matrix.
//
// Both flush an exp under 2^-100 to exactly 0, so no weight is ever a subnormal
// float (x86 multiplies those ~50x slower; see model/network/fast_math.py).
//
// Keys and values are float32, or MLX's affine quantized layout (`mx.quantize`:
// codes packed lowest bits first into uint32 words, a float scale and bias per
// `group_size` values; w = s * q + b). Every array is read through its strides
// (a cache's slice is a view), except that the last axis must be contiguous.

#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glasschat::attention {

// A 4-D array (B, heads, S, last) read through element strides; the last axis is contiguous.
struct Strided {
  const void* data = nullptr;
  int64_t b = 0, h = 0, s = 0;
};

// Keys or values: float32 rows (bits 0), or packed codes with per-group scales and biases.
struct Side {
  int bits = 0;  // 0, 4 or 8
  int group_size = 0;
  Strided rows;  // float (.., D) or uint32 (.., D * bits / 32)
  Strided scales, biases;  // float (.., D / group_size); unused for float rows
};

struct Problem {
  int B, n_heads, n_kv, L, S, D;
  const float* q;  // (B, n_heads, L, D), contiguous, already multiplied by the scale
  float* out;  // (B, n_heads, L, D), contiguous
  float softcap;  // 0: none; else scores become softcap * tanh(scores / softcap)
  bool causal;  // query i sits at key position S - L + i and sees no key after it
  int window;  // 0: none; else query i sees only the `window` keys up to its position
  Side keys, values;
};

constexpr int kDecodeRows = 8;  // up to this many new rows take the decode path

// One instruction set's implementation.
struct Kernel {
  const char* name;
  void (*run)(const Problem& p, int threads);
};

const Kernel& generic_kernel();  // whatever the compiler vectorizes for the baseline ISA
#if defined(__x86_64__) || defined(_M_X64)
const Kernel& avx2_kernel();  // compiled with -mavx2 -mfma; call only if the CPU has them
#if defined(GLASSCHAT_HAVE_AVX512)
const Kernel& avx512_kernel();  // compiled with AVX-512 F/BW/VL; call only if the CPU has them
#endif
#endif

std::vector<const Kernel*> usable_kernels();  // best first
const Kernel& best_kernel();

}  // namespace glasschat::attention
