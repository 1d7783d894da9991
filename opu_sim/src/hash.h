// Integer hashes behind every random number of the simulator. Internal.
#pragma once

#include <bit>
#include <cstdint>

namespace opu::sim::detail {

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
constexpr std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// "lowbias32" (C. Wellons' hash-prospector): a bijective 32-bit mixer with very low bias, cheap
/// in SIMD lanes (two 32-bit multiplies).
constexpr std::uint32_t lowbias32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352DU;
  x ^= x >> 15;
  x *= 0x846CA68BU;
  x ^= x >> 16;
  return x;
}

/// Uniform double in (0, 1) from 53 bits of a 64-bit hash (never 0, so log() is finite).
inline double uniform_open(std::uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53;
}

/// A counter-based stream of 64-bit values for one (key, counter) pair: draw k is
/// splitmix64(base + k * golden). Used where a variable number of draws is needed (Poisson).
class CounterStream {
 public:
  explicit CounterStream(std::uint64_t base) : state_(base) {}
  std::uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    return splitmix64(state_);
  }
  double uniform() { return uniform_open(next()); }

 private:
  std::uint64_t state_;
};

}  // namespace opu::sim::detail
