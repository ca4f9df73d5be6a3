// The MLX side of the attention kernels: ops that build a graph node, and the
// Primitive that evaluates it on the CPU by calling into attention_kernels.

#pragma once

#include <string>
#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"

namespace glasschat {

namespace mx = mlx::core;

// softmax(q k^T * scale [soft-capped] [masked]) v with q (B, nh, L, hd) and float32 keys and
// values (B, nkv, S, hd), nh a multiple of nkv. `causal`: query i sits at key S - L + i and
// sees nothing after it; `window` > 0 (with causal): and only the `window` keys up to it;
// `softcap` > 0: scores become softcap * tanh(scores / softcap) first.
mx::array cache_attention(
    const mx::array& q,
    const mx::array& keys,
    const mx::array& values,
    float scale,
    float softcap,
    bool causal,
    int window);

// The same over a quantized cache: keys and values each as `mx.quantize` stores them
// (packed uint32 codes, float32 scales and biases per group), never dequantized whole.
mx::array quantized_cache_attention(
    const mx::array& q,
    const mx::array& k_packed,
    const mx::array& k_scales,
    const mx::array& k_biases,
    const mx::array& v_packed,
    const mx::array& v_scales,
    const mx::array& v_biases,
    int group_size,
    int bits,
    float scale,
    float softcap,
    bool causal,
    int window);

// Threads attention splits its work over (1 = the stream's own thread only).
void set_attention_threads(int threads);
int attention_threads();

// Which kernel runs: "best" (default), or one of `attention_kernel_names()` for tests and benchmarks.
void set_attention_kernel(const std::string& name);
std::string attention_kernel_name();
std::vector<std::string> attention_kernel_names();

class CacheAttention : public mx::Primitive {
 public:
  CacheAttention(mx::Stream stream, float scale, float softcap, bool causal, int window, int group_size, int bits)
      : mx::Primitive(stream),
        scale_(scale),
        softcap_(softcap),
        causal_(causal),
        window_(window),
        group_size_(group_size),
        bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  bool is_equivalent(const mx::Primitive& other) const override;
  const char* name() const override { return "CacheAttention"; }

 private:
  float scale_, softcap_;
  bool causal_;
  int window_, group_size_, bits_;
};

}  // namespace glasschat
