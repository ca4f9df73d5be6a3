// The portable path: the same integer arithmetic as the SIMD kernels, in plain C++.
// Used where neither AVX2 nor NEON is available, and as the reference the
// SIMD paths are compared against in the kernel's own self-check.

#include <cmath>
#include <cstring>

#include "qmv_kernels.h"

namespace glasschat::qmv {

void quantize_block(const float* x, int16_t* q, float* d) {
  float amax = 0.0f;
  for (int i = 0; i < kBlock; i++) {
    amax = std::fmax(amax, std::fabs(x[i]));
  }
  const float scale = amax / kCodeMax;
  const float inv = amax > 0.0f ? kCodeMax / amax : 0.0f;
  for (int i = 0; i < kBlock; i++) {
    q[i] = static_cast<int16_t>(std::nearbyint(x[i] * inv));
  }
  *d = scale;
}

void group_sums(const float* x, int K, int group_size, float* out) {
  for (int g = 0; g < K / group_size; g++) {
    float s = 0.0f;
    for (int i = 0; i < group_size; i++) {
      s += x[g * group_size + i];
    }
    out[g] = s;
  }
}

namespace {

// Natural order: codes (M, K), block scales (M, K/32), group sums (M, K/G).
void prepare(const Problem& p, Activations& a) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  a.q.resize(size_t(p.M) * p.K);
  a.d.resize(size_t(p.M) * blocks);
  a.xs.resize(size_t(p.M) * groups);
  for (int m = 0; m < p.M; m++) {
    const float* x = p.x + size_t(m) * p.K;
    for (int b = 0; b < blocks; b++) {
      quantize_block(x + b * kBlock, &a.q[size_t(m) * p.K + b * kBlock], &a.d[size_t(m) * blocks + b]);
    }
    group_sums(x, p.K, p.group_size, &a.xs[size_t(m) * groups]);
  }
}

inline int code(const uint8_t* row, int i, int bits) {
  if (bits == 8) {
    return row[i];
  }
  return (row[i / 2] >> (4 * (i % 2))) & 0xF;
}

void rows(const Problem& p, const Activations& a, int r0, int r1) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  const size_t row_bytes = size_t(p.K) * p.bits / 8;
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + j * row_bytes;
    const float* s = p.scales + size_t(j) * groups;
    const float* bias = p.biases + size_t(j) * groups;
    for (int m = 0; m < p.M; m++) {
      const int16_t* q = &a.q[size_t(m) * p.K];
      float acc = 0.0f;
      for (int b = 0; b < blocks; b++) {
        int32_t dot = 0;  // at most 32 * 255 * 32767 < 2^31
        for (int i = b * kBlock; i < (b + 1) * kBlock; i++) {
          dot += code(w, i, p.bits) * q[i];
        }
        acc += s[b * kBlock / p.group_size] * a.d[size_t(m) * blocks + b] * float(dot);
      }
      for (int g = 0; g < groups; g++) {
        acc += bias[g] * a.xs[size_t(m) * groups + g];
      }
      p.y[size_t(m) * p.N + j] = acc;
    }
  }
}

void dequantize(const Problem& p, int r0, int r1) {
  const int groups = p.K / p.group_size;
  const size_t row_bytes = size_t(p.K) * p.bits / 8;
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + j * row_bytes;
    float* out = p.y + size_t(j) * p.K;
    for (int i = 0; i < p.K; i++) {
      const int g = j * groups + i / p.group_size;
      const float scaled = p.scales[g] * float(code(w, i, p.bits));
      out[i] = scaled + p.biases[g];
    }
  }
}

}  // namespace

const Kernel& scalar_kernel() {
  static const Kernel k{"scalar", prepare, rows, dequantize};
  return k;
}

}  // namespace glasschat::qmv
