// FrameTaker: how every calibration procedure takes camera frames. It sees the device only through
// the opu::sim::Device interface (local simulator, opu-serve, or a real device's driver), splits
// large batches into calls the device accepts, reports progress, and adds up the frames and the
// device time a procedure cost.
//
// Not thread-safe (one procedure owns one FrameTaker); the Device it wraps is.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "opu_sim/device.h"
#include "opu_sim/status.h"

namespace opu::calibration {

/// 0/1 frames, one frame per column (n_in x batch).
using BitMatrix = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic>;

/// Progress of a long run: `stage` names the step, `done` of `total` frames of that step are taken.
/// Called from the thread that runs the procedure.
using Progress = std::function<void(std::string_view stage, std::int64_t done, std::int64_t total)>;

/// Counts taken by one call of FrameTaker::take(): n_out x batch floats, plus which readings hit
/// the ADC's full scale (a clipped reading is only a lower bound on the light).
struct Counts {
  Eigen::MatrixXf values;                                         // n_out x batch
  Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic> saturated;  // n_out x batch
  std::int64_t device_time_start_ns = 0;                          // clock at the first frame
  std::int64_t device_time_end_ns = 0;                            // clock after the last frame
};

class FrameTaker {
 public:
  /// `device` must outlive the taker. `progress` may be empty.
  FrameTaker(sim::Device& device, Progress progress = {});

  const sim::DeviceInfo& info() const { return info_; }
  sim::Device& device() { return device_; }
  /// Largest count the ADC reports: 2^adc_bits - 1.
  double full_scale() const;

  /// Takes the frames `bits` (n_in x batch, any n_in <= max_n_in; mirrors beyond n_in stay off),
  /// reading the first `n_out` pixels at `exposure_us` (0 = the device default). Calls of at most
  /// `chunk` frames; progress is reported under `stage`.
  Result<Counts> take(const Eigen::Ref<const BitMatrix>& bits, std::int64_t n_out,
                      double exposure_us, std::string_view stage);

  /// Frames taken through this taker so far, and the device time they cost.
  std::int64_t frames() const { return frames_; }
  double device_time_s() const { return static_cast<double>(device_time_ns_) * 1e-9; }
  /// Device clock after the last frame taken (0 before the first).
  std::int64_t clock_ns() const { return clock_ns_; }

 private:
  sim::Device& device_;
  sim::DeviceInfo info_;
  Progress progress_;
  std::int64_t frames_ = 0;
  std::int64_t device_time_ns_ = 0;
  std::int64_t clock_ns_ = 0;
};

/// Pearson correlation of two equally sized arrays (NaN when either is constant).
double pearson(const Eigen::Ref<const Eigen::ArrayXd>& a,
               const Eigen::Ref<const Eigen::ArrayXd>& b);

/// A deterministic stream of uniform numbers and Bernoulli bits for choosing input patterns
/// (splitmix64: the choice of patterns must be reproducible across platforms, so no
/// std::*_distribution).
class PatternRng {
 public:
  explicit PatternRng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  /// Uniform in [0, 1).
  double uniform();
  /// Uniform integer in [0, n).
  std::int64_t below(std::int64_t n);
  /// n x batch random 0/1 frames, each bit on with probability `density`.
  BitMatrix bernoulli(std::int64_t n, std::int64_t batch, double density);

 private:
  std::uint64_t state_;
};

}  // namespace opu::calibration
