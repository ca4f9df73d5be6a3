// Small fused ops that run between a decode step's matrix products, each one graph node
// where MLX's CPU backend builds several: on the CPU, mx.fast.rms_norm falls back to ~10
// generic ops, and RoPE from a table plus the split into heads to ~30 a layer. A decode
// step is ~2,400 such nodes for 30 layers, each paying the scheduler's fixed cost.

#pragma once

#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"

namespace glasschat {

namespace mx = mlx::core;

// x * rsqrt(mean(x^2, last axis) + eps) * weight, float32.
mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps);

// The fused q|k|v projection's output (B, L, (nh + 2 nkv) * hd) split into heads, q and k
// turned by RoPE at positions offset .. offset + L - 1 from cos/sin tables (positions,
// rot_dims / 2): [q (B, nh, L, hd), k (B, nkv, L, hd), v (B, nkv, L, hd)]. `traditional`:
// pairs (2i, 2i + 1), else (i, i + rot_dims / 2); features past rot_dims pass through.
std::vector<mx::array> rope_heads(
    const mx::array& qkv,
    const mx::array& cos,
    const mx::array& sin,
    int offset,
    int n_heads,
    int n_kv_heads,
    int head_dim,
    int rot_dims,
    bool traditional);

class RmsNorm : public mx::Primitive {
 public:
  RmsNorm(mx::Stream stream, float eps) : mx::Primitive(stream), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  bool is_equivalent(const mx::Primitive& other) const override;
  const char* name() const override { return "RmsNorm"; }

 private:
  float eps_;
};

class RopeHeads : public mx::Primitive {
 public:
  RopeHeads(mx::Stream stream, int offset, int n_heads, int n_kv, int head_dim, int rot_dims, bool traditional)
      : mx::Primitive(stream),
        offset_(offset),
        n_heads_(n_heads),
        n_kv_(n_kv),
        head_dim_(head_dim),
        rot_dims_(rot_dims),
        traditional_(traditional) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;
  bool is_equivalent(const mx::Primitive& other) const override;
  const char* name() const override { return "RopeHeads"; }

 private:
  int offset_, n_heads_, n_kv_, head_dim_, rot_dims_;
  bool traditional_;
};

}  // namespace glasschat
