// What an opu-study sweep is: the base device and training options, the swept parameters (one at
// a time around the base), the controls, the seeds; and how one (point, seed) becomes opu-train
// Options. See docs/noise-study.md.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "opu_sim/status.h"
#include "opu_sim/value_range.h"

namespace opu::trainer::study {

// The accepted ranges of opu-study's own numbers, used by its flags and by validate().
inline const ValueRange kSnrRepeatsRange = ValueRange::integers(2, 1024);
inline const ValueRange kSnrBatchRange = ValueRange::integers(1, 65536);
inline const ValueRange kMaxRunsRange = ValueRange::at_least(0, "not given: no limit");
inline const ValueRange kSeedRange = ValueRange::at_least(0);
/// full_well_e, the photon budget: electrons at full scale.
inline const ValueRange kFullWellRange = ValueRange::positive("electrons at full scale");

/// One swept parameter and its values, in the order given ("adc_bits" -> "2", "4", "8").
struct SweepAxis {
  std::string name;
  std::vector<std::string> values;
};

/// What a parameter changes.
enum class AxisKind {
  kDevice,    // a simulator parameter (sim:// URI query), or full_well_e
  kFeedback,  // threshold, bitplanes, encoding (opu-train's device-feedback options)
  kSnr,       // digital B plus i.i.d. noise at this SNR (no device)
};

enum class PointKind {
  kDevice,          // DFA with feedback from the device at this point
  kExactDigital,    // control: exact Gaussian B
  kMatchedDigital,  // control: Gaussian B + noise at the SNR measured on this point's device
  kNoisyDigital,    // Gaussian B + noise at the swept SNR
};
std::string_view point_kind_name(PointKind kind);

/// One point of the sweep. `key` identifies it in the ledger: "adc_bits=4", "adc_bits=4/matched",
/// "exact", "snr=10".
struct Point {
  std::string key;
  std::string axis;   // empty for the exact control
  std::string value;  // empty for the exact control
  PointKind kind = PointKind::kDevice;
};

struct StudySpec {
  /// Device URIs, one worker each (replicas of one device). Device parameters can only be swept
  /// on sim:// URIs (a server's camera is fixed when it starts).
  std::vector<std::string> devices = {"sim://"};
  /// opu-train options every run starts from (JSON names of opu-train's flags); method is dfa.
  nlohmann::json train = nlohmann::json::object();
  std::vector<SweepAxis> sweeps;
  std::vector<std::uint64_t> seeds = {1, 2};
  bool exact_control = false;    // one point with the exact digital B
  bool matched_control = false;  // per device point, digital B + noise at its measured SNR
  int snr_repeats = 8;           // projections of the same batch per SNR measurement
  std::int64_t snr_batch = 64;   // error-like vectors per SNR measurement
  bool snr_prediction = true;    // camera-model prediction and reference comparison (sim:// only)
};

/// Every name --sweep accepts, with what it changes, for --help and error messages.
std::vector<std::pair<std::string, std::string>> sweep_parameters();
/// AxisKind of a name; INVALID_ARGUMENT listing the known names.
Result<AxisKind> axis_kind(const std::string& name);

/// --config FILE's content: a JSON object of opu-train options, merged into `train` (its names
/// replace those already there). `source` names it in errors.
Status apply_train_config(std::string_view text, const std::string& source, nlohmann::json& train);
/// --train NAME=VALUE: "epochs=3" -> {"epochs": 3}; the value as JSON when it parses (numbers,
/// true, [256,256]), else as a string.
Status apply_train_setting(const std::string& setting, nlohmann::json& train);

/// "adc_bits=2,4,8" or "adc_bits=1:12" or "adc_bits=2:12:2" (inclusive integer or decimal steps).
/// INVALID_ARGUMENT for an unknown name, an empty range, a malformed range or a bad value.
Result<SweepAxis> parse_sweep(const std::string& text);

/// Checks a spec (every value of every axis builds valid options, device axes on sim:// only,
/// seeds present and distinct, SNR settings in range); INVALID_ARGUMENT naming the axis and value.
Status validate(const StudySpec& spec);

/// The points in canonical order: each axis's values in order, each followed by its matched
/// control when asked; then the exact control.
std::vector<Point> expand_points(const StudySpec& spec);

/// The device URI of a point on a worker's device: the worker URI with the point's device
/// parameter applied (sim:// only; other URIs are returned unchanged).
Result<std::string> point_device_uri(const std::string& worker_uri, const Point& point);

/// The opu-train options of one run. `matched_snr` is used by kMatchedDigital points only.
Result<app::Options> run_options(const StudySpec& spec, const Point& point, std::uint64_t seed,
                                 const std::string& worker_uri, double matched_snr);

/// Identifies what a ledger record was computed with (training options, base device, SNR
/// settings), so that a restart with other settings does not reuse it.
std::string fingerprint(const StudySpec& spec);

/// sim:// URI helpers: the query as a map, and back (sorted names: one URI per configuration).
Result<std::map<std::string, std::string>> sim_params(const std::string& uri);
std::string sim_uri(const std::map<std::string, std::string>& params);
bool is_sim_uri(const std::string& uri);

}  // namespace opu::trainer::study
