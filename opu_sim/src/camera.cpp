#include "camera.h"

#include <algorithm>
#include <cmath>

#include "gaussian.h"
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

// A reading rounded to the nearest count and clipped to [0, full_scale]: it saturated when it
// equals full_scale.
inline float to_count(float reading, float full_scale) {
  return std::min(std::max(std::floor(reading + 0.5F), 0.0F), full_scale);
}

// Readings as counts in the wire layout (one byte per pixel, or little-endian uint16); returns
// how many saturated. One loop per layout, through local pointers, so that each vectorises.
std::int64_t quantise(const std::vector<float>& readings, float full_scale, int bytes_per_pixel,
                      std::uint8_t* __restrict out) {
  std::int64_t saturated = 0;
  const auto n = static_cast<std::int64_t>(readings.size());
  const float* __restrict in = readings.data();
  if (bytes_per_pixel == 1) {
    for (std::int64_t p = 0; p < n; ++p) {
      const float count = to_count(in[p], full_scale);
      saturated += count == full_scale ? 1 : 0;
      out[p] = static_cast<std::uint8_t>(static_cast<std::int32_t>(count));
    }
    return saturated;
  }
  for (std::int64_t p = 0; p < n; ++p) {
    const float count = to_count(in[p], full_scale);
    saturated += count == full_scale ? 1 : 0;
    const auto bits = static_cast<std::uint32_t>(count);
    out[2 * p] = static_cast<std::uint8_t>(bits & 0xFFU);
    out[2 * p + 1] = static_cast<std::uint8_t>(bits >> 8);
  }
  return saturated;
}

// The same counts, kept as floats.
std::int64_t quantise_to_float(const std::vector<float>& readings, float full_scale,
                               float* __restrict out) {
  std::int64_t saturated = 0;
  const auto n = static_cast<std::int64_t>(readings.size());
  const float* __restrict in = readings.data();
  for (std::int64_t p = 0; p < n; ++p) {
    out[p] = to_count(in[p], full_scale);
    saturated += out[p] == full_scale ? 1 : 0;
  }
  return saturated;
}

}  // namespace

std::int64_t poisson(double lambda, CounterStream& stream) {
  if (lambda <= 0.0) return 0;
  return lambda < 10.0 ? poisson_inversion(lambda, stream) : poisson_ptrs(lambda, stream);
}

bool Camera::gaussian_noise(double lambda) const {
  // Poisson(λ) + N(0, σ_read²) has mean λ, variance λ + σ_read² and skewness
  // λ / (λ + σ_read²)^1.5. Where that skewness is below kMaxGaussianSkew the sum is drawn as one
  // Gaussian with the same mean and variance: indistinguishable at the counts (one ADC step is
  // 40 e-), and an order of magnitude cheaper (vectorised). With the default 10 e- read noise
  // that is every pixel (the skewness peaks at 0.038 at λ = 200 e-); without read noise, from
  // λ = 400 e- on. exact_shot_noise forces Poisson draws everywhere.
  if (config_.exact_shot_noise && shot_noise_) return false;
  const double shot = shot_noise_ ? lambda : 0.0;
  const double variance = shot + read_variance_;
  return shot * shot <= kMaxGaussianSkew * kMaxGaussianSkew * variance * variance * variance;
}

double Camera::exact_reading(double lambda, std::uint64_t frame, std::int64_t pixel) const {
  CounterStream stream(splitmix64(noise_key_ ^ splitmix64(frame)) +
                       static_cast<std::uint64_t>(pixel) * 0xD1B54A32D192ED03ULL);
  double electrons = shot_noise_ ? static_cast<double>(poisson(lambda, stream)) : lambda;
  if (read_variance_ > 0.0) {
    const double radius = std::sqrt(-2.0 * std::log(stream.uniform()));
    electrons += config_.read_noise_e * radius * std::cos(kTwoPi * stream.uniform());
  }
  return electrons;
}

template <typename Store>
std::int64_t Camera::read_frames(const Eigen::Ref<const Eigen::MatrixXf>& intensity,
                                 double exposure_us, std::int64_t first_frame, int threads,
                                 const Store& store) const {
  const std::int64_t n_out = intensity.rows();
  const std::int64_t batch = intensity.cols();
  const auto electrons_per_intensity = static_cast<float>(config_.photons_per_us * exposure_us);
  const auto counts_per_electron = static_cast<float>(1.0 / config_.gain_e_per_count);
  const auto dark = static_cast<float>(config_.dark_offset_counts);
  const auto read_variance = static_cast<float>(read_variance_);
  const float shot_weight = shot_noise_ ? 1.0F : 0.0F;
  std::int64_t saturated = 0;
#pragma omp parallel num_threads(threads) reduction(+ : saturated)
  {
    std::vector<float> counts(static_cast<std::size_t>(n_out));
    std::vector<std::uint32_t> first_hashes(static_cast<std::size_t>(n_out));
    std::vector<std::uint32_t> second_hashes(static_cast<std::size_t>(n_out));
    std::vector<float> angles(static_cast<std::size_t>(n_out));
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto frame = static_cast<std::uint64_t>(first_frame + b);
      const std::uint64_t frame_key = splitmix64(noise_key_ ^ splitmix64(frame));
      const auto key_low = static_cast<std::uint32_t>(frame_key);
      const auto key_high = static_cast<std::uint32_t>(frame_key >> 32);
      const float* column = intensity.col(b).data();
      float* __restrict out = counts.data();
      std::uint32_t* __restrict b1 = first_hashes.data();
      std::uint32_t* __restrict b2 = second_hashes.data();
      // One Gaussian per reading from 32-bit counter hashes of (frame, pixel): the real part of
      // gaussian_pair(b1, b2, 1), in vectorised stages (each hash, the log's two halves, the
      // radius, the angle, the direction, the reading) whose short loops the CPU overlaps, where
      // one fused loop waits on its long chain of dependent operations. The same operations per
      // reading: the same bits.
      for (std::int64_t p = 0; p < n_out; ++p) {
        b1[p] = lowbias32(lowbias32(static_cast<std::uint32_t>(p) ^ key_low) + key_high);
      }
      for (std::int64_t p = 0; p < n_out; ++p) b2[p] = lowbias32(b1[p] + 0x1B873593U);
      gaussian_radii(b1, n_out, 1.0F, out);  // 1 x r is exact: gaussian_pair's sigma of 1
      float* __restrict angle = angles.data();
      for (std::int64_t p = 0; p < n_out; ++p) angle[p] = phasor_angle(b2[p]);
      for (std::int64_t p = 0; p < n_out; ++p) {
        float x = 0.0F;
        float unused = 0.0F;
        unit_phasor_at(b2[p], angle[p], &x, &unused);
        out[p] = out[p] * x;
      }
      for (std::int64_t p = 0; p < n_out; ++p) {
        const float lambda = electrons_per_intensity * column[p];
        const float electrons = lambda + std::sqrt(shot_weight * lambda + read_variance) * out[p];
        out[p] = electrons * counts_per_electron + dark;
      }
      // The readings a Gaussian would misrepresent (no read noise, or exact_shot_noise): redone
      // with Poisson draws. None with the default camera.
      if (!gaussian_everywhere_) {
        for (std::int64_t p = 0; p < n_out; ++p) {
          const double lambda = static_cast<double>(electrons_per_intensity) * column[p];
          if (gaussian_noise(lambda)) continue;
          out[p] = static_cast<float>(exact_reading(lambda, frame, p) / config_.gain_e_per_count +
                                      config_.dark_offset_counts);
        }
      }
      saturated += store(b, counts);
    }
  }
  return saturated;
}

std::int64_t Camera::read(const Eigen::Ref<const Eigen::MatrixXf>& intensity, double exposure_us,
                          std::int64_t first_frame, int threads,
                          std::vector<std::uint8_t>& data) const {
  const std::int64_t n_out = intensity.rows();
  const int bytes_per_pixel = config_.adc_bits <= 8 ? 1 : 2;
  const auto full_scale = static_cast<float>(config_.full_scale());
  data.resize(static_cast<std::size_t>(n_out * intensity.cols() * bytes_per_pixel));
  return read_frames(intensity, exposure_us, first_frame, threads,
                     [&](std::int64_t b, const std::vector<float>& counts) {
                       return quantise(counts, full_scale, bytes_per_pixel,
                                       data.data() + b * n_out * bytes_per_pixel);
                     });
}

std::int64_t Camera::read_in_place(Eigen::Ref<Eigen::MatrixXf> intensity, double exposure_us,
                                   std::int64_t first_frame, int threads) const {
  const auto full_scale = static_cast<float>(config_.full_scale());
  // Each frame's readings are computed from its column before store() overwrites it.
  return read_frames(intensity, exposure_us, first_frame, threads,
                     [&](std::int64_t b, const std::vector<float>& counts) {
                       return quantise_to_float(counts, full_scale, intensity.col(b).data());
                     });
}

void Camera::read_float(Eigen::Ref<Eigen::MatrixXf> intensity, double exposure_us) const {
  intensity *= static_cast<float>(config_.counts_per_intensity(exposure_us));
  intensity.array() += static_cast<float>(config_.dark_offset_counts);
}

}  // namespace opu::sim::detail
