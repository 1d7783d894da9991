// Counter-based randomness for the trainer (STYLE.md "Numerics and randomness").
//
// Every random number is a pure function of (seed, stream, index): no hidden state, no global RNG,
// no std::*_distribution (whose algorithms are implementation-defined). That is what makes
// checkpoints resumable bit for bit: the data order of epoch k, the dropout mask of step s and the
// feedback matrix are regenerated from the user seed instead of being saved.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace opu::trainer {

__extension__ using Uint128 = unsigned __int128;  // GCC/Clang extension, for Lemire's method

/// SplitMix64's finaliser: a bijective 64-bit mixer with full avalanche.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31U);
}

/// A seed for one purpose ("init/layer0.weight", "shuffle", ...) derived from the user seed.
std::uint64_t derive_seed(std::uint64_t seed, std::string_view purpose);

/// One stream of random numbers addressed by index. Immutable; thread-safe.
class CounterRng {
 public:
  explicit CounterRng(std::uint64_t key) : key_(mix64(key)) {}
  CounterRng(std::uint64_t seed, std::string_view purpose)
      : CounterRng(derive_seed(seed, purpose)) {}

  /// 64 random bits of element `index`.
  std::uint64_t bits(std::uint64_t index) const { return mix64(key_ ^ mix64(index)); }
  /// Uniform in [0, 1) with 24 random bits (every float value is exact).
  float uniform(std::uint64_t index) const {
    return static_cast<float>(bits(index) >> 40U) * (1.0F / 16777216.0F);
  }
  /// Uniform in [lo, hi).
  float uniform(std::uint64_t index, float lo, float hi) const {
    return lo + (hi - lo) * uniform(index);
  }
  /// Standard normal by the Box-Muller transform of element `index`'s 64 bits (two 32-bit
  /// uniforms, computed in double so the result does not depend on float rounding of log/cos).
  float normal(std::uint64_t index) const;
  /// Uniform integer in [0, n) (Lemire's multiply-shift; bias below 2^-32 for n < 2^32).
  std::uint64_t below(std::uint64_t index, std::uint64_t n) const {
    return static_cast<std::uint64_t>((static_cast<Uint128>(bits(index)) * n) >> 64U);
  }

 private:
  std::uint64_t key_;
};

/// A random permutation of 0..n-1 (Fisher-Yates driven by `rng`).
std::vector<std::int64_t> permutation(const CounterRng& rng, std::int64_t n);

}  // namespace opu::trainer
