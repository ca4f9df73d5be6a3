// Graph construction and CPU evaluation of the fused ops (see fused_op.h).

#include "fused_op.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "step_clock.h"

namespace glasschat {

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) {
    throw std::invalid_argument(what);
  }
}

// Element (row, col) of a 2-D view of `a` whose last axis is `cols` wide, through its strides.
struct Rows {
  const float* data;
  std::vector<int64_t> strides;
  std::vector<int> shape;

  explicit Rows(const mx::array& a) : data(a.data<float>()) {
    for (int d = 0; d < int(a.ndim()); d++) {
      strides.push_back(a.strides()[d]);
      shape.push_back(a.shape(d));
    }
  }

  // A pointer to row r (rows counted over every axis but the last), whose last stride is 1.
  const float* row(int64_t r) const {
    int64_t loc = 0;
    for (int d = int(shape.size()) - 2; d >= 0; d--) {
      loc += (r % shape[d]) * strides[d];
      r /= shape[d];
    }
    return data + loc;
  }
};

template <class F>
void dispatch(const mx::Stream& stream, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs, F&& f) {
  for (auto& out : outputs) {
    out.set_data(mx::allocator::malloc(out.nbytes()));
  }
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& a : inputs) {
    encoder.set_input_array(a);
  }
  for (auto& out : outputs) {
    encoder.set_output_array(out);
  }
  encoder.dispatch(std::forward<F>(f));
}

// A row-contiguous float32 copy of `a`, or `a` itself when it already is one.
std::vector<float> gather_rows(const mx::array& a) {
  std::vector<float> out(a.size());
  const int cols = a.shape(-1);
  const Rows rows(a);
  const int64_t n = int64_t(a.size()) / std::max(cols, 1);
  const int64_t last = a.strides()[a.ndim() - 1];
  for (int64_t r = 0; r < n; r++) {
    const float* src = rows.row(r);
    for (int c = 0; c < cols; c++) {
      out[r * cols + c] = src[c * last];
    }
  }
  return out;
}

}  // namespace

// --- RMSNorm ------------------------------------------------------------------

mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps) {
  check(x.dtype() == mx::float32 && weight.dtype() == mx::float32, "rms_norm: float32 only");
  check(x.ndim() >= 1 && weight.ndim() == 1 && weight.shape(0) == x.shape(-1), "rms_norm: weight must be (dims,)");
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(x.shape(), mx::float32, std::make_shared<RmsNorm>(stream, eps), {x, weight});
}

std::vector<mx::Shape> RmsNorm::output_shapes(const std::vector<mx::array>& inputs) {
  return {inputs[0].shape()};
}

bool RmsNorm::is_equivalent(const mx::Primitive& other) const {
  return eps_ == static_cast<const RmsNorm&>(other).eps_;
}

void RmsNorm::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("RmsNorm runs on the CPU only");
}

void RmsNorm::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  dispatch(stream(), inputs, outputs, [x = inputs[0], w = inputs[1], out = outputs[0], eps = eps_]() mutable {
    const StageTimer timer(Stage::fused);
    const int dims = x.shape(-1);
    const bool dense = x.flags().row_contiguous && w.flags().row_contiguous;
    std::vector<float> xs, ws;
    const float* xp = x.data<float>();
    const float* wp = w.data<float>();
    if (!dense) {
      xs = gather_rows(x), xp = xs.data();
      ws = gather_rows(w), wp = ws.data();
    }
    float* y = out.data<float>();
    const int64_t rows = int64_t(x.size()) / dims;
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = xp + r * dims;
      // MLX's own arithmetic, to the bit (its CPU backend builds mx.fast.rms_norm from generic
      // ops): a plain running sum of squares, times 1/dims, then 1/sqrt, then (x * r) * w.
      // An 8-lane sum was closer to float64, but moved a family test's logits 1.4e-4 off mlx-lm.
      float sum = 0.0f;
      for (int i = 0; i < dims; i++) {
        sum += xr[i] * xr[i];
      }
      const float inv = 1.0f / std::sqrt(sum * (1.0f / float(dims)) + eps);
      float* yr = y + r * dims;
      for (int i = 0; i < dims; i++) {
        yr[i] = (xr[i] * inv) * wp[i];
      }
    }
  });
}

// --- q, k, v heads with RoPE ------------------------------------------------------

std::vector<mx::array> rope_heads(const mx::array& qkv, const mx::array& cos, const mx::array& sin, int offset,
                                  int n_heads, int n_kv_heads, int head_dim, int rot_dims, bool traditional) {
  check(qkv.dtype() == mx::float32 && cos.dtype() == mx::float32 && sin.dtype() == mx::float32,
        "rope_heads: float32 only");
  check(qkv.ndim() == 3 && qkv.shape(2) == (n_heads + 2 * n_kv_heads) * head_dim,
        "rope_heads: qkv must be (B, L, (n_heads + 2 n_kv_heads) head_dim)");
  check(rot_dims % 2 == 0 && rot_dims <= head_dim, "rope_heads: rot_dims must be even and at most head_dim");
  check(cos.ndim() == 2 && cos.shape(1) == rot_dims / 2 && sin.shape() == cos.shape(),
        "rope_heads: cos and sin must be (positions, rot_dims / 2)");
  check(offset >= 0 && offset + qkv.shape(1) <= cos.shape(0), "rope_heads: positions past the table");
  const int B = qkv.shape(0), L = qkv.shape(1);
  auto stream = mx::default_stream(mx::Device::cpu);
  auto primitive = std::make_shared<RopeHeads>(stream, offset, n_heads, n_kv_heads, head_dim, rot_dims, traditional);
  return mx::array::make_arrays(
      {{B, n_heads, L, head_dim}, {B, n_kv_heads, L, head_dim}, {B, n_kv_heads, L, head_dim}},
      {mx::float32, mx::float32, mx::float32}, primitive, {qkv, cos, sin});
}

std::vector<mx::Shape> RopeHeads::output_shapes(const std::vector<mx::array>& inputs) {
  const int B = inputs[0].shape(0), L = inputs[0].shape(1);
  return {{B, n_heads_, L, head_dim_}, {B, n_kv_, L, head_dim_}, {B, n_kv_, L, head_dim_}};
}

bool RopeHeads::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const RopeHeads&>(other);
  return offset_ == o.offset_ && n_heads_ == o.n_heads_ && n_kv_ == o.n_kv_ && head_dim_ == o.head_dim_ &&
         rot_dims_ == o.rot_dims_ && traditional_ == o.traditional_;
}

void RopeHeads::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("RopeHeads runs on the CPU only");
}

void RopeHeads::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  dispatch(stream(), inputs, outputs,
           [qkv = inputs[0], cos = inputs[1], sin = inputs[2], q = outputs[0], k = outputs[1], v = outputs[2],
            offset = offset_, H = n_heads_, KV = n_kv_, D = head_dim_, rot = rot_dims_,
            traditional = traditional_]() mutable {
             const StageTimer timer(Stage::fused);
             const int B = qkv.shape(0), L = qkv.shape(1), width = qkv.shape(2);
             std::vector<float> copy, cos_copy, sin_copy;
             const float* src = qkv.data<float>();
             const float* cp = cos.data<float>();
             const float* sp = sin.data<float>();
             if (!qkv.flags().row_contiguous) {
               copy = gather_rows(qkv), src = copy.data();
             }
             if (!cos.flags().row_contiguous || !sin.flags().row_contiguous) {
               cos_copy = gather_rows(cos), cp = cos_copy.data();
               sin_copy = gather_rows(sin), sp = sin_copy.data();
             }
             const int half = rot / 2;
             for (int b = 0; b < B; b++) {
               for (int i = 0; i < L; i++) {
                 const float* row = src + (int64_t(b) * L + i) * width;
                 const float* c = cp + int64_t(offset + i) * half;
                 const float* s = sp + int64_t(offset + i) * half;
                 for (int h = 0; h < H + 2 * KV; h++) {
                   const float* x = row + h * D;
                   float* y;
                   if (h < H) {
                     y = q.data<float>() + ((int64_t(b) * H + h) * L + i) * D;
                   } else if (h < H + KV) {
                     y = k.data<float>() + ((int64_t(b) * KV + h - H) * L + i) * D;
                   } else {
                     y = v.data<float>() + ((int64_t(b) * KV + h - H - KV) * L + i) * D;
                     std::copy(x, x + D, y);  // values are not turned
                     continue;
                   }
                   if (traditional) {
                     for (int j = 0; j < half; j++) {
                       const float e = x[2 * j], o = x[2 * j + 1];
                       y[2 * j] = e * c[j] - o * s[j];
                       y[2 * j + 1] = e * s[j] + o * c[j];
                     }
                   } else {
                     for (int j = 0; j < half; j++) {
                       const float a = x[j], z = x[j + half];
                       y[j] = a * c[j] - z * s[j];
                       y[j + half] = a * s[j] + z * c[j];
                     }
                   }
                   std::copy(x + rot, x + D, y + rot);
                 }
               }
             }
           });
}

}  // namespace glasschat
