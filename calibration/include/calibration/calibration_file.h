// The calibration file: one versioned JSON document with a section per opu-calibrate subcommand
// (noise, exposure, tm, verify, drift). Each subcommand rewrites only its own section.
//
// Layout (version 1):
//   { "format": "opu-calibration", "version": 1,
//     "device": {"uri", "model", "simulated", "max_n_in", "max_n_out", "adc_bits"},
//     "noise": {...}, "exposure": {...}, "tm": {...}, "verify": {...}, "drift": {...} }
// Every section is optional. Large arrays (the transmission matrix) are base64 of little-endian
// float32, so the file stays small and exact.
//
// Writing is atomic: the document goes to "<path>.tmp.<pid>", is flushed, and renamed over the
// path; a failure removes the temporary file, so a reader never sees a partial file. Reading
// validates the format, the version (a newer version is FAILED_PRECONDITION: this build cannot
// know what it means) and every field; errors name the file, the field, the value and what was
// expected: "cal.json: tm.n_in: got -3, want an integer >= 1".
//
// For the trainer and opu-serve (docs/design.md §5, "a calibrated device is used as calibrated"):
// device_settings() extracts what they need (exposure, masked pixels) from a loaded file, and
// load_device_settings() / check_device_settings() are their --calibration FILE. This header is
// the target opu::calibration_file, which those readers link without the rest of calibration/.
#pragma once

#include <Eigen/Core>
#include <complex>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "opu_sim/status.h"

namespace opu::calibration {

inline constexpr int kCalibrationVersion = 1;
inline constexpr std::string_view kCalibrationFormat = "opu-calibration";

struct DeviceRecord {
  std::string uri;
  std::string model;
  bool simulated = false;
  std::int64_t max_n_in = 0;
  std::int64_t max_n_out = 0;
  int adc_bits = 8;
};

/// Photon-transfer characterisation (noise.h).
struct NoiseSection {
  double gain_e_per_count = 0.0;  // electrons per count (from the PTC slope)
  double gain_stderr = 0.0;
  double read_noise_e = 0.0;  // read noise, electrons (dark frames, quantised-Gaussian fit)
  double read_noise_stderr = 0.0;
  double read_noise_counts = 0.0;  // the same, counts
  double read_noise_ptc_e = 0.0;   // cross-check: from the PTC intercept (imprecise when
                                   // read noise is below one count)
  double dark_level_counts = 0.0;  // mean dark reading
  double dark_level_stderr = 0.0;
  double dark_spread_counts = 0.0;   // std of per-pixel dark means (fixed-pattern offset)
  double saturation_counts = 0.0;    // reading at which the ADC clips
  double saturation_e = 0.0;         // light (electrons above dark) at which clipping starts
  std::vector<double> exposures_us;  // exposures of the curve
  std::int64_t points_used = 0;      // (pixel, exposure) points in the PTC fit
  double fit_reduced_chi2 = 0.0;
  std::int64_t frames = 0;
  double device_time_s = 0.0;
};

/// Automatic exposure (exposure.h).
struct ExposureSection {
  double exposure_us = 0.0;
  double percentile = 0.0;          // of signal counts (above dark), in (0, 100)
  double target_fraction = 0.0;     // wanted value of that percentile, fraction of full scale
  double achieved_fraction = 0.0;   // measured at exposure_us
  double saturated_fraction = 0.0;  // readings clipped at exposure_us
  double density = 0.0;             // fraction of mirrors on in the probe frames
  std::int64_t n_in = 0;
  std::int64_t n_out = 0;
  double dark_level_counts = 0.0;
  std::vector<std::int64_t> masked_pixels;  // pixels too dark or always saturated
  std::int64_t frames = 0;
  double device_time_s = 0.0;
};

/// A recovered transmission matrix (tm.h): rows = the first n_out pixels, columns = mirrors
/// [column_offset, column_offset + n_in). Units: sqrt(counts at exposure_us), i.e. the expected
/// count above dark of input x is |matrix * x|^2. Known up to a per-row phase and conjugation.
struct TmSection {
  std::int64_t n_in = 0;
  std::int64_t n_out = 0;
  std::int64_t column_offset = 0;
  double exposure_us = 0.0;
  Eigen::MatrixXcf matrix;      // n_out x n_in
  Eigen::VectorXf dark_counts;  // per pixel, n_out
  std::int64_t anchors = 0;
  std::int64_t signals_per_shell = 0;
  std::int64_t gn_iterations = 0;
  double init_correlation = 0.0;  // fit to the frames before Gauss-Newton
  double fit_correlation = 0.0;   // fit to the frames after it
  std::uint64_t seed = 0;
  std::int64_t frames = 0;
  double device_time_s = 0.0;
  double wall_time_s = 0.0;
};

/// Held-out check of a recovered matrix (verify.h).
struct VerifySection {
  double correlation = 0.0;                   // predicted vs measured counts, held-out inputs
  std::optional<double> correlation_ceiling;  // noiseless truth vs measured (simulator only)
  std::optional<double> relative_error;       // phase-aligned, against the true matrix (simulator)
  std::optional<double> conjugated_rows;      // fraction of rows recovered as conj(R)
  std::optional<double> truth_scale;          // best global scale of the estimate vs the truth
  std::optional<double> relative_error_rescaled;  // relative_error after that scale
  std::int64_t held_out = 0;                      // held-out inputs
  double density = 0.0;
  std::uint64_t seed = 0;
  std::int64_t frames = 0;
  double device_time_s = 0.0;
};

/// Drift of the medium (drift.h).
struct DriftSection {
  std::vector<double> lag_s;          // device-time lags
  std::vector<double> correlation;    // start-averaged intensity correlation at each lag
  double decorrelation_time_s = 0.0;  // lag where the correlation falls to 1/2 (0 = not reached)
  double threshold = 0.0;             // recalibrate when the correlation would fall below it
  double recalibrate_after_s = 0.0;   // lag where the correlation falls to `threshold`
  double noise_ceiling = 0.0;         // correlation of back-to-back frames (normalised away)
  double interval_s = 0.0;
  double duration_s = 0.0;
  std::int64_t frames = 0;
  double device_time_s = 0.0;
};

struct CalibrationFile {
  int version = kCalibrationVersion;
  std::optional<DeviceRecord> device;
  std::optional<NoiseSection> noise;
  std::optional<ExposureSection> exposure;
  std::optional<TmSection> tm;
  std::optional<VerifySection> verify;
  std::optional<DriftSection> drift;
};

/// Reads and validates a calibration file. NOT_FOUND when missing, INVALID_ARGUMENT when it is not
/// JSON or a field is malformed, FAILED_PRECONDITION for a newer version.
Result<CalibrationFile> load_calibration(const std::string& path);
/// Parses and validates a document (load_calibration() without the file); `source` names it in
/// errors.
Result<CalibrationFile> parse_calibration(std::string_view text, std::string_view source);
/// The document as JSON text.
std::string format_calibration(const CalibrationFile& file);
/// Writes atomically (temporary file + rename); on failure nothing is left behind.
Status save_calibration(const CalibrationFile& file, const std::string& path);
/// The file at `path` when it exists (validated), else an empty document: what a subcommand
/// updates. A corrupt or newer file is an error, never silently replaced.
Result<CalibrationFile> load_or_new(const std::string& path);

/// What a consumer (trainer, opu-serve) needs to use a device as calibrated.
struct DeviceSettings {
  double exposure_us = 0.0;                 // 0 = no exposure calibrated (use the device default)
  std::vector<std::int64_t> masked_pixels;  // pixels to ignore (too dark / always saturated),
                                            // sorted, no duplicates
  double gain_e_per_count = 0.0;            // 0 = unknown
  double dark_level_counts = 0.0;
  double recalibrate_after_s = 0.0;  // 0 = unknown
  std::int64_t device_max_n_in = 0;   // shape of the calibrated device; 0 = not recorded
  std::int64_t device_max_n_out = 0;
};
DeviceSettings device_settings(const CalibrationFile& file);

/// What opu-serve and opu-train do with --calibration FILE: loads and validates the file, and
/// requires its exposure section (the exposure and the masked pixels; what `opu-calibrate
/// exposure` writes). Errors name the file and the field: NOT_FOUND, INVALID_ARGUMENT,
/// FAILED_PRECONDITION (newer version, or no exposure section).
Result<DeviceSettings> load_device_settings(const std::string& path);

/// The limits of the device a calibration is applied to.
struct DeviceLimits {
  std::int64_t max_n_in = 0;
  std::int64_t max_n_out = 0;
  double max_exposure_us = 0.0;  // 0 = no limit known
};
/// Checks settings from the file `source` against the device they are applied to:
/// FAILED_PRECONDITION when the file recorded a device of another shape (a calibration of another
/// device), OUT_OF_RANGE for an exposure above the device's longest or a masked pixel beyond its
/// camera; messages name the file, the field, the value and the limit.
Status check_device_settings(const DeviceSettings& settings, const DeviceLimits& device,
                             std::string_view source);

/// base64 of little-endian float32 (the encoding of large arrays in the file).
std::string encode_floats(const float* values, std::size_t count);
Result<std::vector<float>> decode_floats(std::string_view text, std::string_view field);

}  // namespace opu::calibration
