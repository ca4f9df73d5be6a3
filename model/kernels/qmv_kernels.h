// Quantized matrix-vector products over MLX's affine layout, free of MLX itself.
//
// The layout is what `mx.quantize` writes: each weight row packs K values of
// `bits` bits into uint32 words, lowest bits first (so byte j of a 4-bit row
// holds value 2j in its low nibble and 2j+1 in its high one), and every
// `group_size` values share a float scale s and bias b: w = s * q + b.
//
// The input rows are quantized to int16 in blocks of 32 (one scale per block),
// so the inner loop is an exact integer dot product of the weights' codes with
// the input's codes:
//
//   y_j = sum_g [ s_g * sum_{b in g} d_b * sum_{i in b} q_ij * xq_i ]  +  sum_g b_g * X_g
//
// where X_g is the exact (float) sum of the inputs in group g. The bias term
// never sees the input's rounding; the scale term's error is bounded by
// sum_g |s_g| * sum_b (d_b / 2) * sum_i q_ij (see tests/test_qmv_kernel.py).
//
// Why int16 and not int8 (llama.cpp's q8 activations): int8 inputs move the
// default model's log-probabilities by up to 1.6 over a reply (each layer's
// output off by ~1% of its range, compounding over 30 layers); int16 is 256x
// finer and costs one widening step per 16 codes.

#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace glasschat::qmv {

// One product: y (M, N) = x (M, K) @ dequantize(w, scales, biases).T
// (or, for `dequantize`, just the weights: x and M unused, y is (N, K)).
struct Problem {
  const float* x;  // (M, K), rows contiguous
  const uint32_t* w;  // (N, K * bits / 32)
  const float* scales;  // (N, K / group_size)
  const float* biases;  // (N, K / group_size)
  float* y;  // (M, N)
  int M, N, K, group_size, bits;
};

// The input rows after quantization, laid out for one instruction set.
// Built once per product, then read by every weight row.
struct Activations {
  std::vector<int16_t> q;  // codes, in the order the instruction set wants them
  std::vector<float> d;  // per-block input scales, possibly repeated per lane
  std::vector<float> xs;  // per-group input sums, pre-scaled per lane
};

// One instruction set's implementation: prepare the activations once, then
// compute any range of output rows (threads split the rows between them).
struct Kernel {
  const char* name;
  void (*prepare)(const Problem&, Activations&);
  void (*rows)(const Problem&, const Activations&, int row_begin, int row_end);
  // Weight rows to float32, s * q + b rounded as mx.dequantize rounds it (a
  // product, then a sum; never an FMA), so a prefill GEMM sees MLX's weights.
  void (*dequantize)(const Problem&, int row_begin, int row_end);
};

constexpr int kBlock = 32;  // input values per activation scale
constexpr float kCodeMax = 32767.0f;  // int16 codes: |q| <= 32767
constexpr int kMaxRows = 8;  // input rows handled in one pass over the weights

// Quantize one block of 32 floats to int16: d = max|x| / 32767, q = round(x / d).
void quantize_block(const float* x, int16_t* q, float* d);

// The sum of each group of `group_size` inputs, for the bias term.
void group_sums(const float* x, int K, int group_size, float* out);

const Kernel& scalar_kernel();
#if defined(__x86_64__) || defined(_M_X64)
const Kernel& avx2_kernel();  // compiled with -mavx2 -mfma; call only if the CPU has them
#if defined(GLASSCHAT_HAVE_AVX512)
const Kernel& avx512_kernel();  // compiled with AVX-512 F/BW/VL + VNNI; call only if the CPU has them
#endif
#endif
#if defined(__aarch64__)
const Kernel& neon_kernel();
#endif

// The best kernel this CPU can run (checked once, at run time on x86-64).
const Kernel& best_kernel();

// Every kernel this CPU can run, best first (the tests check each one).
std::vector<const Kernel*> usable_kernels();

// y = x @ W.T on `threads` threads (rows of W split between them).
void run(const Problem& p, const Kernel& kernel, int threads);

// y (N, K) = dequantize(W) on `threads` threads.
void run_dequantize(const Problem& p, const Kernel& kernel, int threads);

}  // namespace glasschat::qmv
