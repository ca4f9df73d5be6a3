// Graph construction and CPU evaluation of QuantizedMatvec.

#include "qmv_op.h"

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

#include "mlx/allocator.h"
#include "fast_exp.h"
#include "mlx/backend/cpu/encoder.h"
#include "qmv_kernels.h"
#include "step_clock.h"

namespace glasschat {

namespace {

std::atomic<int> threads_{1};
std::atomic<int> pass_threads_{1};  // for products of kPassRows or more input rows
// Below 4 rows a second thread's wake-up outweighs its share: on 2 cores, the default model's
// forward pass of 2, 3, 4 and 8 rows took 33.9, 34.8, 37.3 and 49.9 ms with 2 threads against
// 29.5, 32.6, 39.9 and 61.8 with 1 (best of 15 interleaved).
constexpr int kPassRows = 4;
std::atomic<const qmv::Kernel*> kernel_{nullptr};

const qmv::Kernel& current_kernel() {
  const qmv::Kernel* k = kernel_.load();
  return k ? *k : qmv::best_kernel();
}

void check(bool ok, const std::string& what) {
  if (!ok) {
    throw std::invalid_argument("quantized_matvec: " + what);
  }
}

// A row-contiguous float32 copy of `a`, for the rare non-contiguous input.
std::vector<float> gather(const mx::array& a) {
  std::vector<float> out(a.size());
  const float* src = a.data<float>();
  const auto& shape = a.shape();
  const auto& strides = a.strides();
  for (size_t i = 0; i < a.size(); i++) {
    size_t rest = i;
    int64_t loc = 0;
    for (int d = int(shape.size()) - 1; d >= 0; d--) {
      loc += int64_t(rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    out[i] = src[loc];
  }
  return out;
}

// Row-contiguous pointers to a product's weights, copying the rare strided view.
struct Weights {
  std::vector<uint32_t> w_copy;
  std::vector<float> s_copy, b_copy;
  const uint32_t* w;
  const float* s;
  const float* b;

  Weights(const mx::array& w_, const mx::array& s_, const mx::array& b_) {
    w = w_.data<uint32_t>(), s = s_.data<float>(), b = b_.data<float>();
    if (!s_.flags().row_contiguous) {
      s_copy = gather(s_), s = s_copy.data();
    }
    if (!b_.flags().row_contiguous) {
      b_copy = gather(b_), b = b_copy.data();
    }
    if (!w_.flags().row_contiguous) {
      w_copy.resize(w_.size());
      for (size_t i = 0; i < w_.size(); i++) {
        const int r = int(i / w_.shape(1)), c = int(i % w_.shape(1));
        w_copy[i] = w[int64_t(r) * w_.strides(0) + int64_t(c) * w_.strides(1)];
      }
      w = w_copy.data();
    }
  }
};

}  // namespace

void set_threads(int threads) {
  threads_.store(std::max(1, threads));
}

void set_pass_threads(int threads) {
  pass_threads_.store(std::max(1, threads));
}

int pass_threads() {
  return pass_threads_.load();
}

int threads() {
  return threads_.load();
}

void set_kernel(const std::string& name) {
  if (name == "best") {
    kernel_.store(nullptr);
    return;
  }
  for (const qmv::Kernel* k : qmv::usable_kernels()) {
    if (name == k->name) {
      kernel_.store(k);
      return;
    }
  }
  throw std::invalid_argument("quantized_matvec: no kernel '" + name + "' on this CPU");
}

std::vector<std::string> kernel_names() {
  std::vector<std::string> out;
  for (const qmv::Kernel* k : qmv::usable_kernels()) {
    out.push_back(k->name);
  }
  return out;
}

std::string kernel_name() {
  return current_kernel().name;
}

// The checks both ops make of the weights; returns K.
int check_weights(const mx::array& w, const mx::array& scales, const mx::array& biases, int group_size, int bits) {
  check(bits == 4 || bits == 8, "bits must be 4 or 8");
  check(group_size == 32 || group_size == 64 || group_size == 128, "group_size must be 32, 64 or 128");
  check(w.dtype() == mx::uint32 && w.ndim() == 2, "w must be a 2-D uint32 array");
  check(scales.dtype() == mx::float32 && biases.dtype() == mx::float32, "scales and biases must be float32");
  const int N = w.shape(0);
  const int K = w.shape(1) * 32 / bits;
  check(K % group_size == 0, "the input size must be a multiple of group_size");
  const mx::Shape groups{N, K / group_size};
  check(scales.shape() == groups && biases.shape() == groups, "scales and biases must be (N, K / group_size)");
  return K;
}

mx::array quantized_matvec(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    const std::optional<mx::array>& residual,
    bool swiglu) {
  const int K = check_weights(w, scales, biases, group_size, bits);
  const int N = w.shape(0);
  check(x.dtype() == mx::float32, "x must be float32");
  const int width = swiglu ? 2 * K : K;
  check(x.ndim() >= 1 && x.shape(-1) == width, "x's last axis must be " + std::to_string(width));
  auto shape = x.shape();
  shape.back() = N;
  std::vector<mx::array> inputs{x, w, scales, biases};
  if (residual) {
    check(residual->dtype() == mx::float32 && residual->shape() == shape, "the residual must be float32, shaped as the output");
    inputs.push_back(*residual);
  }
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(
      shape, mx::float32, std::make_shared<QuantizedMatvec>(stream, group_size, bits, swiglu, bool(residual)),
      std::move(inputs));
}

std::vector<mx::Shape> QuantizedMatvec::output_shapes(const std::vector<mx::array>& inputs) {
  auto shape = inputs[0].shape();
  shape.back() = inputs[1].shape(0);
  return {shape};
}

bool QuantizedMatvec::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const QuantizedMatvec&>(other);
  return group_size_ == o.group_size_ && bits_ == o.bits_ && swiglu_ == o.swiglu_ && residual_ == o.residual_;
}

void QuantizedMatvec::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("QuantizedMatvec runs on the CPU only");
}

void QuantizedMatvec::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& out = outputs[0];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& a : inputs) {
    encoder.set_input_array(a);
  }
  encoder.set_output_array(out);
  // The arrays are captured (not just their pointers) so their buffers
  // outlive the task on the stream's thread.
  encoder.dispatch([x = inputs[0], w = inputs[1], s = inputs[2], b = inputs[3], out, gs = group_size_,
                    bits = bits_, kernel = &current_kernel(), threads = threads_.load(),
                    pass_threads = pass_threads_.load(), swiglu = swiglu_,
                    residual = residual_ ? inputs[4] : mx::array(0.0f)]() mutable {
    const StageTimer timer(Stage::matvec);
    std::vector<float> xs;
    const float* xp = x.data<float>();
    if (!x.flags().row_contiguous) {
      xs = gather(x);
      xp = xs.data();
    }
    const Weights weights(w, s, b);
    const int N = w.shape(0);
    const int K = w.shape(1) * 32 / bits;
    const int M = int(x.size() / (swiglu ? 2 * K : K));
    std::vector<float> act;
    if (swiglu) {  // silu(gate) * up = gate / (1 + e^-gate) * up, as model/network/fast_math.py
      act.resize(size_t(M) * K);
      for (int m = 0; m < M; m++) {
        const float* gate = xp + size_t(m) * 2 * K;
        const float* up = gate + K;
        float* a = act.data() + size_t(m) * K;
        for (int i = 0; i < K; i++) {
          a[i] = gate[i] / (1.0f + exp_fast(-gate[i])) * up[i];
        }
      }
      xp = act.data();
    }
    qmv::Problem p{xp, weights.w, weights.s, weights.b, out.data<float>(), M, N, K, gs, bits};
    qmv::run(p, *kernel, M >= kPassRows ? pass_threads : threads);
    if (residual.size() == out.size()) {
      std::vector<float> rs;
      const float* r = residual.data<float>();
      if (!residual.flags().row_contiguous) {
        rs = gather(residual);
        r = rs.data();
      }
      float* y = out.data<float>();
      for (size_t i = 0; i < out.size(); i++) {
        y[i] += r[i];
      }
    }
  });
}

mx::array dequantize(const mx::array& w, const mx::array& scales, const mx::array& biases, int group_size, int bits) {
  const int K = check_weights(w, scales, biases, group_size, bits);
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(
      {w.shape(0), K}, mx::float32, std::make_shared<AffineDequantize>(stream, group_size, bits), {w, scales, biases});
}

std::vector<mx::Shape> AffineDequantize::output_shapes(const std::vector<mx::array>& inputs) {
  return {{inputs[0].shape(0), inputs[0].shape(1) * 32 / bits_}};
}

bool AffineDequantize::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const AffineDequantize&>(other);
  return group_size_ == o.group_size_ && bits_ == o.bits_;
}

void AffineDequantize::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("AffineDequantize runs on the CPU only");
}

void AffineDequantize::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& out = outputs[0];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& a : inputs) {
    encoder.set_input_array(a);
  }
  encoder.set_output_array(out);
  encoder.dispatch([w = inputs[0], s = inputs[1], b = inputs[2], out, gs = group_size_, bits = bits_,
                    kernel = &current_kernel(), threads = threads_.load()]() mutable {
    const Weights weights(w, s, b);
    const int N = w.shape(0), K = w.shape(1) * 32 / bits;
    qmv::Problem p{nullptr, weights.w, weights.s, weights.b, out.data<float>(), 0, N, K, gs, bits};
    qmv::run_dequantize(p, *kernel, threads);
  });
}

}  // namespace glasschat
