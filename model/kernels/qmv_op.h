// The MLX side of the kernel: an op that builds a graph node, and the
// Primitive that evaluates it on the CPU by calling into qmv_kernels.

#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"

namespace glasschat {

namespace mx = mlx::core;

// x (..., K) @ dequantize(w, scales, biases, group_size, bits).T -> (..., N),
// all float32, w packed as `mx.quantize` packs it (affine mode).
// Two things a decode step does around the product, fused into it (one graph node, not three):
// `swiglu`: x is (..., 2K), gate then up, and the product takes silu(gate) * up (the MLP's
// down projection); `residual` (..., N): added to the result (the residual stream).
mx::array quantized_matvec(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    const std::optional<mx::array>& residual = std::nullopt,
    bool swiglu = false);

// dequantize(w, scales, biases) as float32 (N, K): mx.dequantize's numbers,
// one pass instead of its chain of shifts, reshapes, products and sums.
mx::array dequantize(const mx::array& w, const mx::array& scales, const mx::array& biases, int group_size, int bits);

// Threads the kernel splits output rows over (1 = the stream's own thread only).
void set_threads(int threads);
int threads();
// The same for products of 4 or more input rows (a verify pass: compute-bound, and nothing
// else runs meanwhile, while a decode step is memory-bound and Python builds the next one).
void set_pass_threads(int threads);
int pass_threads();

// Which kernel runs: "best" (default), or one of `kernel_names()` for tests and benchmarks.
void set_kernel(const std::string& name);
std::string kernel_name();
std::vector<std::string> kernel_names();  // every kernel this CPU can run, best first

class QuantizedMatvec : public mx::Primitive {
 public:
  QuantizedMatvec(mx::Stream stream, int group_size, int bits, bool swiglu = false, bool residual = false)
      : mx::Primitive(stream), group_size_(group_size), bits_(bits), swiglu_(swiglu), residual_(residual) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  bool is_equivalent(const mx::Primitive& other) const override;
  const char* name() const override { return "QuantizedMatvec"; }

 private:
  int group_size_;
  int bits_;
  bool swiglu_;  // inputs: x is (..., 2K), gate | up
  bool residual_;  // inputs: a fifth array added to the result
};

class AffineDequantize : public mx::Primitive {
 public:
  AffineDequantize(mx::Stream stream, int group_size, int bits)
      : mx::Primitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  bool is_equivalent(const mx::Primitive& other) const override;
  const char* name() const override { return "AffineDequantize"; }

 private:
  int group_size_;
  int bits_;
};

}  // namespace glasschat
