// The NEON quantized matvec against the scalar kernel and a float64 reference, run under qemu-aarch64.
//
// The same cases as tests/test_qmv_kernel.py runs on x86 (4 and 8 bits, group sizes 32/64/128,
// output counts that are no SIMD width's multiple, inputs with odd numbers of 32-blocks, 1 to 8
// rows, and 19 rows done in passes), on 1 and 2 threads:
//   - every output within the bound derived in tests/test_qmv_kernel.py's docstring of the
//     float64 product with the weights as mx.dequantize gives them (s * q + b, two roundings);
//   - NEON and scalar within that same bound of each other (they sum in different orders);
//   - bit-exact where the arithmetic is (integer inputs whose blocks peak at 32767,
//     power-of-two scales, integer biases): NEON == scalar == the exact product;
//   - dequantize: NEON == scalar, bit for bit;
//   - inputs round to nearest: weights that pick one input each read back rint(x * 32767 / max) * d.
// Prints one line per check group and a summary; exits 1 on the first failure.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qmv_kernels.h"

using namespace glasschat::qmv;

namespace {

constexpr double kEps32 = 1.0 / 16777216.0;  // 2^-24

struct Weights {
  int N, K, group_size, bits;
  std::vector<uint32_t> packed;
  std::vector<float> scales, biases;
  std::vector<int> codes;  // (N, K), for the reference and the bound
};

Weights make_weights(std::mt19937& rng, int N, int K, int group_size, int bits, bool exact) {
  Weights w{N, K, group_size, bits, {}, {}, {}, {}};
  const int groups = K / group_size;
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> power(0, 2), bias(-8, 8);
  w.codes.resize(size_t(N) * K);
  for (int& c : w.codes) {
    c = code(rng);
  }
  w.scales.resize(size_t(N) * groups);
  w.biases.resize(size_t(N) * groups);
  for (size_t g = 0; g < w.scales.size(); g++) {
    // Like mx.quantize of weights ~N(0, 0.05): scale ~ range / levels, bias ~ the group's minimum.
    w.scales[g] = exact ? std::ldexp(1.0f, power(rng)) : 0.05f * (0.5f + std::fabs(normal(rng))) / float(1 << bits) * 8;
    w.biases[g] = exact ? float(bias(rng)) : -0.15f + 0.02f * normal(rng);
  }
  // MLX's layout: lowest bits first within each uint32 (4-bit: byte j holds codes 2j | 2j+1 << 4).
  const size_t row_bytes = size_t(K) * bits / 8;
  std::vector<uint8_t> bytes(size_t(N) * row_bytes);
  for (int j = 0; j < N; j++) {
    for (int i = 0; i < K; i++) {
      const int c = w.codes[size_t(j) * K + i];
      if (bits == 8) {
        bytes[j * row_bytes + i] = uint8_t(c);
      } else {
        bytes[j * row_bytes + i / 2] |= uint8_t(c << (4 * (i % 2)));
      }
    }
  }
  w.packed.resize(bytes.size() / 4);
  std::memcpy(w.packed.data(), bytes.data(), bytes.size());
  return w;
}

// mx.dequantize's float32 weight: a product, then a sum (never an FMA).
float weight(const Weights& w, int j, int i) {
  const int g = j * (w.K / w.group_size) + i / w.group_size;
  volatile float scaled = w.scales[g] * float(w.codes[size_t(j) * w.K + i]);
  return scaled + w.biases[g];
}

std::vector<float> product(const Kernel& kernel, const Weights& w, const std::vector<float>& x, int M, int threads) {
  std::vector<float> y(size_t(M) * w.N);
  const Problem p{x.data(), w.packed.data(), w.scales.data(), w.biases.data(), y.data(), M, w.N, w.K, w.group_size,
                  w.bits};
  run(p, kernel, threads);
  return y;
}

// Per output: the float64 reference and the bound of tests/test_qmv_kernel.py.
void reference(const Weights& w, const std::vector<float>& x, int M, std::vector<double>& want,
               std::vector<double>& limit) {
  const int K = w.K, G = w.group_size;
  want.assign(size_t(M) * w.N, 0.0);
  limit.assign(size_t(M) * w.N, 0.0);
  const double roundings = G + K / 32 + 16;
  for (int m = 0; m < M; m++) {
    const float* xm = &x[size_t(m) * K];
    std::vector<double> d(K / 32);
    for (int b = 0; b < K / 32; b++) {
      double top = 0;
      for (int i = 0; i < 32; i++) {
        top = std::fmax(top, std::fabs(double(xm[b * 32 + i])));
      }
      d[b] = top / 32767.0;
    }
    for (int j = 0; j < w.N; j++) {
      double sum = 0, rounding = 0, magnitude = 0;
      for (int i = 0; i < K; i++) {
        const int g = j * (K / G) + i / G;
        const double q = w.codes[size_t(j) * K + i], s = std::fabs(double(w.scales[g]));
        sum += double(xm[i]) * double(weight(w, j, i));
        rounding += 0.51 * d[i / 32] * s * q;
        magnitude += std::fabs(double(xm[i])) * (s * q + std::fabs(double(w.biases[g])));
      }
      want[size_t(m) * w.N + j] = sum;
      limit[size_t(m) * w.N + j] = rounding + (2 + roundings) * kEps32 * magnitude * 1.01;
    }
  }
}

struct Tally {
  int products = 0;
  double worst_of_bound = 0;  // max |got - want| / bound, over NEON's outputs
  double worst_gap = 0;  // max |neon - scalar| / bound
};

[[noreturn]] void fail(const std::string& what) {
  std::printf("FAIL: %s\n", what.c_str());
  std::exit(1);
}

std::string name_of(int bits, int G, int N, int K, int M, int threads) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%d-bit G=%d N=%d K=%d rows=%d threads=%d", bits, G, N, K, M, threads);
  return buf;
}

void within_bound(std::mt19937& rng, Tally& tally) {
  // group size -> (N, K): as SHAPES in tests/test_qmv_kernel.py.
  const std::vector<std::pair<int, std::vector<std::pair<int, int>>>> shapes = {
      {32, {{1, 96}, {5, 160}, {13, 352}, {77, 576}, {300, 96}}},
      {64, {{7, 192}, {129, 576}, {300, 128}}},
      {128, {{5, 384}, {77, 640}, {300, 128}}},
  };
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int bits : {4, 8}) {
    for (const auto& [G, sizes] : shapes) {
      for (int M = 1; M <= 8; M++) {
        for (const auto& [N, K] : sizes) {
          const Weights w = make_weights(rng, N, K, G, bits, false);
          std::vector<float> x(size_t(M) * K);
          for (float& v : x) {
            v = normal(rng);
          }
          for (int m = 0; m < M; m++) {  // an LLM's activations: a few large outliers
            for (int o = 0; o < 3; o++) {
              x[size_t(m) * K + rng() % K] *= 20.0f;
            }
          }
          std::vector<double> want, limit;
          reference(w, x, M, want, limit);
          for (int threads : {1, 2}) {
            const auto neon = product(neon_kernel(), w, x, M, threads);
            const auto scalar = product(scalar_kernel(), w, x, M, threads);
            for (size_t i = 0; i < want.size(); i++) {
              const double off = std::fabs(neon[i] - want[i]) / limit[i];
              const double gap = std::fabs(double(neon[i]) - double(scalar[i])) / limit[i];
              if (!(off <= 1.0) || !(gap <= 1.0)) {
                fail(name_of(bits, G, N, K, M, threads) + ": output " + std::to_string(i) + " off by " +
                     std::to_string(off) + " of the bound from float64, " + std::to_string(gap) + " from scalar");
              }
              tally.worst_of_bound = std::fmax(tally.worst_of_bound, off);
              tally.worst_gap = std::fmax(tally.worst_gap, gap);
            }
            tally.products++;
          }
        }
      }
    }
  }
}

void bit_exact(std::mt19937& rng, Tally& tally) {
  for (int bits : {4, 8}) {
    for (int G : {32, 64, 128}) {
      const int M = 5, N = 67, K = G == 128 ? 640 : G == 32 ? 352 : 448;
      Weights w = make_weights(rng, N, K, G, bits, true);
      // Small integer inputs; each block peaks at exactly 32767 where the weights' codes are 0.
      std::vector<float> x(size_t(M) * K);
      std::uniform_int_distribution<int> small(-20, 20), at(0, 31);
      for (float& v : x) {
        v = float(small(rng));
      }
      for (int b = 0; b < K / 32; b++) {
        const int peak = b * 32 + at(rng);
        for (int m = 0; m < M; m++) {
          x[size_t(m) * K + peak] = (rng() % 2) ? 32767.0f : -32767.0f;
        }
        for (int j = 0; j < N; j++) {
          w.codes[size_t(j) * K + peak] = 0;
        }
      }
      w = [&] {  // re-pack with the zeroed codes
        Weights packed = w;
        std::fill(packed.packed.begin(), packed.packed.end(), 0u);
        const size_t row_bytes = size_t(K) * bits / 8;
        auto* bytes = reinterpret_cast<uint8_t*>(packed.packed.data());
        for (int j = 0; j < N; j++) {
          for (int i = 0; i < K; i++) {
            const int c = packed.codes[size_t(j) * K + i];
            if (bits == 8) {
              bytes[j * row_bytes + i] = uint8_t(c);
            } else {
              bytes[j * row_bytes + i / 2] |= uint8_t(c << (4 * (i % 2)));
            }
          }
        }
        return packed;
      }();
      std::vector<double> want, limit;
      reference(w, x, M, want, limit);
      for (int threads : {1, 2}) {
        const auto neon = product(neon_kernel(), w, x, M, threads);
        const auto scalar = product(scalar_kernel(), w, x, M, threads);
        for (size_t i = 0; i < want.size(); i++) {
          if (double(neon[i]) != want[i] || neon[i] != scalar[i]) {
            fail("bit-exact " + name_of(bits, G, N, K, M, threads) + ": output " + std::to_string(i));
          }
        }
        tally.products++;
      }
    }
  }
}

void dequantize_equal(std::mt19937& rng) {
  for (int bits : {4, 8}) {
    for (int G : {32, 64, 128}) {
      for (int N : {1, 77, 300}) {
        const Weights w = make_weights(rng, N, 640, G, bits, false);
        for (int threads : {1, 2}) {
          std::vector<float> neon(size_t(N) * 640), scalar(size_t(N) * 640);
          Problem p{nullptr, w.packed.data(), w.scales.data(), w.biases.data(), neon.data(), 0, N, 640, G, bits};
          run_dequantize(p, neon_kernel(), threads);
          p.y = scalar.data();
          run_dequantize(p, scalar_kernel(), threads);
          for (size_t i = 0; i < neon.size(); i++) {
            if (neon[i] != scalar[i] || neon[i] != weight(w, int(i / 640), int(i % 640))) {
              fail("dequantize " + name_of(bits, G, N, 640, 0, threads) + ": weight " + std::to_string(i));
            }
          }
        }
      }
    }
  }
}

void rounds_to_nearest(std::mt19937& rng) {
  const int K = 160, M = 3;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float sizes[] = {0.01f, 1.0f, 300.0f};
  std::vector<float> x(size_t(M) * K);
  for (int m = 0; m < M; m++) {
    for (int b = 0; b < K / 32; b++) {
      const float size = sizes[rng() % 3];
      for (int i = 0; i < 32; i++) {
        x[size_t(m) * K + b * 32 + i] = normal(rng) * size;
      }
    }
  }
  for (int bits : {4, 8}) {
    Weights w{K, K, 32, bits, {}, std::vector<float>(K * K / 32, 1.0f), std::vector<float>(K * K / 32, 0.0f), {}};
    w.codes.assign(size_t(K) * K, 0);
    for (int i = 0; i < K; i++) {
      w.codes[size_t(i) * K + i] = 1;  // row i picks input i
    }
    std::vector<uint8_t> bytes(size_t(K) * K * bits / 8, 0);
    for (int j = 0; j < K; j++) {
      const size_t at = size_t(j) * K * bits / 8;
      if (bits == 8) {
        bytes[at + j] = 1;
      } else {
        bytes[at + j / 2] = uint8_t(1 << (4 * (j % 2)));
      }
    }
    w.packed.resize(bytes.size() / 4);
    std::memcpy(w.packed.data(), bytes.data(), bytes.size());
    const auto got = product(neon_kernel(), w, x, M, 1);
    for (int m = 0; m < M; m++) {
      for (int i = 0; i < K; i++) {
        float top = 0;
        for (int k = 0; k < 32; k++) {
          top = std::fmax(top, std::fabs(x[size_t(m) * K + (i / 32) * 32 + k]));
        }
        const float code = std::nearbyint(x[size_t(m) * K + i] * (32767.0f / top));
        const float want = (top / 32767.0f) * code;
        if (got[size_t(m) * K + i] != want) {
          fail("round to nearest, " + std::to_string(bits) + "-bit: input " + std::to_string(i));
        }
      }
    }
  }
}

void in_passes(std::mt19937& rng, Tally& tally) {
  // 19 rows: three passes over the weights; each row's result as when it is alone.
  const Weights w = make_weights(rng, 50, 128, 64, 4, false);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(19 * 128);
  for (float& v : x) {
    v = normal(rng);
  }
  const auto together = product(neon_kernel(), w, x, 19, 2);
  for (int m = 0; m < 19; m++) {
    const std::vector<float> row(x.begin() + m * 128, x.begin() + (m + 1) * 128);
    const auto alone = product(neon_kernel(), w, row, 1, 1);
    if (std::memcmp(alone.data(), &together[size_t(m) * 50], 50 * sizeof(float)) != 0) {
      fail("19 rows in passes: row " + std::to_string(m) + " differs from itself alone");
    }
  }
  tally.products++;
}

}  // namespace

int main() {
  if (best_kernel().name != std::string("neon")) {
    fail(std::string("the best kernel here is ") + best_kernel().name + ", not neon");
  }
  std::mt19937 rng(2024);
  Tally tally;
  within_bound(rng, tally);
  std::printf("within bound: NEON at worst %.3f of the bound from float64, %.3f from scalar\n", tally.worst_of_bound,
              tally.worst_gap);
  bit_exact(rng, tally);
  std::printf("bit-exact cases: NEON == scalar == exact\n");
  dequantize_equal(rng);
  std::printf("dequantize: NEON == scalar == s * q + b, bit for bit\n");
  rounds_to_nearest(rng);
  std::printf("inputs round to nearest\n");
  in_passes(rng, tally);
  std::printf("passed: %d products (4/8 bits, groups 32/64/128, 1-8 and 19 rows, 1 and 2 threads)\n", tally.products);
  return 0;
}
