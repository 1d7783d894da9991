#include "camera.h"

#include <algorithm>
#include <cmath>

#include "hash.h"

namespace opu::sim::detail {
namespace {

constexpr double kTwoPi = 6.283185307179586;

std::int64_t poisson_inversion(double lambda, CounterStream& stream) {
  // Multiply uniforms until the product drops below exp(-lambda): lambda + 1 draws on average.
  const double limit = std::exp(-lambda);
  std::int64_t k = 0;
  double product = stream.uniform();
  while (product > limit) {
    ++k;
    product *= stream.uniform();
  }
  return k;
}

// PTRS, W. Hörmann, "The transformed rejection method for generating Poisson random variables",
// Insurance: Mathematics and Economics 12 (1993); constants as published, valid for lambda >= 10.
std::int64_t poisson_ptrs(double lambda, CounterStream& stream) {
  const double slam = std::sqrt(lambda);
  const double loglam = std::log(lambda);
  const double b = 0.931 + 2.53 * slam;
  const double a = -0.059 + 0.02483 * b;
  const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
  const double vr = 0.9277 - 3.6224 / (b - 2.0);
  while (true) {
    const double u = stream.uniform() - 0.5;
    const double v = stream.uniform();
    const double us = 0.5 - std::abs(u);
    const double k = std::floor((2.0 * a / us + b) * u + lambda + 0.43);
    if (us >= 0.07 && v <= vr) return static_cast<std::int64_t>(k);
    if (k < 0.0 || (us < 0.013 && v > us)) continue;
    if (std::log(v) + std::log(inv_alpha) - std::log(a / (us * us) + b) <=
        -lambda + k * loglam - std::lgamma(k + 1.0)) {
      return static_cast<std::int64_t>(k);
    }
  }
}

}  // namespace

std::int64_t poisson(double lambda, CounterStream& stream) {
  if (lambda <= 0.0) return 0;
  return lambda < 10.0 ? poisson_inversion(lambda, stream) : poisson_ptrs(lambda, stream);
}

double Camera::reading(double lambda, std::uint64_t frame, std::int64_t pixel) const {
  CounterStream stream(splitmix64(noise_key_ ^ splitmix64(frame)) +
                       static_cast<std::uint64_t>(pixel) * 0xD1B54A32D192ED03ULL);
  double electrons = config_.shot_noise && !config_.ideal
                         ? static_cast<double>(poisson(lambda, stream))
                         : lambda;
  if (config_.read_noise && !config_.ideal && config_.read_noise_e > 0.0) {
    const double radius = std::sqrt(-2.0 * std::log(stream.uniform()));
    electrons += config_.read_noise_e * radius * std::cos(kTwoPi * stream.uniform());
  }
  return electrons / config_.gain_e_per_count + config_.dark_offset_counts;
}

std::int64_t Camera::read(const Eigen::Ref<const Eigen::MatrixXf>& intensity, double exposure_us,
                          std::int64_t first_frame, int threads,
                          std::vector<std::uint8_t>& data) const {
  const std::int64_t n_out = intensity.rows();
  const std::int64_t batch = intensity.cols();
  const int bytes_per_pixel = config_.adc_bits <= 8 ? 1 : 2;
  const double full_scale = static_cast<double>(config_.full_scale());
  const double electrons_per_intensity = config_.photons_per_us * exposure_us;
  data.assign(static_cast<std::size_t>(n_out * batch * bytes_per_pixel), 0);
  std::int64_t saturated = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : saturated)
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto frame = static_cast<std::uint64_t>(first_frame + b);
    for (std::int64_t p = 0; p < n_out; ++p) {
      const double lambda = electrons_per_intensity * static_cast<double>(intensity(p, b));
      const double rounded = std::floor(reading(lambda, frame, p) + 0.5);
      if (rounded >= full_scale) ++saturated;
      const auto count = static_cast<std::uint32_t>(std::clamp(rounded, 0.0, full_scale));
      const std::size_t index = static_cast<std::size_t>(b * n_out + p);
      if (bytes_per_pixel == 1) {
        data[index] = static_cast<std::uint8_t>(count);
      } else {
        data[2 * index] = static_cast<std::uint8_t>(count & 0xFFU);
        data[2 * index + 1] = static_cast<std::uint8_t>(count >> 8);
      }
    }
  }
  return saturated;
}

void Camera::read_float(Eigen::Ref<Eigen::MatrixXf> intensity, double exposure_us) const {
  intensity *= static_cast<float>(config_.counts_per_intensity(exposure_us));
  intensity.array() += static_cast<float>(config_.dark_offset_counts);
}

}  // namespace opu::sim::detail
