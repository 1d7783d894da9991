// How good is a projection B·e? Measurement and camera-model prediction of its signal-to-noise
// ratio, and its distortion against a reference projection (docs/noise-study.md).
//
// - measure_snr(): projects the same batch K times through any projector (a Device's linear
//   transform, a FeedbackSource). Noise = the across-repeat variance per element, averaged;
//   signal = the variance of the K-repeat mean over elements minus the noise share noise / K.
//   Works on any device, local or remote; needs nothing but repeated calls.
// - predict_snr(): the camera model's prediction for the holographic linear transform
//   (docs/design.md §2.7). Per pixel j and sample s, the decoded projection is
//       P_js = s Σ_c w_cs (A_cj - X_cj - R_j) / (2 sqrt(R_j))
//   (A = I(x_c + r), X = I(x_c), R = I(r), counts above dark; w = code weights; s = the
//   unit-variance scale). Each frame adds, in counts², shot noise level / gain, read noise σ² /
//   gain² and quantisation 1/12; propagated to first order (the reference appears in the numerator
//   and the normalisation, averaged over `reference_repeats` frames):
//       Var P_js = s² / (4 R_j) [Σ_c w_cs² (v(A_cj) + v(X_cj)) + (Σ_c w_cs (1 + ℓ_cj / sqrt R_j))²
//       v(R_j) / repeats]
//   with ℓ_cj = (A_cj - X_cj - R_j) / (2 sqrt R_j). The mean levels A, X, R are *measured* on the
//   device (the same frames, captured through Device::transform at the exposure the device chose,
//   averaged over repeats); gain and read noise are the configured ones. First order means: valid
//   while every unmasked pixel's reference is well above its own noise (raise
//   dark_pixel_fraction when it is not); it ignores clipping at 0 and at full scale, and drift.
// - compare_projections(): a device's repeated projections against a reference projection (the
//   same medium with an ideal camera and fine bit-planes): correlation, relative bias (the mean
//   error projected on the reference), relative noise and the total SNR (noise + distortion).
//
// Elements: only pixels the device never masked during the repeats count (a masked pixel is an
// all-zero row); a pixel whose mask flips between calls would add a variance the camera model
// does not describe.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <vector>

#include "opu_sim/device.h"
#include "opu_sim/holography.h"
#include "opu_sim/sim_device.h"
#include "opu_sim/status.h"
#include "trainer/feedback.h"

namespace opu::trainer {

/// One projection of a batch (n_in x batch, one sample per column) to n_out x batch.
using Projector = std::function<Result<sim::Projections>(const Eigen::MatrixXf& values)>;

/// Projections through device.linear_transform(). The device is borrowed.
Projector device_projector(sim::Device& device, Eigen::Index n_out,
                           const sim::LinearOptions& options);
/// Projections through a feedback source (digital, noisy digital, device). Borrowed.
Projector feedback_projector(FeedbackSource& source);

/// Softmax cross-entropy errors softmax(z) - onehot(y) (n_classes x batch), z ~ N(0, 2²) and y
/// uniform, from (seed, index): what DFA projects, with its zero sum and one negative entry.
Eigen::MatrixXf error_like_vectors(Eigen::Index n_classes, Eigen::Index batch, std::uint64_t seed);

struct SnrMeasurement {
  double signal_variance = 0.0;  // variance of the mean over elements, minus noise / repeats
  double noise_variance = 0.0;   // across-repeat variance, averaged over elements
  double snr = 0.0;              // signal / noise; +inf when the repeats agree exactly
  int repeats = 0;
  Eigen::Index live_pixels = 0;              // pixels unmasked in every repeat
  Eigen::Index elements = 0;                 // live_pixels x batch
  double exposure_us = 0.0;                  // exposure of the first repeat (0 for digital sources)
  std::vector<Eigen::MatrixXf> projections;  // the K projections
  Eigen::MatrixXf mean;                      // their mean
  std::vector<bool> live;                    // per pixel: unmasked in every repeat
};

/// Projects `values` `repeats` (>= 2) times. INVALID_ARGUMENT for repeats < 2.
Result<SnrMeasurement> measure_snr(const Projector& project, const Eigen::MatrixXf& values,
                                   int repeats);

/// The camera constants the prediction needs (configured, not measured).
struct CameraNoiseModel {
  double gain_e_per_count = 40.0;
  double read_noise_e = 10.0;
  bool shot_noise = true;
  bool read_noise = true;
  bool quantised = true;  // integer counts: + 1/12 count² per reading

  /// The simulator's camera as the model sees it (an ideal camera has no noise at all).
  static CameraNoiseModel from_config(const sim::CameraConfig& camera);

  /// Variance of one reading at `level` counts above dark, in counts², by source.
  double shot_variance(double level) const;
  double read_variance() const;
  double quantisation_variance() const { return quantised ? 1.0 / 12.0 : 0.0; }
};

struct SnrPrediction {
  double signal_variance = 0.0;  // of the noiseless projection rebuilt from the mean levels
  double noise_variance = 0.0;   // = shot + read + quantisation
  double shot_variance = 0.0;
  double read_variance = 0.0;
  double quantisation_variance = 0.0;
  double snr = 0.0;  // +inf for a noiseless camera
  Eigen::Index elements = 0;
};

/// The camera model's SNR for `values` projected by `device` at the measurement's exposure and
/// over its live pixels. `holography` must be the device's own settings (reference blocks,
/// repeats). Captures the frames `level_repeats` times through Device::transform to measure the
/// mean levels.
Result<SnrPrediction> predict_snr(sim::Device& device, const Eigen::MatrixXf& values,
                                  const SnrMeasurement& measured, const sim::LinearOptions& options,
                                  const sim::HolographyConfig& holography,
                                  const CameraNoiseModel& camera, int level_repeats);

struct ProjectionComparison {
  double correlation = 0.0;     // Pearson, one device projection vs the reference
  double relative_bias = 0.0;   // <mean - ref, ref> / <ref, ref>: gain error of the projection
  double relative_error = 0.0;  // |mean - ref| / |ref|: systematic distortion (encoding, bias)
  double relative_noise = 0.0;  // sqrt(noise variance / reference variance)
  double snr_total = 0.0;       // reference variance / mean square (projection - ref)
  Eigen::Index elements = 0;
};

/// Compares the measured projections with `reference` (n_out x batch) over pixels live in both.
/// INVALID_ARGUMENT when the shapes differ or nothing is live.
Result<ProjectionComparison> compare_projections(const SnrMeasurement& measured,
                                                 const Eigen::MatrixXf& reference);

}  // namespace opu::trainer
