// e^x for the kernels: the numbers of model/network/fast_math.py, as plain C++ the compiler
// vectorizes in a loop. e^x = 2^n * 2^f with n = round(x log2 e), |f| <= 1/2, 2^f from its
// degree-7 Taylor polynomial (relative error under 4e-6); exactly 0 below 2^-100, so a
// softmax weight is never a subnormal float (x86 multiplies those ~50x slower).

#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

namespace glasschat {
// Internal to each file that includes it: the attention kernels compile it once per instruction set.
namespace {

inline float exp_fast(float x) {
  const float t = x * 1.44269504088896341f;
  const float c = std::min(std::max(t, -126.0f), 127.0f);
  const float n = (c + 12582912.0f) - 12582912.0f;  // 1.5 * 2^23: rounds to nearest
  const float f = c - n;
  float p = 1.5252733804059841e-05f;  // (ln 2)^7 / 7!
  p = p * f + 1.5403530393381609e-04f;
  p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.6181291076284772e-03f;
  p = p * f + 5.5504108664821580e-02f;
  p = p * f + 2.4022650695910071e-01f;
  p = p * f + 6.9314718055994531e-01f;
  p = p * f + 1.0f;
  const float two_n = std::bit_cast<float>((int32_t(n) + 127) << 23);
  return t < -100.0f ? 0.0f : p * two_n;
}

}  // namespace
}  // namespace glasschat
