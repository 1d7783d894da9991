#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "hash.h"
#include "opu_sim/transmission_matrix.h"

namespace opu::sim {
namespace {

using detail::lowbias32;
using detail::splitmix64;

constexpr std::uint32_t kRowSalt = 0x5BD1E995U;  // separates the row hash from the column hash
constexpr std::uint32_t kSecondDraw = 0x1B873593U;

// The per-row half of an entry's counter. Row and column hashes use different functions so that
// R is not symmetric when the two keys happen to coincide.
inline std::uint32_t row_hash(std::uint32_t row_key, std::int64_t row) {
  return lowbias32(lowbias32(static_cast<std::uint32_t>(row) ^ row_key) ^ kRowSalt);
}
inline std::uint32_t col_hash(std::uint32_t col_key, std::int64_t col) {
  return lowbias32(static_cast<std::uint32_t>(col) ^ col_key);
}

inline float bits_to_float(std::uint32_t bits) { return std::bit_cast<float>(bits); }
inline std::uint32_t float_to_bits(float value) { return std::bit_cast<std::uint32_t>(value); }

// Natural log of u in (0, 1) from +, -, *, / only: u = m * 2^e with m in [sqrt(1/2), sqrt(2)),
// ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172: the series to s^9 is accurate to ~1e-9,
// below float resolution.
inline float log_unit(float u) {
  const std::uint32_t bits = float_to_bits(u);
  const std::uint32_t mantissa_bits = bits & 0x7FFFFFU;
  // high: mantissa >= sqrt(2) (0x3504F3 is the mantissa field of sqrt(2) in [1, 2)); then halve
  // the mantissa and carry one into the exponent. Integer selects keep the loop branch-free.
  const std::uint32_t high = mantissa_bits >= 0x3504F3U ? 1U : 0U;
  const int exponent = static_cast<int>((bits >> 23) & 0xFFU) - 127 + static_cast<int>(high);
  const float mantissa = bits_to_float(mantissa_bits | (0x3F800000U - (high << 23)));
  const float s = (mantissa - 1.0F) / (mantissa + 1.0F);
  const float s2 = s * s;
  const float series =
      1.0F + s2 * (1.0F / 3.0F + s2 * (1.0F / 5.0F + s2 * (1.0F / 7.0F + s2 * (1.0F / 9.0F))));
  return static_cast<float>(exponent) * 0.693147180559945F + 2.0F * s * series;
}

// One complex Gaussian entry from two 32-bit hashes (Box-Muller): radius from b1, direction from
// b2. The direction is a quadrant (top two bits) plus an angle in (-pi/4, pi/4) from 22 bits, where
// degree-7/8 Taylor polynomials of sin/cos are accurate to 3e-7 (float resolution).
inline void gaussian_pair(std::uint32_t b1, std::uint32_t b2, float sigma, float* re, float* im) {
  const float u = (static_cast<float>(b1 >> 8) + 0.5F) * 0x1.0p-24F;  // (0, 1)
  const float radius = sigma * std::sqrt(-2.0F * log_unit(u));
  const std::uint32_t quadrant = b2 >> 30;
  const float frac = (static_cast<float>((b2 >> 8) & 0x3FFFFFU) + 0.5F) * 0x1.0p-22F;
  const float theta = (frac - 0.5F) * 1.57079632679F;
  const float t = theta * theta;
  const float sin_t =
      theta * (1.0F + t * (-1.0F / 6.0F + t * (1.0F / 120.0F + t * (-1.0F / 5040.0F))));
  const float cos_t =
      1.0F + t * (-0.5F + t * (1.0F / 24.0F + t * (-1.0F / 720.0F + t * (1.0F / 40320.0F))));
  // Rotate (cos, sin) by quadrant * 90 degrees: exact swaps and sign flips, done on the bits.
  const std::uint32_t swap_mask = 0U - (quadrant & 1U);
  const std::uint32_t sin_bits = float_to_bits(sin_t);
  const std::uint32_t cos_bits = float_to_bits(cos_t);
  const std::uint32_t x_bits = (sin_bits & swap_mask) | (cos_bits & ~swap_mask);
  const std::uint32_t y_bits = (cos_bits & swap_mask) | (sin_bits & ~swap_mask);
  const std::uint32_t sign_x = ((quadrant ^ (quadrant >> 1)) & 1U) << 31;  // quadrants 1 and 2
  const std::uint32_t sign_y = (quadrant >> 1) << 31;                      // quadrants 2 and 3
  *re = radius * bits_to_float(x_bits ^ sign_x);
  *im = radius * bits_to_float(y_bits ^ sign_y);
}

inline void entry_from_counter(std::uint32_t counter, float sigma, float* re, float* im) {
  const std::uint32_t b1 = lowbias32(counter);
  const std::uint32_t b2 = lowbias32(b1 + kSecondDraw);
  gaussian_pair(b1, b2, sigma, re, im);
}

}  // namespace

TransmissionMatrixGenerator::TransmissionMatrixGenerator(std::uint64_t seed, std::int64_t n_in,
                                                         std::uint64_t realisation)
    : n_in_(n_in), sigma_(static_cast<float>(std::sqrt(1.0 / static_cast<double>(n_in)))) {
  const std::uint64_t key =
      splitmix64(splitmix64(seed ^ (static_cast<std::uint64_t>(kGeneratorVersion) << 48)) ^
                 splitmix64(realisation));
  row_key_ = static_cast<std::uint32_t>(key);
  col_key_ = static_cast<std::uint32_t>(key >> 32);
}

std::complex<float> TransmissionMatrixGenerator::entry(std::int64_t row, std::int64_t col) const {
  float re = 0.0F;
  float im = 0.0F;
  entry_from_counter(row_hash(row_key_, row) + col_hash(col_key_, col), sigma_, &re, &im);
  return {re, im};
}

void TransmissionMatrixGenerator::fill_tile(std::int64_t row0, std::int64_t rows,
                                            std::int64_t col0, std::int64_t cols,
                                            std::complex<float>* out, std::int64_t ld) const {
  // Row hashes once per tile; the inner loop over rows is then branch-free integer and float
  // arithmetic that the compiler vectorises (8 lanes with AVX2).
  thread_local std::vector<std::uint32_t> row_hashes;
  thread_local std::vector<float> re_buffer;
  thread_local std::vector<float> im_buffer;
  row_hashes.resize(static_cast<std::size_t>(rows));
  re_buffer.resize(static_cast<std::size_t>(rows));
  im_buffer.resize(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) row_hashes[r] = row_hash(row_key_, row0 + r);

  const float sigma = sigma_;
  std::uint32_t* __restrict hashes = row_hashes.data();
  float* __restrict re = re_buffer.data();
  float* __restrict im = im_buffer.data();
  for (std::int64_t c = 0; c < cols; ++c) {
    const std::uint32_t column = col_hash(col_key_, col0 + c);
    for (std::int64_t r = 0; r < rows; ++r) {
      entry_from_counter(hashes[r] + column, sigma, &re[r], &im[r]);
    }
    // Interleave into complex layout (a separate pass keeps the loop above vectorisable).
    float* destination = reinterpret_cast<float*>(out + c * ld);
    for (std::int64_t r = 0; r < rows; ++r) {
      destination[2 * r] = re[r];
      destination[2 * r + 1] = im[r];
    }
  }
}

}  // namespace opu::sim
