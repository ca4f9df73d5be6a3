// AVX-512 + VNNI kernels (x86-64: Ice Lake, Sapphire Rapids, Zen 4 and later).
// This file alone is compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni; `best_kernel()` calls it only after checking the CPU at run time.
//
// Why a second x86 kernel: a prompt-lookup verify pass multiplies up to 8
// rows by each weight matrix. The weights are read and decoded once for all
// rows (as in the AVX2 kernel), so what an extra row costs is its own integer
// dot products and scaling, ~15 vector instructions per 64 weights on AVX2.
// Here:
//  - one 512-bit vector holds four (4-bit) or two (8-bit) blocks of 32 weights,
//    each block in its own 128-bit lanes, so one convert and one FMA scale all
//    of them at once;
//  - VNNI's vpdpwssd multiplies int16 pairs and adds them to the int32 sums in
//    one instruction (AVX2 needs a madd and an add);
//  - the bias term sum_g b_g * X_g is a short dot product after the row's
//    main loop, not an FMA per block.
// That is 7 vector instructions (and 5 loads) per 128 weights per row for 4
// bits. Measured on a 2-core Sapphire Rapids VM, best of 20 interleaved
// rounds: 8 rows through a 3072x576 4-bit matrix 358 us against AVX2's 412,
// one row through the 49152x576 8-bit head 1.64 ms against 1.90. Less than the
// instruction counts promise: 512-bit integer multiplies issue on fewer ports.
// The arithmetic (int16 input codes, exact int32 block sums) is the same as
// the scalar and AVX2 kernels'; only the order of float additions differs.

#include <immintrin.h>

#include <algorithm>

#include "qmv_kernels.h"

namespace glasschat::qmv {

namespace {

// As in the AVX2 kernel: the hardware prefetcher falls behind on the three
// streams (codes, scales, biases), so fetch ~2 KB of rows ahead.
constexpr size_t kPrefetchBytes = 2048;

inline void prefetch_row(const uint8_t* w, size_t row_bytes, const float* s, const float* b, int groups) {
  for (size_t o = 0; o < row_bytes; o += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w) + o, _MM_HINT_T0);
  }
  for (size_t o = 0; o < groups * sizeof(float); o += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(s) + o, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b) + o, _MM_HINT_T0);
  }
}

// One step of the main loop reads 64 bytes of a weight row: 4 blocks of 4-bit
// codes or 2 blocks of 8-bit ones.
constexpr int kStepBytes = 64;

constexpr int blocks_per_step(int bits) {
  return kStepBytes * 8 / bits / kBlock;
}

// Where a product's activations sit (per input row: `steps` steps of codes and
// of 16 block scales, then the group sums padded to whole vectors).
struct Shape {
  int blocks, groups, per, steps, full, gpad;
  size_t qstride;  // int16 codes per input row

  Shape(const Problem& p)
      : blocks(p.K / kBlock),
        groups(p.K / p.group_size),
        per(blocks_per_step(p.bits)),
        steps((blocks + per - 1) / per),
        full(blocks / per),
        gpad((groups + 15) / 16 * 16),
        qstride(size_t(steps) * per * kBlock) {}
};

// The input's int16 codes, in the order the weight codes come out of a step:
//   4 bits: unpacking a step's 64 bytes (per 128-bit lane L: bytes 16L..16L+15,
//     block L) gives [even codes 0-14 | codes 16-30 | odd 1-15 | odd 17-31] of
//     each block, one vector each, block L in lane L;
//   8 bits: [codes 0-7 | 16-23] and [8-15 | 24-31] of each block, the first
//     block in lanes 0-1 and the second in lanes 2-3.
// Block scales: each block's d spread over the float lanes its int32 sums land in.
void prepare(const Problem& p, Activations& a) {
  const Shape sh(p);
  a.q.assign(size_t(p.M) * sh.qstride, 0);  // zeros past K: the masked last step reads them
  a.d.assign(size_t(p.M) * sh.steps * 16, 0.0f);
  a.xs.assign(size_t(p.M) * sh.gpad, 0.0f);
  const int lanes = 16 / sh.per;  // float lanes per block
  int16_t c[kBlock];
  for (int m = 0; m < p.M; m++) {
    const float* x = p.x + size_t(m) * p.K;
    group_sums(x, p.K, p.group_size, &a.xs[size_t(m) * sh.gpad]);
    for (int blk = 0; blk < sh.blocks; blk++) {
      float d;
      quantize_block(x + kBlock * blk, c, &d);
      const int step = blk / sh.per, at = blk % sh.per;
      std::fill_n(&a.d[(size_t(m) * sh.steps + step) * 16 + at * lanes], lanes, d);
      int16_t* q = &a.q[size_t(m) * sh.qstride + size_t(step) * sh.per * kBlock];
      if (p.bits == 4) {
        for (int e = 0; e < 8; e++) {
          q[8 * at + e] = c[2 * e];
          q[32 + 8 * at + e] = c[16 + 2 * e];
          q[64 + 8 * at + e] = c[2 * e + 1];
          q[96 + 8 * at + e] = c[17 + 2 * e];
        }
      } else {
        for (int half = 0; half < 2; half++) {
          const int lane = 2 * at + half;
          for (int e = 0; e < 8; e++) {
            q[8 * lane + e] = c[16 * half + e];
            q[32 + 8 * lane + e] = c[16 * half + 8 + e];
          }
        }
      }
    }
  }
}

// The weight row's scales (or biases) for one step, each over its blocks' float lanes.
struct Spread {
  __m512i idx;  // float lane -> group, counted from the step's first group
  int step_groups;  // groups one step spans (at least 1)
  int step_shift;  // step * per * 32 / group_size, as a shift (group sizes are powers of two)
  int groups;

  Spread(const Problem& p, int per) : groups(p.K / p.group_size) {
    alignas(64) int lanes[16];
    for (int i = 0; i < 16; i++) {
      lanes[i] = (i / (16 / per)) * kBlock / p.group_size;
    }
    idx = _mm512_load_si512(lanes);
    step_groups = std::max(1, per * kBlock / p.group_size);
    step_shift = __builtin_ctz(p.group_size) - __builtin_ctz(per * kBlock);
  }

  inline __m512 operator()(const float* v, int step) const {
    const int g0 = step_shift >= 0 ? step >> step_shift : step << -step_shift;
    const int count = std::min(step_groups, groups - g0);
    const __m128 vals = _mm_maskz_loadu_ps(__mmask8((1u << count) - 1), v + g0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(vals));
  }
};

// acc[m] += the step's block sums for every input row, scaled.
template <int M, int kBits>
__attribute__((always_inline)) inline void step_rows(__m512i bytes, __m512 sv, const Activations& a, const Shape& sh, int step, __m512 (&acc)[M]) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i u0 = _mm512_unpacklo_epi8(bytes, zero), u1 = _mm512_unpackhi_epi8(bytes, zero);
  if constexpr (kBits == 4) {
    const __m512i low = _mm512_set1_epi16(0x0F);
    const __m512i e0 = _mm512_and_si512(u0, low), e1 = _mm512_and_si512(u1, low);
    const __m512i o0 = _mm512_srli_epi16(u0, 4), o1 = _mm512_srli_epi16(u1, 4);
    for (int m = 0; m < M; m++) {
      const __m512i* x = reinterpret_cast<const __m512i*>(&a.q[m * sh.qstride]) + 4 * step;
      __m512i sums = _mm512_madd_epi16(e0, _mm512_loadu_si512(x));  // exact: 16 * 15 * 32767 < 2^31
      sums = _mm512_dpwssd_epi32(sums, e1, _mm512_loadu_si512(x + 1));
      sums = _mm512_dpwssd_epi32(sums, o0, _mm512_loadu_si512(x + 2));
      sums = _mm512_dpwssd_epi32(sums, o1, _mm512_loadu_si512(x + 3));
      const __m512 dv = _mm512_loadu_ps(&a.d[(size_t(m) * sh.steps + step) * 16]);
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(sv, dv), acc[m]);
    }
  } else {
    for (int m = 0; m < M; m++) {
      const __m512i* x = reinterpret_cast<const __m512i*>(&a.q[m * sh.qstride]) + 2 * step;
      __m512i sums = _mm512_madd_epi16(u0, _mm512_loadu_si512(x));  // exact: 4 * 255 * 32767 < 2^31
      sums = _mm512_dpwssd_epi32(sums, u1, _mm512_loadu_si512(x + 1));
      const __m512 dv = _mm512_loadu_ps(&a.d[(size_t(m) * sh.steps + step) * 16]);
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(sv, dv), acc[m]);
    }
  }
}

template <int M, int kBits>
void rows_t(const Problem& p, const Activations& a, int r0, int r1) {
  const Shape sh(p);
  const Spread spread(p, sh.per);
  const size_t row_bytes = size_t(p.K) * kBits / 8;
  const int ahead = int(std::max<size_t>(1, kPrefetchBytes / row_bytes));
  const int tail_bytes = (sh.blocks - sh.full * sh.per) * kBlock * kBits / 8;
  const __mmask64 tail = tail_bytes ? (__mmask64(1) << tail_bytes) - 1 : 0;
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + size_t(j) * row_bytes;
    const float* s = p.scales + size_t(j) * sh.groups;
    const float* b = p.biases + size_t(j) * sh.groups;
    if (j + ahead < r1) {
      prefetch_row(w + ahead * row_bytes, row_bytes, s + ahead * sh.groups, b + ahead * sh.groups, sh.groups);
    }
    __m512 acc[M];
    for (int m = 0; m < M; m++) {
      acc[m] = _mm512_setzero_ps();
    }
    for (int st = 0; st < sh.full; st++) {
      const __m512i bytes = _mm512_loadu_si512(w + kStepBytes * st);
      step_rows<M, kBits>(bytes, spread(s, st), a, sh, st, acc);
    }
    if (tail) {  // the last blocks, fewer than a step: the missing lanes read zeros
      const __m512i bytes = _mm512_maskz_loadu_epi8(tail, w + kStepBytes * sh.full);
      step_rows<M, kBits>(bytes, spread(s, sh.full), a, sh, sh.full, acc);
    }
    // The bias term: the row's biases against each input row's group sums.
    for (int m = 0; m < M; m++) {
      const float* xs = &a.xs[size_t(m) * sh.gpad];
      __m512 total = acc[m];
      for (int g = 0; g < sh.groups; g += 16) {
        const __mmask16 live = sh.groups - g >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (sh.groups - g)) - 1);
        total = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(live, b + g), _mm512_loadu_ps(xs + g), total);
      }
      p.y[size_t(m) * p.N + j] = _mm512_reduce_add_ps(total);
    }
  }
}

template <int M>
void rows_m(const Problem& p, const Activations& a, int r0, int r1) {
  if (p.bits == 4) {
    rows_t<M, 4>(p, a, r0, r1);
  } else {
    rows_t<M, 8>(p, a, r0, r1);
  }
}

void rows(const Problem& p, const Activations& a, int r0, int r1) {
  switch (p.M) {
    case 1: return rows_m<1>(p, a, r0, r1);
    case 2: return rows_m<2>(p, a, r0, r1);
    case 3: return rows_m<3>(p, a, r0, r1);
    case 4: return rows_m<4>(p, a, r0, r1);
    case 5: return rows_m<5>(p, a, r0, r1);
    case 6: return rows_m<6>(p, a, r0, r1);
    case 7: return rows_m<7>(p, a, r0, r1);
    default: return rows_m<8>(p, a, r0, r1);
  }
}

}  // namespace

const Kernel& avx512_kernel() {
  // Prefill's dequantize is memory-bound: the AVX2 one serves (every AVX-512 CPU has AVX2).
  static const Kernel k{"avx512", prepare, rows, avx2_kernel().dequantize};
  return k;
}

}  // namespace glasschat::qmv
