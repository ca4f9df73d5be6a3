// Python bindings: `model.kernels._qmv`. Built in MLX's nanobind domain, so
// its functions take and return the same `mx.array` objects as mlx.core.

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "mlx/version.h"
#include "attention_op.h"
#include "fused_op.h"
#include "qmv_op.h"
#include "step_clock.h"

namespace nb = nanobind;
using namespace nb::literals;

#define GLASSCHAT_STR(x) #x
#define GLASSCHAT_XSTR(x) GLASSCHAT_STR(x)

NB_MODULE(_qmv, m) {
  m.doc() = "SIMD matrix-vector products over MLX's 4- and 8-bit affine quantized layout, and attention over a KV cache (CPU).";
  m.def("quantized_matvec", &glasschat::quantized_matvec, "x"_a, "w"_a, "scales"_a, "biases"_a, "group_size"_a,
        "bits"_a, "residual"_a = nb::none(), "swiglu"_a = false,
        "x @ dequantize(w, scales, biases).T for float32 x; few rows (decode), on the CPU. With swiglu, x is "
        "gate | up and silu(gate) * up is multiplied; a residual is added to the result.");
  m.def("rms_norm", &glasschat::rms_norm, "x"_a, "weight"_a, "eps"_a,
        "x * rsqrt(mean(x^2) + eps) * weight over the last axis, in one node, on the CPU.");
  m.def("rope_heads", &glasschat::rope_heads, "qkv"_a, "cos"_a, "sin"_a, "offset"_a, "n_heads"_a, "n_kv_heads"_a,
        "head_dim"_a, "rot_dims"_a, "traditional"_a,
        "The fused q|k|v projection split into heads, q and k turned by RoPE from cos/sin tables: [q, k, v].");
  m.def("dequantize", &glasschat::dequantize, "w"_a, "scales"_a, "biases"_a, "group_size"_a, "bits"_a,
        "mx.dequantize's float32 weights in one pass (for prefill's GEMM), on the CPU.");
  m.def("set_threads", &glasschat::set_threads, "threads"_a);
  m.def("threads", &glasschat::threads);
  m.def("set_pass_threads", &glasschat::set_pass_threads, "threads"_a, "Threads for products of 4 or more rows.");
  m.def("pass_threads", &glasschat::pass_threads);
  m.def("set_kernel", &glasschat::set_kernel, "name"_a, "'best', or one of kernel_names() (tests, benchmarks).");
  m.def("kernel_name", &glasschat::kernel_name);
  m.def("kernel_names", &glasschat::kernel_names, "Every kernel this CPU can run, best first.");
  m.def("attention", &glasschat::cache_attention, "q"_a, "keys"_a, "values"_a, "scale"_a, "softcap"_a = 0.0f,
        "causal"_a = true, "window"_a = 0,
        "softmax(q k^T * scale, capped, masked) v over float32 keys and values (B, nkv, S, hd), on the CPU.");
  m.def("quantized_attention", &glasschat::quantized_cache_attention, "q"_a, "k_packed"_a, "k_scales"_a,
        "k_biases"_a, "v_packed"_a, "v_scales"_a, "v_biases"_a, "group_size"_a, "bits"_a, "scale"_a,
        "softcap"_a = 0.0f, "causal"_a = true, "window"_a = 0,
        "The same over keys and values as mx.quantize stores them, on the CPU.");
  m.def("set_attention_threads", &glasschat::set_attention_threads, "threads"_a);
  m.def("attention_threads", &glasschat::attention_threads);
  m.def("set_attention_kernel", &glasschat::set_attention_kernel, "name"_a,
        "'best', or one of attention_kernel_names() (tests, benchmarks).");
  m.def("attention_kernel_name", &glasschat::attention_kernel_name);
  m.def("attention_kernel_names", &glasschat::attention_kernel_names, "Every attention kernel this CPU can run, best first.");
  m.def(
      "time_stages",
      [](bool on) {
        auto& totals = glasschat::stage_totals();
        for (int i = 0; i < glasschat::kStages; i++) {
          totals.ns[i] = 0, totals.calls[i] = 0;
        }
        totals.on = on;
      },
      "on"_a, "Start (True) or stop timing the primitives by kind; either way the totals restart from 0.");
  m.def(
      "stage_times",
      []() {
        auto& totals = glasschat::stage_totals();
        std::vector<std::tuple<std::string, double, int64_t>> out;
        const char* names[] = {"matvec", "attention", "fused"};
        for (int i = 0; i < glasschat::kStages; i++) {
          out.emplace_back(names[i], totals.ns[i].load() * 1e-9, totals.calls[i].load());
        }
        return out;
      },
      "(kind, seconds, calls) spent in the primitives since time_stages(True).");
  // The mlx these headers came from: a different one at run time may not match its C++ ABI.
  m.attr("built_for_mlx") = GLASSCHAT_XSTR(MLX_VERSION_MAJOR) "." GLASSCHAT_XSTR(MLX_VERSION_MINOR) "." GLASSCHAT_XSTR(
      MLX_VERSION_PATCH);
}
