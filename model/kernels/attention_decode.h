// Decode: split-K over blocks of keys, merged per row (see attention_kernels.h). Included by
// attention_core.h once per instruction set.

#pragma once

#include <vector>

#include "attention_simd.h"
#include "pool.h"

namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA {
namespace {

constexpr int kDecodeBlock = 512;  // keys per task: 8 tasks a head at 4,096 keys

struct DecodeWork {
  const Problem* p;
  int r, R, blocks, block;  // query heads per kv head; their rows (r * L); key blocks and their size
  float* m;  // per task: R maxima
  float* l;  // per task: R sums of exps
  float* acc;  // per task: R rows of D, the exps' weighted sum of values
};

// out[r] = sum_t weights[r][t] * values[t] for kRowBlock rows (the first `rows` written). With the
// head size known (DD), the sums stay in registers across the keys.
template <int DD>
inline void weigh_values(const float* const* weights, const float* const* values, int n, float* out, int rows,
                         int D_) {
  if constexpr (DD != 0 && DD % kLanes == 0 && kRowBlock * DD / kLanes <= 16) {
    constexpr int kVecs = DD / kLanes;
    Vec sums[kRowBlock][kVecs] = {};
    for (int t = 0; t < n; t++) {
      Vec v[kVecs];
      for (int c = 0; c < kVecs; c++) {
        v[c] = load(values[t] + c * kLanes);
      }
      for (int r = 0; r < kRowBlock; r++) {
        const float weight = weights[r][t];
        for (int c = 0; c < kVecs; c++) {
          sums[r][c] += weight * v[c];
        }
      }
    }
    for (int r = 0; r < rows; r++) {
      for (int c = 0; c < kVecs; c++) {
        store(out + r * DD + c * kLanes, sums[r][c]);
      }
    }
  } else {
    const int D = DD ? DD : D_;
    for (int t = 0; t < n; t++) {
      for (int r = 0; r < rows; r++) {
        if (weights[r][t] != 0.0f) {
          axpy(out + r * D, weights[r][t], values[t], D);
        }
      }
    }
  }
}

void decode_task(void* context, int task) {
  const DecodeWork& w = *static_cast<const DecodeWork*>(context);
  const Problem& p = *w.p;
  const int D = p.D, R = w.R, L = p.L;
  const int blk = task % w.blocks, g = (task / w.blocks) % p.n_kv, b = task / w.blocks / p.n_kv;
  float* m = w.m + size_t(task) * R;
  float* l = w.l + size_t(task) * R;
  float* acc = w.acc + size_t(task) * R * D;
  std::fill(m, m + R, -kInf);
  std::fill(l, l + R, 0.0f);
  std::fill(acc, acc + size_t(R) * D, 0.0f);
  const int k0 = blk * w.block, k1 = std::min(p.S, k0 + w.block);
  const int j0 = std::max(k0, first_visible(p, 0)), j1 = std::min(k1, last_visible(p, L - 1) + 1);
  if (j0 >= j1) {
    return;
  }
  const int n = j1 - j0;
  thread_local std::vector<float> score_buffer, row_buffer;
  score_buffer.resize(size_t(R) * n);
  row_buffer.resize(4 * D);
  // Plain pointers: each access to a thread_local object goes through a function call.
  float* scores = score_buffer.data();
  float* buf = row_buffer.data();
  // The kv head's query rows are consecutive: its r heads, each with L rows.
  const float* q = p.q + size_t(b * p.n_heads + g * w.r) * L * D;
  int j = j0;
  for (; j + 4 <= j1; j += 4) {
    const float* k[4];
    for (int u = 0; u < 4; u++) {
      k[u] = read_row(p.keys, b, g, j + u, D, buf + u * D);
    }
    for (int row = 0; row < R; row++) {
      dot4(q + size_t(row) * D, k, D, &scores[size_t(row) * n + (j - j0)]);
    }
  }
  for (; j < j1; j++) {
    const float* k = read_row(p.keys, b, g, j, D, buf);
    for (int row = 0; row < R; row++) {
      scores[size_t(row) * n + (j - j0)] = dot(q + size_t(row) * D, k, D);
    }
  }
  for (int row = 0; row < R; row++) {
    m[row] = softmax_part(p, row % L, j0, n, &scores[size_t(row) * n], &l[row]);
  }
  // The values: rows of a quantized cache dequantized once into the scratch, then kRowBlock
  // query rows at a time, their sums kept in registers across the block's keys.
  thread_local std::vector<float> value_buffer, zero_buffer;
  thread_local std::vector<const float*> value_rows;
  value_rows.resize(n);
  if (p.values.bits != 0) {
    value_buffer.resize(size_t(n) * D);
  }
  for (j = j0; j < j1; j++) {
    float* dst = p.values.bits != 0 ? value_buffer.data() + size_t(j - j0) * D : nullptr;
    value_rows[j - j0] = read_row(p.values, b, g, j, D, dst);
  }
  zero_buffer.assign(n, 0.0f);
  for (int row = 0; row < R; row += kRowBlock) {
    const float* weights[kRowBlock];
    for (int r = 0; r < kRowBlock; r++) {
      weights[r] = row + r < R ? scores + size_t(row + r) * n : zero_buffer.data();
    }
    float* out = acc + size_t(row) * D;
    const int rows = std::min(kRowBlock, R - row);
    switch (D) {
      case 64:
        weigh_values<64>(weights, value_rows.data(), n, out, rows, D);
        break;
      case 128:
        weigh_values<128>(weights, value_rows.data(), n, out, rows, D);
        break;
      default:
        weigh_values<0>(weights, value_rows.data(), n, out, rows, D);
    }
  }
}

// Rows of one (b, kv head): out = sum_b e^(m_b - M) acc_b / sum_b e^(m_b - M) l_b.
void decode_merge(void* context, int bg) {
  const DecodeWork& w = *static_cast<const DecodeWork*>(context);
  const Problem& p = *w.p;
  const int D = p.D, R = w.R;
  float* out = p.out + size_t(bg) * R * D;  // (b, g*r .. g*r + r - 1, L, D) is one run
  for (int row = 0; row < R; row++) {
    float top = -kInf;
    for (int blk = 0; blk < w.blocks; blk++) {
      top = std::max(top, w.m[size_t(bg * w.blocks + blk) * R + row]);
    }
    float* o = out + size_t(row) * D;
    std::fill(o, o + D, 0.0f);
    if (top == -kInf) {
      continue;  // no key visible (only an explicit window can do that): zeros
    }
    float den = 0.0f;
    for (int blk = 0; blk < w.blocks; blk++) {
      const size_t task = size_t(bg) * w.blocks + blk;
      const float f = exp_fast(w.m[task * R + row] - top);
      if (f != 0.0f) {
        den += f * w.l[task * R + row];
        axpy(o, f, w.acc + (task * R + row) * D, D);
      }
    }
    const float inv = 1.0f / den;
    for (int d = 0; d < D; d++) {
      o[d] *= inv;
    }
  }
}

// Below this many keys (over every kv head) one thread does it all: waking another costs more.
constexpr size_t kParallelKeys = 4096;

void decode(const Problem& p, int threads) {
  if (size_t(p.B) * p.n_kv * p.S < kParallelKeys) {
    threads = 1;
  }
  DecodeWork w{};
  w.p = &p;
  w.r = p.n_heads / p.n_kv;
  w.R = w.r * p.L;
  // One block per head when a single thread runs it; else blocks small enough to share out.
  w.block = threads > 1 ? kDecodeBlock : std::max(p.S, 1);
  w.blocks = (p.S + w.block - 1) / w.block;
  const int tasks = p.B * p.n_kv * w.blocks;
  thread_local std::vector<float> partial;
  partial.resize(size_t(tasks) * w.R * (p.D + 2));
  w.m = partial.data();
  w.l = w.m + size_t(tasks) * w.R;
  w.acc = w.l + size_t(tasks) * w.R;
  parallel_for(tasks, threads, decode_task, &w);
  const int groups = p.B * p.n_kv;
  parallel_for(groups, w.blocks > 1 ? threads : 1, decode_merge, &w);
}

}  // namespace
}  // namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA
