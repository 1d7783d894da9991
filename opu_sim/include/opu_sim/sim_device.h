// The simulated OPU: medium (transmission matrix, optional drift), camera, device clock and the
// holographic linear mode, behind the Device interface.
//
// Every parameter has one name, used alike by `sim://?name=value&...` URIs, by opu-serve's flags
// (--name-with-dashes) and by JSON config files: see SimConfig::from_params().
#pragma once

#include <complex>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "opu_sim/device.h"
#include "opu_sim/holography.h"
#include "opu_sim/medium.h"
#include "opu_sim/status.h"

namespace opu::sim {

enum class MediumKind { kAuto, kDense, kStreamed, kStructured };
std::string_view medium_kind_name(MediumKind kind);

/// Camera model (docs/design.md §2.4). Counts = clip(round((Poisson(λ) + N(0, σ_read²)) / gain)
/// + dark), λ = photons_per_us · exposure_us · |E|² photo-electrons. With the defaults, a frame
/// with half its mirrors on (mean |E|² = 1) reads a mean of 20 counts at the default exposure:
/// speckle contrast 1, shot noise ~0.7 count, read noise 0.25 count, saturation at 255 ~12.7x the
/// mean (rare).
struct CameraConfig {
  bool ideal = false;               // no noise, no quantisation, no clipping (float output in-process)
  int adc_bits = 8;                 // 1..16
  double exposure_us = 400.0;       // default exposure
  double max_exposure_us = 100000;  // longest accepted exposure
  double photons_per_us = 2.0;      // photo-electrons per µs per unit |E|² (κ)
  double gain_e_per_count = 40.0;   // ADC gain, electrons per count
  double read_noise_e = 10.0;       // read-noise standard deviation, electrons
  double dark_offset_counts = 2.0;  // bias added to every reading, counts
  bool shot_noise = true;           // Poisson photo-electrons (off: λ exactly)
  bool read_noise = true;
  /// Draw every shot-noise sample from the Poisson law. Off: where shot + read noise is nearly
  /// symmetric (skewness < 0.05: every pixel with the default read noise) it is drawn as one
  /// Gaussian of the same mean and variance, which is several times faster.
  bool exact_shot_noise = false;
  double readout_us = 400.0;        // sensor readout time
  double overhead_us = 100.0;       // per-frame overhead
  /// Device time of one frame at this exposure: max(exposure, readout) + overhead.
  double frametime_us(double exposure) const;
  /// Expected count (before noise and clipping) for intensity |E|² at an exposure.
  double counts_per_intensity(double exposure) const {
    return photons_per_us * exposure / gain_e_per_count;
  }
  /// Largest count: 2^adc_bits - 1.
  std::uint32_t full_scale() const { return (1U << adc_bits) - 1U; }
};

struct SimConfig {
  std::uint64_t seed = 7;          // the medium: same seed = same device
  std::uint64_t noise_seed = 0;    // camera noise stream; 0 = derived from seed
  std::int64_t n_in = 1024;        // mirrors
  std::int64_t n_out = 1024;       // camera pixels
  MediumKind medium = MediumKind::kAuto;
  CameraConfig camera;
  double drift_tau_s = 0.0;   // decorrelation period T of the medium (docs/design.md §2.5); 0 = off
  bool realtime = false;           // pace calls to the device clock (sleep until it catches up)
  int threads = 1;                 // compute threads for one request
  std::int64_t max_batch = 1 << 16;
  HolographyConfig holography;
  FftOptions fft;                  // structured medium only

  /// Builds a config from name -> value pairs (URI query, flags, JSON), starting at the defaults.
  /// Unknown names and malformed values are INVALID_ARGUMENT naming the parameter, the value and
  /// what was expected. `camera=ideal|realistic` selects a preset before the individual settings.
  static Result<SimConfig> from_params(const std::map<std::string, std::string>& params);
  /// Every accepted parameter name with a one-line description and its default, for --help.
  static std::vector<std::pair<std::string, std::string>> describe_params();
  /// Checks ranges (n_in >= 1, adc_bits in [1,16], ...).
  Status validate() const;
};

/// Parameters of a `sim://?...` URI's query ("a=1&b=2") as a map; rejects malformed pairs.
Result<std::map<std::string, std::string>> parse_query(std::string_view query);

/// The simulator. Thread-safe; the device clock and frame counter are guarded by one mutex, and
/// everything else is immutable after construction (or a cache guarded by its own mutex).
class SimDevice final : public Device {
 public:
  static Result<std::unique_ptr<SimDevice>> create(const SimConfig& config);
  ~SimDevice() override;

  DeviceInfo info() const override;
  const SimConfig& config() const;

  /// Ideal-camera intensities as floats in counts (no noise, no quantisation, no clipping),
  /// n_out x batch. In-process only; advances the clock like transform().
  Result<Eigen::MatrixXf> transform_float(const TransformRequest& request);

  /// The exact digital projector: B·v with the same matrix B the holographic path realises
  /// (same medium, same layout, same reference phase and mask), computed in floats with no optics.
  /// The control for every OPU experiment. Does not advance the clock.
  Result<Eigen::MatrixXf> exact_linear(const LinearRequest& request) const;

  /// Entry (i, j) of the transmission matrix at device time t (reveals the medium: simulator only,
  /// for tests and calibration checks).
  std::complex<float> matrix_entry(std::int64_t row, std::int64_t col, double time_s = 0.0) const;

  /// Device clock, nanoseconds.
  std::int64_t device_time_ns() const;
  /// Camera frames taken so far.
  std::int64_t frames_taken() const;

 protected:
  Result<Frames> do_transform(const TransformRequest& request) override;
  Result<Projections> do_linear_transform(const LinearRequest& request) override;

 private:
  struct Impl;
  explicit SimDevice(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace opu::sim
