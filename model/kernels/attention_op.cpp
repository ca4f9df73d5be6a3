// Graph construction and CPU evaluation of CacheAttention.

#include "attention_op.h"

#include <atomic>
#include <stdexcept>

#include "attention_kernels.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "step_clock.h"

namespace glasschat {

namespace {

std::atomic<int> threads_{1};
std::atomic<const attention::Kernel*> kernel_{nullptr};

const attention::Kernel& current_kernel() {
  const attention::Kernel* k = kernel_.load();
  return k ? *k : attention::best_kernel();
}

void check(bool ok, const std::string& what) {
  if (!ok) {
    throw std::invalid_argument("cache_attention: " + what);
  }
}

// A 4-D array as the kernel reads it; a copy (kept in `copy`) when its last axis is strided.
template <class T>
attention::Strided strided(const mx::array& a, std::vector<T>& copy) {
  const auto& st = a.strides();
  if (st[3] == 1) {
    return {a.data<T>(), int64_t(st[0]), int64_t(st[1]), int64_t(st[2])};
  }
  const int B = a.shape(0), H = a.shape(1), S = a.shape(2), X = a.shape(3);
  copy.resize(a.size());
  const T* src = a.data<T>();
  size_t o = 0;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int s = 0; s < S; s++)
        for (int x = 0; x < X; x++)
          copy[o++] = src[b * st[0] + h * st[1] + s * st[2] + x * st[3]];
  return {copy.data(), int64_t(H) * S * X, int64_t(S) * X, int64_t(X)};
}

// Arrays a side's view points into when it had to be copied.
struct Copies {
  std::vector<float> rows, scales, biases;
  std::vector<uint32_t> packed;
};

attention::Side side_of(const mx::array* parts, int bits, int group_size, Copies& copies) {
  attention::Side side;
  side.bits = bits;
  side.group_size = group_size;
  if (bits == 0) {
    side.rows = strided(parts[0], copies.rows);
  } else {
    side.rows = strided(parts[0], copies.packed);
    side.scales = strided(parts[1], copies.scales);
    side.biases = strided(parts[2], copies.biases);
  }
  return side;
}

void check_4d(const mx::array& a, mx::Dtype dtype, const std::string& name) {
  check(a.ndim() == 4, name + " must be 4-D");
  check(a.dtype() == dtype, name + (dtype == mx::uint32 ? " must be uint32" : " must be float32"));
}

mx::array make(const mx::array& q, std::vector<mx::array> inputs, float scale, float softcap, bool causal,
               int window, int group_size, int bits) {
  check_4d(q, mx::float32, "q");
  check(q.shape(3) <= 256, "head size over 256");
  check(window >= 0 && (window == 0 || causal), "a window needs causal");
  check(softcap >= 0.0f, "softcap must be >= 0");
  const auto& k = inputs[0];
  const int per_side = bits == 0 ? 1 : 3;
  const auto& v = inputs[per_side];
  check(k.shape(0) == q.shape(0) && v.shape(0) == q.shape(0), "batch sizes differ");
  check(k.shape(1) == v.shape(1) && q.shape(1) % k.shape(1) == 0, "query heads must be a multiple of kv heads");
  check(k.shape(2) == v.shape(2), "keys and values differ in length");
  check(!causal || k.shape(2) >= q.shape(2), "causal attention needs at least as many keys as queries");
  inputs.insert(inputs.begin(), q);
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(
      q.shape(), mx::float32,
      std::make_shared<CacheAttention>(stream, scale, softcap, causal, window, group_size, bits), std::move(inputs));
}

}  // namespace

mx::array cache_attention(const mx::array& q, const mx::array& keys, const mx::array& values, float scale,
                          float softcap, bool causal, int window) {
  check_4d(keys, mx::float32, "keys");
  check_4d(values, mx::float32, "values");
  check(keys.shape(3) == q.shape(3) && values.shape(3) == q.shape(3), "head sizes differ");
  return make(q, {keys, values}, scale, softcap, causal, window, 0, 0);
}

mx::array quantized_cache_attention(const mx::array& q, const mx::array& k_packed, const mx::array& k_scales,
                                    const mx::array& k_biases, const mx::array& v_packed, const mx::array& v_scales,
                                    const mx::array& v_biases, int group_size, int bits, float scale, float softcap,
                                    bool causal, int window) {
  check(bits == 4 || bits == 8, "bits must be 4 or 8");
  check(group_size == 32 || group_size == 64 || group_size == 128, "group_size must be 32, 64 or 128");
  const int D = q.shape(3);
  check(D % group_size == 0, "the head size must be a multiple of group_size");
  for (const auto* packed : {&k_packed, &v_packed}) {
    check_4d(*packed, mx::uint32, "packed codes");
    check(packed->shape(3) * 32 / bits == D, "packed codes do not match the head size");
  }
  for (const auto* part : {&k_scales, &k_biases, &v_scales, &v_biases}) {
    check_4d(*part, mx::float32, "scales and biases");
    check(part->shape(3) == D / group_size, "scales and biases must have head size / group_size columns");
  }
  return make(q, {k_packed, k_scales, k_biases, v_packed, v_scales, v_biases}, scale, softcap, causal, window,
              group_size, bits);
}

void set_attention_threads(int threads) {
  threads_.store(std::max(1, threads));
}

int attention_threads() {
  return threads_.load();
}

void set_attention_kernel(const std::string& name) {
  if (name == "best") {
    kernel_.store(nullptr);
    return;
  }
  for (const attention::Kernel* k : attention::usable_kernels()) {
    if (name == k->name) {
      kernel_.store(k);
      return;
    }
  }
  throw std::invalid_argument("cache_attention: no kernel '" + name + "' on this CPU");
}

std::string attention_kernel_name() {
  return current_kernel().name;
}

std::vector<std::string> attention_kernel_names() {
  std::vector<std::string> out;
  for (const attention::Kernel* k : attention::usable_kernels()) {
    out.push_back(k->name);
  }
  return out;
}

std::vector<mx::Shape> CacheAttention::output_shapes(const std::vector<mx::array>& inputs) {
  return {inputs[0].shape()};
}

bool CacheAttention::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const CacheAttention&>(other);
  return scale_ == o.scale_ && softcap_ == o.softcap_ && causal_ == o.causal_ && window_ == o.window_ &&
         group_size_ == o.group_size_ && bits_ == o.bits_;
}

void CacheAttention::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("CacheAttention runs on the CPU only");
}

void CacheAttention::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& out = outputs[0];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const auto& a : inputs) {
    encoder.set_input_array(a);
  }
  encoder.set_output_array(out);
  // The arrays are captured (not just their pointers) so their buffers outlive the task.
  encoder.dispatch([inputs, out, scale = scale_, softcap = softcap_, causal = causal_, window = window_,
                    group_size = group_size_, bits = bits_, kernel = &current_kernel(),
                    threads = threads_.load()]() mutable {
    const StageTimer timer(Stage::attention);
    const auto& q = inputs[0];
    const int B = q.shape(0), H = q.shape(1), L = q.shape(2), D = q.shape(3);
    // q times the scale, contiguous: the kernels read its rows many times.
    std::vector<float> qs(q.size());
    const float* src = q.data<float>();
    const auto& st = q.strides();
    size_t o = 0;
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++)
        for (int i = 0; i < L; i++)
          for (int d = 0; d < D; d++)
            qs[o++] = src[b * st[0] + h * st[1] + i * st[2] + d * st[3]] * scale;
    Copies key_copies, value_copies;
    const int per_side = bits == 0 ? 1 : 3;
    attention::Problem p{};
    p.B = B, p.n_heads = H, p.L = L, p.D = D;
    p.n_kv = inputs[1].shape(1);
    p.S = inputs[1].shape(2);
    p.q = qs.data();
    p.out = out.data<float>();
    p.softcap = softcap;
    p.causal = causal;
    p.window = window;
    p.keys = side_of(&inputs[1], bits, group_size, key_copies);
    p.values = side_of(&inputs[1 + per_side], bits, group_size, value_copies);
    kernel->run(p, threads);
  });
}

}  // namespace glasschat
