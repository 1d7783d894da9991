// Our own Gaussian transform: Box-Muller from integer hashes, with log, sin and cos as polynomials
// built from +, -, *, / and sqrt only. IEEE-exact operations (and -ffp-contract=off) make its bits
// the same on every x86-64 or ARM machine, whatever the vector width. Internal.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace opu::sim::detail {

inline float bits_to_float(std::uint32_t bits) { return std::bit_cast<float>(bits); }
inline std::uint32_t float_to_bits(float value) { return std::bit_cast<std::uint32_t>(value); }

// Natural log of u in (0, 1) from +, -, *, / only: u = m * 2^e with m in [sqrt(1/2), sqrt(2)),
// ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172: the series to s^9 is accurate to ~1e-9,
// below float resolution. In two parts, so that loops over many numbers can run them as separate
// stages (see gaussian_radii): s and e ln 2 first (the division), then the series.
inline void log_unit_parts(float u, float* s, float* exponent_term) {
  const std::uint32_t bits = float_to_bits(u);
  const std::uint32_t mantissa_bits = bits & 0x7FFFFFU;
  // high: mantissa >= sqrt(2) (0x3504F3 is the mantissa field of sqrt(2) in [1, 2)); then halve
  // the mantissa and carry one into the exponent. Integer selects keep the loop branch-free.
  const std::uint32_t high = mantissa_bits >= 0x3504F3U ? 1U : 0U;
  const int exponent = static_cast<int>((bits >> 23) & 0xFFU) - 127 + static_cast<int>(high);
  const float mantissa = bits_to_float(mantissa_bits | (0x3F800000U - (high << 23)));
  *s = (mantissa - 1.0F) / (mantissa + 1.0F);
  *exponent_term = static_cast<float>(exponent) * 0.693147180559945F;
}
inline float log_from_parts(float s, float exponent_term) {
  const float s2 = s * s;
  const float series =
      1.0F + s2 * (1.0F / 3.0F + s2 * (1.0F / 5.0F + s2 * (1.0F / 7.0F + s2 * (1.0F / 9.0F))));
  return exponent_term + 2.0F * s * series;
}
inline float log_unit(float u) {
  float s = 0.0F;
  float exponent_term = 0.0F;
  log_unit_parts(u, &s, &exponent_term);
  return log_from_parts(s, exponent_term);
}

// A unit complex number of uniformly random direction from 32 hash bits: a quadrant (top two
// bits) plus an angle in (-pi/4, pi/4) from 22 bits, where degree-7/8 Taylor polynomials of sin
// and cos are accurate to 3e-7 (float resolution); the quadrant rotation is exact (swaps and sign
// flips done on the bits). In two parts for loops that run them as separate stages: the angle
// from the bits, then the direction at that angle.
inline float phasor_angle(std::uint32_t bits) {
  const float frac = (static_cast<float>((bits >> 8) & 0x3FFFFFU) + 0.5F) * 0x1.0p-22F;
  return (frac - 0.5F) * 1.57079632679F;
}
inline void unit_phasor_at(std::uint32_t bits, float theta, float* x, float* y) {
  const std::uint32_t quadrant = bits >> 30;
  const float t = theta * theta;
  const float sin_t =
      theta * (1.0F + t * (-1.0F / 6.0F + t * (1.0F / 120.0F + t * (-1.0F / 5040.0F))));
  const float cos_t =
      1.0F + t * (-0.5F + t * (1.0F / 24.0F + t * (-1.0F / 720.0F + t * (1.0F / 40320.0F))));
  const std::uint32_t swap_mask = 0U - (quadrant & 1U);
  const std::uint32_t sin_bits = float_to_bits(sin_t);
  const std::uint32_t cos_bits = float_to_bits(cos_t);
  const std::uint32_t x_bits = (sin_bits & swap_mask) | (cos_bits & ~swap_mask);
  const std::uint32_t y_bits = (cos_bits & swap_mask) | (sin_bits & ~swap_mask);
  const std::uint32_t sign_x = ((quadrant ^ (quadrant >> 1)) & 1U) << 31;  // quadrants 1 and 2
  const std::uint32_t sign_y = (quadrant >> 1) << 31;                      // quadrants 2 and 3
  *x = bits_to_float(x_bits ^ sign_x);
  *y = bits_to_float(y_bits ^ sign_y);
}
inline void unit_phasor(std::uint32_t bits, float* x, float* y) {
  unit_phasor_at(bits, phasor_angle(bits), x, y);
}

// The top 24 bits of a hash as a uniform number in (0, 1).
inline float unit_interval(std::uint32_t bits) {
  return (static_cast<float>(bits >> 8) + 0.5F) * 0x1.0p-24F;
}

// The Box-Muller radius sigma * sqrt(-2 ln u) of hash b1, u = unit_interval(b1).
inline float gaussian_radius(std::uint32_t b1, float sigma) {
  return sigma * std::sqrt(-2.0F * log_unit(unit_interval(b1)));
}

// gaussian_radius() of n hashes, in three vectorised stages (the log's division, its series, the
// square root): loops over many entries run faster split in stages, because one entry's chain of
// dependent divisions, square roots and polynomials is longer than the out-of-order window can
// overlap, and a stage's is not (splitting the log in two made the generator 5% faster). The same
// operations per entry: the same bits.
inline void gaussian_radii(const std::uint32_t* __restrict b1, std::int64_t n, float sigma,
                           float* __restrict radius) {
  constexpr std::int64_t kBlock = 256;
  float s_block[kBlock];
  float exponent_block[kBlock];
  for (std::int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const std::int64_t m = std::min(kBlock, n - i0);
    for (std::int64_t i = 0; i < m; ++i) {
      log_unit_parts(unit_interval(b1[i0 + i]), &s_block[i], &exponent_block[i]);
    }
    for (std::int64_t i = 0; i < m; ++i) {
      radius[i0 + i] = log_from_parts(s_block[i], exponent_block[i]);
    }
  }
  for (std::int64_t i = 0; i < n; ++i) radius[i] = sigma * std::sqrt(-2.0F * radius[i]);
}

// One complex Gaussian entry from two 32-bit hashes (Box-Muller): radius from b1, direction from
// b2. Over many entries, gaussian_radii(), then phasor_angle() and unit_phasor_at() as two more
// stages, give the same bits faster.
inline void gaussian_pair(std::uint32_t b1, std::uint32_t b2, float sigma, float* re, float* im) {
  const float radius = gaussian_radius(b1, sigma);
  float x = 0.0F;
  float y = 0.0F;
  unit_phasor(b2, &x, &y);
  *re = radius * x;
  *im = radius * y;
}

}  // namespace opu::sim::detail
