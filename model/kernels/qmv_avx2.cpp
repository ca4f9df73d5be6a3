// AVX2 + FMA kernels (x86-64). This file alone is compiled with -mavx2 -mfma;
// `best_kernel()` calls it only after checking the CPU at run time.
//
// 4-bit: 32 bytes of a weight row are 64 codes, two activation blocks. Each
// byte widened to int16 holds an even code in its low nibble and the next odd
// one in its high nibble, so an AND and a shift give both; the input's int16
// codes are laid out once per product in that same order. `madd` multiplies
// int16 pairs into int32 sums (exact: 2 * 255 * 32767 < 2^31), one convert
// and two FMAs fold in the blocks' scales and the group's bias.
// 8-bit: the codes are widened to int16 and go through the same `madd`.

#include <immintrin.h>

#include <algorithm>

#include "qmv_kernels.h"

namespace glasschat::qmv {

namespace {

// Weight rows stream from memory once per token and the hardware prefetcher
// falls behind on the three streams (codes, scales, biases): fetching ~2 KB
// ahead made the default model's 121 products 10.2 ms a token instead of 16.1
// (best of 30 interleaved steps; 1, 4 and 8 KB were slower than 2).
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

// How many rows ahead that is, for rows of `row_bytes`.
inline int rows_ahead(size_t row_bytes) {
  return int(std::max<size_t>(1, kPrefetchBytes / row_bytes));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One block of 32 inputs to int16 codes, natural order, in two vectors; returns the block's scale.
inline float quantize32(const float* x, __m256i* lo, __m256i* hi) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  for (int i = 0; i < 4; i++) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  const float top = _mm_cvtss_f32(m);
  const __m256 inv = _mm256_set1_ps(top > 0.0f ? kCodeMax / top : 0.0f);
  __m256i c[4];
  for (int i = 0; i < 4; i++) {
    // Rounds to nearest, ties to even (the default MXCSR), as nearbyint does.
    c[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
  }
  // packs interleaves the 128-bit lanes; the permute restores the order.
  *lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(c[0], c[1]), 0xD8);
  *hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(c[2], c[3]), 0xD8);
  return top / kCodeMax;
}

// 16 codes in natural order -> [8 even | 8 odd].
inline __m256i split_even_odd(__m256i c) {
  const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12,
                                         13, 2, 3, 6, 7, 10, 11, 14, 15);
  return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(c, order), 0xD8);
}

// 4-bit layout, per input row and pair of blocks a, b (64 inputs): four
// vectors of int16 codes in the order the widened weight bytes come in,
//   [a even 0-7 | b even 0-7], [a even 8-15 | b even 8-15], [a odd 0-7 | b odd 0-7], [a odd 8-15 | b odd 8-15]
// (even k = input 2k of the block), then 8 scales [d_a x4, d_b x4] and 8
// lanes of group sums (each group's sum spread over its G/8 lanes, so the
// final horizontal sum adds it exactly once). A last lone block (K/32 odd,
// so G = 32) is [even 0-15], [odd 0-15] and 8 lanes of its own.
void prepare4(const Problem& p, Activations& a) {
  const int blocks = p.K / kBlock, pairs = blocks / 2, slots = (blocks + 1) / 2, groups = p.K / p.group_size;
  a.q.resize(size_t(p.M) * p.K);
  a.d.resize(size_t(p.M) * slots * 8);
  a.xs.resize(size_t(p.M) * slots * 8);
  std::vector<float> xsum(groups);
  const float spread = 8.0f / float(p.group_size);
  for (int m = 0; m < p.M; m++) {
    const float* x = p.x + size_t(m) * p.K;
    __m256i* q = reinterpret_cast<__m256i*>(&a.q[size_t(m) * p.K]);
    float* d = &a.d[size_t(m) * slots * 8];
    float* xs = &a.xs[size_t(m) * slots * 8];
    group_sums(x, p.K, p.group_size, xsum.data());
    for (int pr = 0; pr < slots; pr++) {
      __m256i a0, a1;
      const float da = quantize32(x + 64 * pr, &a0, &a1);
      a0 = split_even_odd(a0), a1 = split_even_odd(a1);  // [E 0-7 | O 0-7], [E 8-15 | O 8-15]
      if (pr == pairs) {  // the lone last block
        _mm256_storeu_si256(q + 4 * pr, _mm256_permute2x128_si256(a0, a1, 0x20));
        _mm256_storeu_si256(q + 4 * pr + 1, _mm256_permute2x128_si256(a0, a1, 0x31));
        for (int l = 0; l < 8; l++) {
          d[8 * pr + l] = da;
          xs[8 * pr + l] = xsum[groups - 1] / 8.0f;
        }
        break;
      }
      __m256i b0, b1;
      const float db = quantize32(x + 64 * pr + 32, &b0, &b1);
      b0 = split_even_odd(b0), b1 = split_even_odd(b1);
      _mm256_storeu_si256(q + 4 * pr, _mm256_permute2x128_si256(a0, b0, 0x20));
      _mm256_storeu_si256(q + 4 * pr + 1, _mm256_permute2x128_si256(a1, b1, 0x20));
      _mm256_storeu_si256(q + 4 * pr + 2, _mm256_permute2x128_si256(a0, b0, 0x31));
      _mm256_storeu_si256(q + 4 * pr + 3, _mm256_permute2x128_si256(a1, b1, 0x31));
      const float ga = xsum[(64 * pr) / p.group_size] * spread, gb = xsum[(64 * pr + 32) / p.group_size] * spread;
      for (int l = 0; l < 4; l++) {
        d[8 * pr + l] = da, d[8 * pr + 4 + l] = db;
        xs[8 * pr + l] = ga, xs[8 * pr + 4 + l] = gb;
      }
    }
  }
}

// Scales (or biases) of the two blocks of pair `pr` as [a x4, b x4].
template <bool kGroup32>
inline __m256 pair_values(const float* v, int pr, int group_shift) {
  if constexpr (kGroup32) {
    const __m128 two = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(v + 2 * pr)));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  } else {
    return _mm256_broadcast_ss(v + ((64 * pr) >> group_shift));
  }
}

template <int M, bool kGroup32>
void rows4(const Problem& p, const Activations& a, int r0, int r1) {
  const int blocks = p.K / kBlock, pairs = blocks / 2, slots = (blocks + 1) / 2, groups = p.K / p.group_size;
  const int group_shift = __builtin_ctz(p.group_size);
  const __m256i low = _mm256_set1_epi16(0x0F);
  const __m256i zero = _mm256_setzero_si256();
  const size_t row_bytes = size_t(p.K) / 2;
  const int ahead = rows_ahead(row_bytes);
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + size_t(j) * row_bytes;
    const float* s = p.scales + size_t(j) * groups;
    const float* b = p.biases + size_t(j) * groups;
    if (j + ahead < r1) {
      prefetch_row(w + ahead * row_bytes, row_bytes, s + ahead * groups, b + ahead * groups, groups);
    }
    __m256 acc[M];
    for (int m = 0; m < M; m++) {
      acc[m] = _mm256_setzero_ps();
    }
    for (int pr = 0; pr < pairs; pr++) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * pr));
      const __m256i u0 = _mm256_unpacklo_epi8(bytes, zero), u1 = _mm256_unpackhi_epi8(bytes, zero);
      const __m256i e0 = _mm256_and_si256(u0, low), e1 = _mm256_and_si256(u1, low);
      const __m256i o0 = _mm256_srli_epi16(u0, 4), o1 = _mm256_srli_epi16(u1, 4);
      const __m256 sv = pair_values<kGroup32>(s, pr, group_shift);
      const __m256 bv = pair_values<kGroup32>(b, pr, group_shift);
      for (int m = 0; m < M; m++) {
        const __m256i* x = reinterpret_cast<const __m256i*>(&a.q[size_t(m) * p.K]) + 4 * pr;
        const __m256i even = _mm256_add_epi32(_mm256_madd_epi16(e0, _mm256_loadu_si256(x)),
                                              _mm256_madd_epi16(e1, _mm256_loadu_si256(x + 1)));
        const __m256i odd = _mm256_add_epi32(_mm256_madd_epi16(o0, _mm256_loadu_si256(x + 2)),
                                             _mm256_madd_epi16(o1, _mm256_loadu_si256(x + 3)));
        const __m256 dots = _mm256_cvtepi32_ps(_mm256_add_epi32(even, odd));
        const size_t at = (size_t(m) * slots + pr) * 8;
        acc[m] = _mm256_fmadd_ps(dots, _mm256_mul_ps(sv, _mm256_loadu_ps(&a.d[at])), acc[m]);
        acc[m] = _mm256_fmadd_ps(bv, _mm256_loadu_ps(&a.xs[at]), acc[m]);
      }
    }
    if (blocks % 2) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * pairs));
      const __m256i u = _mm256_cvtepu8_epi16(bytes);
      const __m256i e = _mm256_and_si256(u, low), o = _mm256_srli_epi16(u, 4);
      const __m256 sv = _mm256_broadcast_ss(s + groups - 1);
      const __m256 bv = _mm256_broadcast_ss(b + groups - 1);
      for (int m = 0; m < M; m++) {
        const __m256i* x = reinterpret_cast<const __m256i*>(&a.q[size_t(m) * p.K]) + 4 * pairs;
        const __m256i i32 = _mm256_add_epi32(_mm256_madd_epi16(e, _mm256_loadu_si256(x)),
                                             _mm256_madd_epi16(o, _mm256_loadu_si256(x + 1)));
        const size_t at = (size_t(m) * slots + pairs) * 8;
        acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_mul_ps(sv, _mm256_loadu_ps(&a.d[at])), acc[m]);
        acc[m] = _mm256_fmadd_ps(bv, _mm256_loadu_ps(&a.xs[at]), acc[m]);
      }
    }
    for (int m = 0; m < M; m++) {
      p.y[size_t(m) * p.N + j] = hsum(acc[m]);
    }
  }
}

// 8-bit layout, per input row: int16 codes in natural order, one scale per
// block, and per block its group's sum spread over the block's 8 lanes times
// the group's G/32 blocks.
void prepare8(const Problem& p, Activations& a) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  a.q.resize(size_t(p.M) * p.K);
  a.d.resize(size_t(p.M) * blocks);
  a.xs.resize(size_t(p.M) * blocks);
  std::vector<float> xsum(groups);
  const float spread = 4.0f / float(p.group_size);
  for (int m = 0; m < p.M; m++) {
    const float* x = p.x + size_t(m) * p.K;
    __m256i* q = reinterpret_cast<__m256i*>(&a.q[size_t(m) * p.K]);
    group_sums(x, p.K, p.group_size, xsum.data());
    for (int blk = 0; blk < blocks; blk++) {
      __m256i lo, hi;
      a.d[size_t(m) * blocks + blk] = quantize32(x + 32 * blk, &lo, &hi);
      _mm256_storeu_si256(q + 2 * blk, lo);
      _mm256_storeu_si256(q + 2 * blk + 1, hi);
      a.xs[size_t(m) * blocks + blk] = xsum[(32 * blk) / p.group_size] * spread;
    }
  }
}

template <int M>
void rows8(const Problem& p, const Activations& a, int r0, int r1) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  const int group_shift = __builtin_ctz(p.group_size);
  const size_t row_bytes = size_t(p.K);
  const int ahead = rows_ahead(row_bytes);
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + size_t(j) * row_bytes;
    const float* s = p.scales + size_t(j) * groups;
    const float* b = p.biases + size_t(j) * groups;
    if (j + ahead < r1) {
      prefetch_row(w + ahead * row_bytes, row_bytes, s + ahead * groups, b + ahead * groups, groups);
    }
    __m256 acc[M];
    for (int m = 0; m < M; m++) {
      acc[m] = _mm256_setzero_ps();
    }
    for (int blk = 0; blk < blocks; blk++) {
      const __m128i* src = reinterpret_cast<const __m128i*>(w + 32 * blk);
      const __m256i w0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(src));
      const __m256i w1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(src + 1));
      const int g = (32 * blk) >> group_shift;
      const __m256 sv = _mm256_broadcast_ss(s + g);
      const __m256 bv = _mm256_broadcast_ss(b + g);
      for (int m = 0; m < M; m++) {
        const __m256i* x = reinterpret_cast<const __m256i*>(&a.q[size_t(m) * p.K]) + 2 * blk;
        const __m256i i32 = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256(x)),
                                             _mm256_madd_epi16(w1, _mm256_loadu_si256(x + 1)));
        const size_t at = size_t(m) * blocks + blk;
        acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_mul_ps(sv, _mm256_broadcast_ss(&a.d[at])), acc[m]);
        acc[m] = _mm256_fmadd_ps(bv, _mm256_broadcast_ss(&a.xs[at]), acc[m]);
      }
    }
    for (int m = 0; m < M; m++) {
      p.y[size_t(m) * p.N + j] = hsum(acc[m]);
    }
  }
}

void prepare(const Problem& p, Activations& a) {
  if (p.bits == 4) {
    prepare4(p, a);
  } else {
    prepare8(p, a);
  }
}

template <int M>
void rows_m(const Problem& p, const Activations& a, int r0, int r1) {
  if (p.bits == 8) {
    rows8<M>(p, a, r0, r1);
  } else if (p.group_size == 32) {
    rows4<M, true>(p, a, r0, r1);
  } else {
    rows4<M, false>(p, a, r0, r1);
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

// 8 codes (bytes) -> floats s * q + b.
inline void dequantize8(__m128i codes, __m256 s, __m256 b, float* out) {
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), s), b));
}

void dequantize(const Problem& p, int r0, int r1) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  const int group_shift = __builtin_ctz(p.group_size);
  const __m128i low = _mm_set1_epi8(0x0F);
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + size_t(j) * p.K * p.bits / 8;
    float* out = p.y + size_t(j) * p.K;
    for (int blk = 0; blk < blocks; blk++) {
      const int g = j * groups + ((32 * blk) >> group_shift);
      const __m256 s = _mm256_set1_ps(p.scales[g]), b = _mm256_set1_ps(p.biases[g]);
      __m128i c0, c1;  // codes 0-15 and 16-31 of the block, one a byte
      if (p.bits == 4) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * blk));
        const __m128i even = _mm_and_si128(bytes, low), odd = _mm_and_si128(_mm_srli_epi16(bytes, 4), low);
        c0 = _mm_unpacklo_epi8(even, odd), c1 = _mm_unpackhi_epi8(even, odd);
      } else {
        c0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * blk));
        c1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * blk + 16));
      }
      float* o = out + 32 * blk;
      dequantize8(c0, s, b, o);
      dequantize8(_mm_srli_si128(c0, 8), s, b, o + 8);
      dequantize8(c1, s, b, o + 16);
      dequantize8(_mm_srli_si128(c1, 8), s, b, o + 24);
    }
  }
}

}  // namespace

const Kernel& avx2_kernel() {
  static const Kernel k{"avx2", prepare, rows, dequantize};
  return k;
}

}  // namespace glasschat::qmv
