// The attention kernels (model/kernels/attention_*) against a double-precision reference, free of
// MLX and Python, so it runs where they do not: `make test-arm64` (tests/arm64/run.sh) cross-compiles
// it for arm64 and runs it under qemu, which checks the NEON build of the generic source. Float, 8-
// and 4-bit keys and values; decode, verify and prefill rows; windows and soft-capping; every kernel
// the CPU runs, on 1 and 2 threads. Exit status 0: all ok.
#include <cmath>
#include <cstdio>
#include <random>
#include <tuple>
#include <vector>
struct Case { int L, S, window; float cap; };
#include "attention_kernels.h"
using namespace glasschat::attention;
int main() {
  std::mt19937 rng(3); std::normal_distribution<float> nd;
  int fails = 0;
  for (int bits : {0, 8, 4})
  for (Case c : std::vector<Case>{{1, 1, 0, 0}, {1, 700, 0, 0}, {3, 1500, 0, 30}, {8, 600, 100, 0}, {57, 300, 40, 20}, {256, 600, 0, 0}}) {
    const int L = c.L, S = c.S, window = c.window; const float cap = c.cap;
    const int H = 9, KV = 3, D = 64, gs = 32;
    std::vector<float> q(H * L * D), k(KV * S * D), v(KV * S * D), out(H * L * D);
    for (auto& x : q) x = nd(rng) * 0.125f; for (auto& x : k) x = 2 * nd(rng); for (auto& x : v) x = nd(rng);
    // quantize k, v (MLX affine: per group min/max -> scale, bias)
    std::vector<uint32_t> kp, vp; std::vector<float> ks, kb, vs, vb;
    auto quant = [&](std::vector<float>& x, std::vector<uint32_t>& packed, std::vector<float>& sc, std::vector<float>& bi) {
      const int levels = (1 << bits) - 1, groups = int(x.size()) / gs;
      packed.assign(x.size() * bits / 32, 0); sc.resize(groups); bi.resize(groups);
      auto* bytes = reinterpret_cast<uint8_t*>(packed.data());
      for (int g = 0; g < groups; g++) {
        float lo = 1e30f, hi = -1e30f;
        for (int i = 0; i < gs; i++) lo = std::min(lo, x[g * gs + i]), hi = std::max(hi, x[g * gs + i]);
        float s = (hi - lo) / levels; sc[g] = s; bi[g] = lo;
        for (int i = 0; i < gs; i++) {
          int c = int(std::lround((x[g * gs + i] - lo) / s)); c = std::max(0, std::min(levels, c));
          x[g * gs + i] = s * c + lo;  // the reference sees what the kernel dequantizes
          size_t idx = size_t(g) * gs + i;
          if (bits == 8) bytes[idx] = uint8_t(c); else bytes[idx / 2] |= uint8_t(c << (4 * (idx % 2)));
        }
      }
    };
    Problem p{}; p.B = 1; p.n_heads = H; p.n_kv = KV; p.L = L; p.S = S; p.D = D; p.q = q.data(); p.out = out.data();
    p.causal = true; p.window = window; p.softcap = cap;
    if (bits) {
      quant(k, kp, ks, kb); quant(v, vp, vs, vb);
      const int64_t w = D * bits / 32, G = D / gs;
      p.keys = {bits, gs, {kp.data(), KV * S * w, S * w, w}, {ks.data(), KV * S * G, S * G, G}, {kb.data(), KV * S * G, S * G, G}};
      p.values = {bits, gs, {vp.data(), KV * S * w, S * w, w}, {vs.data(), KV * S * G, S * G, G}, {vb.data(), KV * S * G, S * G, G}};
    } else {
      p.keys.rows = {k.data(), (int64_t)KV * S * D, (int64_t)S * D, D}; p.values.rows = {v.data(), (int64_t)KV * S * D, (int64_t)S * D, D};
    }
    for (const Kernel* ker : usable_kernels()) for (int threads : {1, 2}) {
      ker->run(p, threads);
      double worst = 0;
      for (int h = 0; h < H; h++) for (int i = 0; i < L; i++) {
        const int pos = S - L + i; std::vector<double> s(S); double m = -1e300;
        for (int j = 0; j < S; j++) {
          bool vis = j <= pos && (!window || pos - j < window);
          double d = 0; for (int t = 0; t < D; t++) d += double(q[(h * L + i) * D + t]) * k[((h / 3) * S + j) * D + t];
          if (cap) d = cap * std::tanh(d / cap);
          s[j] = vis ? d : -INFINITY; m = std::max(m, s[j]);
        }
        double den = 0; for (int j = 0; j < S; j++) den += (s[j] = std::exp(s[j] - m));
        for (int t = 0; t < D; t++) {
          double o = 0; for (int j = 0; j < S; j++) o += s[j] * v[((h / 3) * S + j) * D + t];
          worst = std::max(worst, std::abs(o / den - out[(h * L + i) * D + t]));
        }
      }
      const bool ok = worst < 2e-5;
      fails += !ok;
      printf("%-8s bits=%d L=%3d S=%4d window=%3d cap=%2.0f threads=%d: worst %.2e %s\n", ker->name, bits, L, S, window, cap, threads, worst, ok ? "ok" : "FAIL");
    }
  }
  printf("%s\n", fails ? "FAILED" : "all ok");
  return fails != 0;
}
