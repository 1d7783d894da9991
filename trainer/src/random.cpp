#include "trainer/random.h"

#include <cmath>
#include <numbers>

namespace opu::trainer {

std::uint64_t derive_seed(std::uint64_t seed, std::string_view purpose) {
  // FNV-1a over the purpose, then mixed with the seed: distinct purposes give independent streams.
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (char c : purpose) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001B3ULL;
  }
  return mix64(mix64(seed) ^ h);
}

float CounterRng::normal(std::uint64_t index) const {
  const std::uint64_t b = bits(index);
  // u1 in (0, 1] so log(u1) is finite; u2 in [0, 1).
  const double u1 = (static_cast<double>(b >> 32U) + 1.0) * (1.0 / 4294967296.0);
  const double u2 = static_cast<double>(b & 0xFFFFFFFFULL) * (1.0 / 4294967296.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
}

std::vector<std::int64_t> permutation(const CounterRng& rng, std::int64_t n) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(
        rng.below(static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(i) + 1U));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

}  // namespace opu::trainer
