// Vector pieces the attention kernels are built from (see attention_core.h, which includes
// this once per instruction set, inside that set's namespace).

#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "attention_kernels.h"
#include "fast_exp.h"

namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA {
namespace {

constexpr int kLanes = GLASSCHAT_LANES;
constexpr int kTile = 2 * kLanes;  // keys per packed tile: two vectors of scores per query row
constexpr int kRowBlock = 4;  // query rows a prefill task carries through the tiles
constexpr int kMaxD = 256;  // head sizes up to this (Gemma's 256 is the largest we load)
constexpr float kInf = std::numeric_limits<float>::infinity();

// cap * tanh(s / cap) (Gemma 2's soft-capping), tanh(x) = (1 - e^-2|x|) / (1 + e^-2|x|) with x's sign.
inline float capped(float s, float cap) {
  const float x = s / cap;
  const float e = exp_fast(-2.0f * std::abs(x));
  const float th = (1.0f - e) / (1.0f + e);
  return cap * (x < 0.0f ? -th : th);
}

// Row (b, h, j) of a strided array.
template <class T>
inline const T* row_of(const Strided& a, int b, int h, int j) {
  return static_cast<const T*>(a.data) + b * a.b + h * a.h + j * a.s;
}

// kLanes floats in one vector register.
typedef float Vec __attribute__((vector_size(4 * kLanes)));
typedef float Vec4 __attribute__((vector_size(16)));

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Vec v) {
  std::memcpy(p, &v, sizeof v);
}

// The sum of a vector's lanes, halving it each step (log2 kLanes adds in a chain, not kLanes).
inline float hsum(Vec v) {
#if GLASSCHAT_LANES == 16
  typedef float Vec8 __attribute__((vector_size(32)));
  const Vec8 v8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Vec4 v4 = __builtin_shufflevector(v8, v8, 0, 1, 2, 3) + __builtin_shufflevector(v8, v8, 4, 5, 6, 7);
#elif GLASSCHAT_LANES == 8
  const Vec4 v4 = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#else
  const Vec4 v4 = v;
#endif
  return (v4[0] + v4[2]) + (v4[1] + v4[3]);
}

inline float dot(const float* a, const float* b, int n) {
  Vec acc = {};
  int d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    acc += load(a + d) * load(b + d);
  }
  float s = 0.0f;
  for (; d < n; d++) {
    s += a[d] * b[d];
  }
  return s + hsum(acc);
}

// out[u] = a . b[u] for four rows b: four independent chains the CPU overlaps.
inline void dot4(const float* a, const float* const* b, int n, float* out) {
  Vec acc[4] = {};
  int d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    const Vec x = load(a + d);
    for (int u = 0; u < 4; u++) {
      acc[u] += x * load(b[u] + d);
    }
  }
  for (int u = 0; u < 4; u++) {
    float s = 0.0f;
    for (int e = d; e < n; e++) {
      s += a[e] * b[u][e];
    }
    out[u] = s + hsum(acc[u]);
  }
}

inline void axpy(float* y, float a, const float* x, int n) {
  int d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    store(y + d, load(y + d) + a * load(x + d));
  }
  for (; d < n; d++) {
    y[d] += a * x[d];
  }
}

// A key or value row as floats: straight from the cache when it is float32, else
// dequantized into `buf` (s * q + b per group, as mx.dequantize computes it).
inline const float* read_row(const Side& side, int b, int h, int j, int D, float* buf) {
  if (side.bits == 0) {
    return row_of<float>(side.rows, b, h, j);
  }
  const auto* codes = reinterpret_cast<const uint8_t*>(row_of<uint32_t>(side.rows, b, h, j));
  const float* scales = row_of<float>(side.scales, b, h, j);
  const float* biases = row_of<float>(side.biases, b, h, j);
  const int gs = side.group_size;
  for (int g = 0; g < D / gs; g++) {
    const float s = scales[g], z = biases[g];
    float* out = buf + g * gs;
    if (side.bits == 8) {
      const uint8_t* c = codes + g * gs;
      for (int k = 0; k < gs; k++) {
        out[k] = s * float(c[k]) + z;
      }
    } else {  // 4 bits: byte k holds value 2k in its low nibble and 2k + 1 in its high one
      const uint8_t* c = codes + g * gs / 2;
      for (int k = 0; k < gs / 2; k++) {
        out[2 * k] = s * float(c[k] & 15) + z;
        out[2 * k + 1] = s * float(c[k] >> 4) + z;
      }
    }
  }
  return buf;
}

// The keys query i (of L) may see: [first_visible, last_visible].
inline int first_visible(const Problem& p, int i) {
  return p.window ? std::max(0, p.S - p.L + i - p.window + 1) : 0;
}
inline int last_visible(const Problem& p, int i) {
  return p.causal ? p.S - p.L + i : p.S - 1;
}

// Scores of one query row over keys [j0, j0 + n): capped, hidden ones at -inf, then turned
// into exps relative to their max. Returns the max (-inf: nothing visible, all weights 0)
// and sets `sum`.
inline float softmax_part(const Problem& p, int i, int j0, int n, float* row, float* sum) {
  if (p.softcap > 0.0f) {
    for (int t = 0; t < n; t++) {
      row[t] = capped(row[t], p.softcap);
    }
  }
  const int lo = std::clamp(first_visible(p, i) - j0, 0, n);
  const int hi = std::clamp(last_visible(p, i) + 1 - j0, lo, n);
  std::fill(row, row + lo, -kInf);
  std::fill(row + hi, row + n, -kInf);
  // Lane-wise max and sum: each lane on its own, so the loops vectorize (a running scalar
  // max or sum is one dependent chain, and it kept the exps between them scalar too).
  float tops[kLanes];
  std::fill(tops, tops + kLanes, -kInf);
  int t = lo;
  for (; t + kLanes <= hi; t += kLanes) {
    for (int u = 0; u < kLanes; u++) {
      tops[u] = std::max(tops[u], row[t + u]);
    }
  }
  float top = -kInf;
  for (; t < hi; t++) {
    top = std::max(top, row[t]);
  }
  for (int u = 0; u < kLanes; u++) {
    top = std::max(top, tops[u]);
  }
  float s = 0.0f;
  if (top == -kInf) {
    std::fill(row, row + n, 0.0f);  // weights of 0, not exps of -inf minus -inf
  } else {
    for (t = 0; t < n; t++) {
      row[t] = exp_fast(row[t] - top);
    }
    Vec acc = {};
    for (t = 0; t + kLanes <= n; t += kLanes) {
      acc += load(row + t);
    }
    for (; t < n; t++) {
      s += row[t];
    }
    s += hsum(acc);
  }
  *sum = s;
  return top;
}

}  // namespace
}  // namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA
