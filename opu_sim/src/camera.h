// The camera model (docs/design.md §2.4). Internal to the simulator.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

#include "opu_sim/sim_device.h"

namespace opu::sim::detail {

/// Poisson(lambda) from a counter-based stream: inversion for small lambda, Hörmann's PTRS
/// (transformed rejection with squeeze, 1993) from lambda >= 10.
class CounterStream;
std::int64_t poisson(double lambda, CounterStream& stream);

/// Shot + read noise is drawn as one Gaussian where its skewness is below this (camera.cpp).
inline constexpr double kMaxGaussianSkew = 0.05;
/// With at least this read-noise variance (electrons^2) the skewness λ/(λ+σ²)^1.5, whose maximum
/// over λ is 2/(3 sqrt 3 σ), stays below kMaxGaussianSkew for every λ: σ >= 7.7 e-.
inline constexpr double kGaussianReadVariance = 4.0 / (27.0 * kMaxGaussianSkew * kMaxGaussianSkew);

/// Thread-safe (immutable).
class Camera {
 public:
  Camera(const CameraConfig& config, std::uint64_t noise_key)
      : config_(config),
        noise_key_(noise_key),
        shot_noise_(config.shot_noise && !config.ideal),
        read_variance_(
            config.read_noise && !config.ideal ? config.read_noise_e * config.read_noise_e : 0.0),
        // Noiseless cameras draw normals and weigh them by zero; the Gaussian path is then exact.
        gaussian_everywhere_(!(config.exact_shot_noise && shot_noise_) &&
                             (!shot_noise_ || read_variance_ >= kGaussianReadVariance)) {}

  /// Reads intensities |E|^2 (n_out x batch, field units) as counts, in the wire layout, for frames
  /// first_frame, first_frame + 1, ... Noise is a pure function of (noise key, frame, pixel): a
  /// run is reproducible and repeated frames still differ. Returns the saturated readings.
  std::int64_t read(const Eigen::Ref<const Eigen::MatrixXf>& intensity, double exposure_us,
                    std::int64_t first_frame, int threads, std::vector<std::uint8_t>& data) const;

  /// The same readings as read(), as integer-valued floats in place of the intensities: what the
  /// in-process holography reads, without a trip through the wire layout's bytes.
  std::int64_t read_in_place(Eigen::Ref<Eigen::MatrixXf> intensity, double exposure_us,
                             std::int64_t first_frame, int threads) const;
  /// Noiseless, unquantised, unclipped counts (the ideal camera's float output), in place.
  void read_float(Eigen::Ref<Eigen::MatrixXf> intensity, double exposure_us) const;

  const CameraConfig& config() const { return config_; }

 private:
  /// The noisy readings of each frame, unrounded, handed to store(frame, readings), which
  /// quantises them and returns how many saturated. Frames run in parallel.
  template <typename Store>
  std::int64_t read_frames(const Eigen::Ref<const Eigen::MatrixXf>& intensity, double exposure_us,
                           std::int64_t first_frame, int threads, const Store& store) const;
  /// Whether a reading at λ expected electrons is drawn as one Gaussian (see camera.cpp).
  bool gaussian_noise(double lambda) const;
  /// Poisson shot noise plus read noise, in electrons, from the reading's own counter stream.
  double exact_reading(double lambda, std::uint64_t frame, std::int64_t pixel) const;

  CameraConfig config_;
  std::uint64_t noise_key_;
  bool shot_noise_;
  double read_variance_;      // electrons^2
  bool gaussian_everywhere_;  // no reading needs the exact path
};

}  // namespace opu::sim::detail
