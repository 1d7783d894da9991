// The camera model (DESIGN.md §2.4). Internal to the simulator.
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

/// Thread-safe (immutable).
class Camera {
 public:
  Camera(const CameraConfig& config, std::uint64_t noise_key)
      : config_(config), noise_key_(noise_key) {}

  /// Reads intensities |E|^2 (n_out x batch, field units) as counts, in the wire layout, for frames
  /// first_frame, first_frame + 1, ... Noise is a pure function of (noise key, frame, pixel): a
  /// run is reproducible and repeated frames still differ. Returns the saturated readings.
  std::int64_t read(const Eigen::Ref<const Eigen::MatrixXf>& intensity, double exposure_us,
                    std::int64_t first_frame, int threads, std::vector<std::uint8_t>& data) const;

  /// Noiseless, unquantised, unclipped counts (the ideal camera's float output), in place.
  void read_float(Eigen::Ref<Eigen::MatrixXf> intensity, double exposure_us) const;

  const CameraConfig& config() const { return config_; }

 private:
  double reading(double lambda, std::uint64_t frame, std::int64_t pixel) const;

  CameraConfig config_;
  std::uint64_t noise_key_;
};

}  // namespace opu::sim::detail
