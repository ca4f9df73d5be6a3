// NEON kernels (arm64, where NEON is always there).
//
// One activation block (32 inputs) at a time: the weight bytes are widened to
// int16 (4-bit: the low nibbles are the even codes, the high nibbles the odd
// ones, and the input's codes are stored [even 16 | odd 16] to match) and
// multiplied into int32 lanes with `vmlal` (exact: 8 * 255 * 32767 < 2^31),
// then one convert and two FMAs fold in the block's scale and the group's bias.

#include <arm_neon.h>

#include "qmv_kernels.h"

namespace glasschat::qmv {

namespace {

// Per input row: codes (4-bit: [even | odd] per block, 8-bit: natural order),
// one scale per block, and per block its group's sum times 8 / G (each block
// has 4 lanes and a group G/32 blocks, so the final lane sum adds it once).
void prepare(const Problem& p, Activations& a) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  a.q.resize(size_t(p.M) * p.K);
  a.d.resize(size_t(p.M) * blocks);
  a.xs.resize(size_t(p.M) * blocks);
  std::vector<float> xsum(groups);
  const float spread = 8.0f / float(p.group_size);
  for (int m = 0; m < p.M; m++) {
    const float* x = p.x + size_t(m) * p.K;
    group_sums(x, p.K, p.group_size, xsum.data());
    for (int b = 0; b < blocks; b++) {
      int16_t codes[kBlock];
      quantize_block(x + b * kBlock, codes, &a.d[size_t(m) * blocks + b]);
      int16_t* q = &a.q[size_t(m) * p.K + b * kBlock];
      for (int k = 0; k < kBlock / 2; k++) {
        if (p.bits == 4) {
          q[k] = codes[2 * k], q[kBlock / 2 + k] = codes[2 * k + 1];
        } else {
          q[2 * k] = codes[2 * k], q[2 * k + 1] = codes[2 * k + 1];
        }
      }
      a.xs[size_t(m) * blocks + b] = xsum[(b * kBlock) / p.group_size] * spread;
    }
  }
}

inline int16x8_t widen_low(uint8x16_t v) {
  return vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(v)));
}

inline int16x8_t widen_high(uint8x16_t v) {
  return vreinterpretq_s16_u16(vmovl_high_u8(v));
}

// Four int16x8 weight vectors (32 codes) against the same 32 input codes.
inline int32x4_t dot32(const int16x8_t w[4], const int16_t* x) {
  int32x4_t acc = vdupq_n_s32(0);
  for (int i = 0; i < 4; i++) {
    const int16x8_t xi = vld1q_s16(x + 8 * i);
    acc = vmlal_s16(acc, vget_low_s16(w[i]), vget_low_s16(xi));
    acc = vmlal_high_s16(acc, w[i], xi);
  }
  return acc;
}

template <int M>
void rows_m(const Problem& p, const Activations& a, int r0, int r1) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  const size_t row_bytes = size_t(p.K) * p.bits / 8;
  const uint8x16_t low = vdupq_n_u8(0x0F);
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + j * row_bytes;
    const float* s = p.scales + size_t(j) * groups;
    const float* bias = p.biases + size_t(j) * groups;
    float32x4_t acc[M];
    for (int m = 0; m < M; m++) {
      acc[m] = vdupq_n_f32(0.0f);
    }
    for (int b = 0; b < blocks; b++) {
      int16x8_t wv[4];
      if (p.bits == 4) {
        const uint8x16_t bytes = vld1q_u8(w + 16 * b);
        const uint8x16_t even = vandq_u8(bytes, low), odd = vshrq_n_u8(bytes, 4);
        wv[0] = widen_low(even), wv[1] = widen_high(even), wv[2] = widen_low(odd), wv[3] = widen_high(odd);
      } else {
        const uint8x16_t lo = vld1q_u8(w + 32 * b), hi = vld1q_u8(w + 32 * b + 16);
        wv[0] = widen_low(lo), wv[1] = widen_high(lo), wv[2] = widen_low(hi), wv[3] = widen_high(hi);
      }
      const int g = (b * kBlock) / p.group_size;
      const float32x4_t bv = vdupq_n_f32(bias[g]);
      for (int m = 0; m < M; m++) {
        const size_t at = size_t(m) * blocks + b;
        const int32x4_t dots = dot32(wv, &a.q[size_t(m) * p.K + b * kBlock]);
        acc[m] = vfmaq_n_f32(acc[m], vcvtq_f32_s32(dots), s[g] * a.d[at]);
        acc[m] = vfmaq_n_f32(acc[m], bv, a.xs[at]);
      }
    }
    for (int m = 0; m < M; m++) {
      p.y[size_t(m) * p.N + j] = vaddvq_f32(acc[m]);
    }
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

// 16 codes (bytes) -> floats s * q + b.
inline void dequantize16(uint8x16_t codes, float32x4_t s, float32x4_t b, float* out) {
  const uint16x8_t lo = vmovl_u8(vget_low_u8(codes)), hi = vmovl_high_u8(codes);
  const uint32x4_t q[4] = {vmovl_u16(vget_low_u16(lo)), vmovl_high_u16(lo), vmovl_u16(vget_low_u16(hi)),
                           vmovl_high_u16(hi)};
  for (int i = 0; i < 4; i++) {
    vst1q_f32(out + 4 * i, vaddq_f32(vmulq_f32(vcvtq_f32_u32(q[i]), s), b));
  }
}

void dequantize(const Problem& p, int r0, int r1) {
  const int blocks = p.K / kBlock, groups = p.K / p.group_size;
  const size_t row_bytes = size_t(p.K) * p.bits / 8;
  const uint8x16_t low = vdupq_n_u8(0x0F);
  for (int j = r0; j < r1; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w) + j * row_bytes;
    float* out = p.y + size_t(j) * p.K;
    for (int b = 0; b < blocks; b++) {
      const int g = j * groups + (b * kBlock) / p.group_size;
      const float32x4_t sv = vdupq_n_f32(p.scales[g]), bv = vdupq_n_f32(p.biases[g]);
      uint8x16_t c0, c1;  // codes 0-15 and 16-31 of the block
      if (p.bits == 4) {
        const uint8x16_t bytes = vld1q_u8(w + 16 * b);
        const uint8x16_t even = vandq_u8(bytes, low), odd = vshrq_n_u8(bytes, 4);
        c0 = vzip1q_u8(even, odd), c1 = vzip2q_u8(even, odd);
      } else {
        c0 = vld1q_u8(w + 32 * b), c1 = vld1q_u8(w + 32 * b + 16);
      }
      dequantize16(c0, sv, bv, out + 32 * b);
      dequantize16(c1, sv, bv, out + 32 * b + 16);
    }
  }
}

}  // namespace

const Kernel& neon_kernel() {
  static const Kernel k{"neon", prepare, rows, dequantize};
  return k;
}

}  // namespace glasschat::qmv
