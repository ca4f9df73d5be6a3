// Prefill: packed key tiles, row blocks with a running max (see attention_kernels.h).
// Included by attention_core.h once per instruction set.

#pragma once

#include <vector>

#include "attention_simd.h"
#include "pool.h"

namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA {
namespace {

struct PrefillWork {
  const Problem* p;
  int r, tiles, row_blocks;
  float* packed;  // (B, n_kv, tiles, D, kTile): keys transposed per tile, zero past S
  float* values;  // (B, n_kv, S, D) dequantized, or null: read the cache's float rows
};

void pack_task(void* context, int task) {
  const PrefillWork& w = *static_cast<const PrefillWork*>(context);
  const Problem& p = *w.p;
  const int D = p.D;
  const int tile = task % w.tiles, bg = task / w.tiles, g = bg % p.n_kv, b = bg / p.n_kv;
  float* dst = w.packed + (size_t(bg) * w.tiles + tile) * D * kTile;
  float buf[kMaxD];
  for (int t = 0; t < kTile; t++) {
    const int j = tile * kTile + t;
    if (j >= p.S) {
      for (int d = 0; d < D; d++) {
        dst[d * kTile + t] = 0.0f;
      }
      continue;
    }
    const float* k = read_row(p.keys, b, g, j, D, buf);
    for (int d = 0; d < D; d++) {
      dst[d * kTile + t] = k[d];
    }
    if (w.values) {
      read_row(p.values, b, g, j, D, w.values + (size_t(bg) * p.S + j) * D);
    }
  }
}

// scores[r][t] = Q[r] . key t of the tile, for kRowBlock rows and kTile keys (two vectors).
template <int DD>
inline void tile_scores(const float* Q, const float* tile, float (&scores)[kRowBlock][kTile], int D_) {
  const int D = DD ? DD : D_;
  Vec acc[kRowBlock][2] = {};
  for (int d = 0; d < D; d++) {
    const Vec k0 = load(tile + d * kTile), k1 = load(tile + d * kTile + kLanes);
    for (int r = 0; r < kRowBlock; r++) {
      const float qv = Q[r * D + d];
      acc[r][0] += qv * k0;
      acc[r][1] += qv * k1;
    }
  }
  for (int r = 0; r < kRowBlock; r++) {
    store(scores[r], acc[r][0]);
    store(scores[r] + kLanes, acc[r][1]);
  }
}

// O[r] += sum_t weights[r][t] * values[t], over the tile's first n keys. With the head size
// known (DD), O's rows stay in registers across the tile.
template <int DD>
inline void tile_values(const float (&weights)[kRowBlock][kTile], const float* const* values, int n, float* O, int D_) {
  if constexpr (DD != 0 && DD % kLanes == 0 && kRowBlock * DD / kLanes <= 16) {
    constexpr int kVecs = DD / kLanes;
    Vec acc[kRowBlock][kVecs];
    for (int r = 0; r < kRowBlock; r++) {
      for (int c = 0; c < kVecs; c++) {
        acc[r][c] = load(O + r * DD + c * kLanes);
      }
    }
    for (int t = 0; t < n; t++) {
      Vec v[kVecs];
      for (int c = 0; c < kVecs; c++) {
        v[c] = load(values[t] + c * kLanes);
      }
      for (int r = 0; r < kRowBlock; r++) {
        const float weight = weights[r][t];
        for (int c = 0; c < kVecs; c++) {
          acc[r][c] += weight * v[c];
        }
      }
    }
    for (int r = 0; r < kRowBlock; r++) {
      for (int c = 0; c < kVecs; c++) {
        store(O + r * DD + c * kLanes, acc[r][c]);
      }
    }
  } else {
    const int D = DD ? DD : D_;
    for (int t = 0; t < n; t++) {
      for (int r = 0; r < kRowBlock; r++) {
        axpy(O + r * D, weights[r][t], values[t], D);
      }
    }
  }
}

template <int DD>
void prefill_rows(const PrefillWork& w, int task) {
  const Problem& p = *w.p;
  const int D = DD ? DD : p.D;
  // The costliest row blocks (last in a causal chunk) go first, so the threads finish together.
  const int rb = w.row_blocks - 1 - task % w.row_blocks, bh = task / w.row_blocks;
  const int h = bh % p.n_heads, b = bh / p.n_heads, g = h / w.r;
  const int i0 = rb * kRowBlock, rows = std::min(kRowBlock, p.L - i0);
  alignas(64) float Q[kRowBlock * kMaxD] = {};
  alignas(64) float O[kRowBlock * kMaxD] = {};
  std::memcpy(Q, p.q + (size_t(bh) * p.L + i0) * D, sizeof(float) * rows * D);
  float m[kRowBlock], l[kRowBlock];
  std::fill(m, m + kRowBlock, -kInf);
  std::fill(l, l + kRowBlock, 0.0f);
  const int lo = first_visible(p, i0), hi = last_visible(p, i0 + rows - 1);
  const float* packed = w.packed + size_t(b * p.n_kv + g) * w.tiles * D * kTile;
  const float* values[kTile];
  for (int tile = lo / kTile; tile <= hi / kTile; tile++) {
    const int j0 = tile * kTile, n = std::min(kTile, p.S - j0);
    alignas(64) float scores[kRowBlock][kTile];
    tile_scores<DD>(Q, packed + size_t(tile) * D * kTile, scores, D);
    for (int t = 0; t < n; t++) {
      values[t] = w.values ? w.values + (size_t(b * p.n_kv + g) * p.S + j0 + t) * D
                           : row_of<float>(p.values.rows, b, g, j0 + t);
    }
    for (int r = 0; r < kRowBlock; r++) {
      if (r >= rows) {
        std::fill(scores[r], scores[r] + kTile, 0.0f);
        continue;
      }
      float sum;
      std::fill(scores[r] + n, scores[r] + kTile, -kInf);
      // softmax_part's exps are relative to this tile's max; rescale them to the running one.
      const float top = softmax_part(p, i0 + r, j0, n, scores[r], &sum);
      if (top == -kInf) {
        continue;  // this row sees nothing here: its weights are all 0 already
      }
      const float running = std::max(m[r], top);
      const float old_scale = exp_fast(m[r] - running), new_scale = exp_fast(top - running);
      if (old_scale != 1.0f) {
        for (int d = 0; d < D; d++) {
          O[r * D + d] *= old_scale;
        }
      }
      if (new_scale != 1.0f) {
        for (int t = 0; t < n; t++) {
          scores[r][t] *= new_scale;
        }
      }
      l[r] = l[r] * old_scale + sum * new_scale;
      m[r] = running;
    }
    tile_values<DD>(scores, values, n, O, D);
  }
  float* out = p.out + (size_t(bh) * p.L + i0) * D;
  for (int r = 0; r < rows; r++) {
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    for (int d = 0; d < D; d++) {
      out[r * D + d] = O[r * D + d] * inv;
    }
  }
}

void prefill_task(void* context, int task) {
  const PrefillWork& w = *static_cast<const PrefillWork*>(context);
  switch (w.p->D) {
    case 64:
      return prefill_rows<64>(w, task);
    case 128:
      return prefill_rows<128>(w, task);
    default:
      return prefill_rows<0>(w, task);
  }
}

void prefill(const Problem& p, int threads) {
  PrefillWork w{};
  w.p = &p;
  w.r = p.n_heads / p.n_kv;
  w.tiles = (p.S + kTile - 1) / kTile;
  w.row_blocks = (p.L + kRowBlock - 1) / kRowBlock;
  const bool dequantize_values = p.values.bits != 0;
  thread_local std::vector<float> scratch;
  const size_t packed = size_t(p.B) * p.n_kv * w.tiles * p.D * kTile;
  scratch.resize(packed + (dequantize_values ? size_t(p.B) * p.n_kv * p.S * p.D : 0));
  w.packed = scratch.data();
  w.values = dequantize_values ? scratch.data() + packed : nullptr;
  parallel_for(p.B * p.n_kv * w.tiles, threads, pack_task, &w);
  parallel_for(p.B * p.n_heads * w.row_blocks, threads, prefill_task, &w);
  // The scratch is linear in S; a long prefill's is kept for the next chunk, but not a
  // whole generation's worth: drop what is well over this call's need.
  if (scratch.capacity() > 2 * scratch.size() + (1 << 20)) {
    scratch.shrink_to_fit();
  }
}

}  // namespace
}  // namespace glasschat::attention::GLASSCHAT_ATTENTION_ISA
