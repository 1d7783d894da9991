// The calibration procedures (docs/design.md §5), each against any opu::sim::Device. See
// docs/calibration.md for the methods, their assumptions and the measured results.
//
// Every procedure takes its frames through a FrameTaker (frames and device time are reported in
// its section) and returns its section of the calibration file, or a Status: INVALID_ARGUMENT for
// bad options, OUT_OF_RANGE beyond the device's limits, FAILED_PRECONDITION when the data cannot
// support the fit (too few usable readings, everything saturated), and the device's own errors
// (UNAVAILABLE for an unreachable endpoint) with the step that failed in the message.
//
// Thread safety: the procedures hold no global state; run them on different devices at once, or
// one after another on the same device (they would interleave frames on one device otherwise).
#pragma once

#include <cstdint>
#include <vector>

#include "calibration/calibration_file.h"
#include "calibration/frame_taker.h"
#include "opu_sim/device.h"

namespace opu::calibration {

// --- noise: photon-transfer curve ----------------------------------------------------------------

struct NoiseOptions {
  std::vector<double> exposures_us;  // empty = default exposure x {1/4, 1/2, 1, 2, 4, 8}
  std::int64_t repeats = 16;         // frames of one pattern per exposure (>= 4)
  std::int64_t dark_frames = 64;     // all-mirrors-off frames (>= 8)
  std::int64_t n_out = 0;            // pixels (0 = min(max_n_out, 4096))
  double density = 0.5;              // fraction of mirrors on in the patterns
  std::uint64_t seed = 1;
};

/// Gain from the photon-transfer curve var = (mean - dark)/gain + read², over (pixel, exposure)
/// points bright enough that quantisation adds exactly 1/12 count²; read noise from the dark
/// frames by a maximum-likelihood fit of a quantised Gaussian (valid below one count, where
/// the PTC intercept is not).
Result<NoiseSection> measure_noise(sim::Device& device, const NoiseOptions& options,
                                   const Progress& progress = {});

// --- exposure ------------------------------------------------------------------------------------

struct ExposureOptions {
  double percentile = 99.9;      // of signal counts (above dark)
  double target_fraction = 0.9;  // of full scale, for that percentile
  double density = 0.5;          // fraction of the n_in mirrors on
  std::int64_t n_in = 0;         // mirrors used (0 = max_n_in)
  std::int64_t n_out = 0;        // pixels (0 = min(max_n_out, 4096))
  std::int64_t probe_frames = 16;
  std::int64_t max_iterations = 8;
  double dark_pixel_fraction = 0.02;  // mask pixels whose mean signal is below this x the median
  std::uint64_t seed = 2;
};

Result<ExposureSection> find_exposure(sim::Device& device, const ExposureOptions& options,
                                      const Progress& progress = {});

// --- tm: transmission-matrix recovery by numerical interferometry --------------------------------

struct TmOptions {
  std::int64_t n_in = 100;    // columns: mirrors [column_offset, column_offset + n_in)
  std::int64_t n_out = 1000;  // rows: the first n_out pixels
  std::int64_t column_offset = 0;
  std::int64_t anchors = 4;            // K nested anchors = K shells of the block (>= 2)
  std::int64_t signals_per_shell = 0;  // 0 = 2 x shell size + 10
  std::int64_t anchor_repeats = 8;     // repeats of each anchor-pair frame
  std::int64_t random_frames = -1;     // random full-block frames for the refinement (-1 = n_in)
  std::int64_t dark_frames = 16;
  double exposure_us = 0.0;  // 0 = auto: full-block frames at `fill` of full scale
  double fill = 0.25;        // mean count of a full-block frame, fraction of full scale
  /// Camera variance model var = signal/gain + read² + 1/12 (counts²). gain 0 = estimate it from
  /// the repeated anchor frames (or take it from a noise section via tm_options_from()).
  double gain_e_per_count = 0.0;
  double read_noise_counts = -1.0;  // < 0 = estimate
  std::int64_t gn_iterations = 6;   // weighted Gauss-Newton passes over all frames (0 = none)
  std::int64_t cg_iterations = 25;  // conjugate-gradient steps per pass
  std::uint64_t seed = 3;
};

/// Recovers the matrix from intensities only (docs/design.md §5): nested anchors a_1 ⊂ ... ⊂ a_K
/// over the block, their positions per row by MDS of measured distances, then for each signal a
/// weighted multilateration (intercept for |y|², saturated readings masked, shot + quantisation
/// + read variance model), a weighted least-squares solve per row and shell, and weighted
/// Gauss-Newton on all raw frames with matrix-free conjugate gradients over all rows.
Result<TmSection> recover_tm(sim::Device& device, const TmOptions& options,
                             const Progress& progress = {});

// --- verify --------------------------------------------------------------------------------------

struct VerifyOptions {
  std::int64_t held_out = 200;  // random inputs never seen by tm
  double density = 0.5;
  std::uint64_t seed = 1234567;
};

/// Predicts min(dark + |matrix x|², full scale) for held-out random inputs and correlates it with
/// the measured counts (Pearson over all readings). When `device` is an in-process SimDevice, also
/// the correlation ceiling (noiseless truth vs the same frames) and the phase-aligned relative
/// error against the true matrix.
Result<VerifySection> verify_tm(sim::Device& device, const TmSection& tm,
                                const VerifyOptions& options, const Progress& progress = {});

/// Phase- and conjugation-aligned relative error of `estimate` against `truth` (same shape):
/// sqrt(Σ_rows min_{φ, conj} ||e^{iφ} r̂' - r||²) / ||truth||_F. Also returns the fraction of rows
/// where the conjugate fitted better, and the real scale s minimising the aligned error of
/// s x estimate (intensities cannot tell a global scale error from a gain error).
double aligned_relative_error(const Eigen::Ref<const Eigen::MatrixXcf>& estimate,
                              const Eigen::Ref<const Eigen::MatrixXcf>& truth,
                              double* conjugated_fraction = nullptr, double* best_scale = nullptr);

// --- drift ---------------------------------------------------------------------------------------

struct DriftOptions {
  double interval_s = 0.02;  // device time between reference samples
  double duration_s = 10.0;  // device time spanned
  double threshold = 0.9;    // recalibrate when the expected correlation falls below it
  std::int64_t n_in = 0;     // mirrors (0 = max_n_in)
  std::int64_t n_out = 0;    // pixels (0 = min(max_n_out, 1024))
  double density = 0.5;
  double exposure_us = 0.0;  // 0 = device default
  std::uint64_t seed = 4;
};

/// Takes a fixed reference input (twice, back to back) every interval_s of device time, advancing
/// the clock in between with dark frames. The curve C(lag) is the Pearson correlation of the
/// reference's speckle (counts above dark) between samples `lag` apart, averaged over all start
/// samples and normalised by the back-to-back (noise) ceiling. The decorrelation time is the lag
/// where C first falls to 1/2 (linear interpolation). See docs/calibration.md for what it is for
/// the simulator's drift model.
Result<DriftSection> measure_drift(sim::Device& device, const DriftOptions& options,
                                   const Progress& progress = {});

/// For the simulator's drift R(t) = cos θ R_k + sin θ R_{k+1} (period T = drift_tau_s), the
/// start-averaged intensity correlation at lag `lag_over_period` x T, and the lag (in units of T)
/// at which it falls to `level` (1/2 gives 0.5609).
double sim_drift_correlation(double lag_over_period);
double sim_drift_lag_at(double level);

}  // namespace opu::calibration
