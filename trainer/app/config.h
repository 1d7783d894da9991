// opu-train's options: one struct, filled from defaults, then a JSON config file (--config), then
// the command line (flags win). The JSON keys are the flag names ("weight-decay" or
// "weight_decay").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/feedback.h"

namespace opu::trainer::app {

struct Options {
  std::string model = "mlp";   // mlp | gcn
  std::string method = "dfa";  // bp | dfa | shallow
  // digital | digital-gaussian | digital-noisy | a device URI (sim://, grpc://)
  std::string feedback = "digital";
  /// digital-noisy: Gaussian B plus i.i.d. Gaussian noise with signal/noise variance = this.
  double feedback_snr = 0.0;
  // Device feedback. The defaults are recommended_linear_options() (trainer/feedback.h), the
  // combination that closes the camera gap (docs/camera-gap.md): unbiased stochastic rounding to
  // 2 bit-planes per sign, identical codes of a batch measured once, each code's frames averaged
  // 4 times, the reference 256 times. The literal scheme (ternary, no sharing, 1 repeat, the
  // device's reference) stays available.
  std::string encoding{sim::encoding_name(recommended_linear_options().encoding)};
  float threshold = 0.1F;  // ternary threshold, relative to each sample's max |e|
  int bitplanes = -1;      // bit-planes per sign: bitplanes 4, stochastic the recommended 2
  bool share_frames = recommended_linear_options().share_frames;  // identical codes share frames
  int repeats = recommended_linear_options().repeats;  // each code's frame pair, averaged
  int reference_repeats = recommended_linear_options().reference_repeats;       // 0: device default
  double reference_max_age = recommended_linear_options().reference_max_age_s;  // 0: every call
  /// Calibration file of the feedback device (opu-calibrate exposure --out FILE): its exposure is
  /// sent with every projection request and its masked pixels' projections are zeroed here.
  /// Empty = none; ignored by digital feedback.
  std::string calibration;
  // Model-dependent defaults are marked by negative / empty values and filled by finalize().
  std::int64_t epochs = -1;          // mlp 15, gcn 200
  std::int64_t batch = 128;          // mlp only (gcn is full batch)
  float lr = -1.0F;                  // mlp 0.01, gcn 0.01
  float momentum = 0.9F;             // sgd only
  std::string optimizer;             // mlp sgd, gcn adam
  float weight_decay = -1.0F;        // mlp 0; gcn bp 5e-4, dfa/shallow 1e-4 (first layer only)
  float dropout = -1.0F;             // mlp 0; gcn bp 0.5, gcn dfa/shallow 0.1 (the paper's)
  float input_dropout = -1.0F;       // gcn: bp 0.5 (Kipf & Welling), dfa/shallow 0 (the paper's)
  std::vector<std::int64_t> hidden;  // mlp 256 256, gcn 16
  std::string activation = "relu";   // mlp: relu | tanh | sigmoid
  /// mlp: inputs (pixels / 255) become (x - mean) / std. Empty (the default) standardises with
  /// the training split's own mean and std, as the paper's example does for MNIST (0.1307,
  /// 0.3081; for Fashion-MNIST 0.2860, 0.3530); "0 1" leaves pixels in [0, 1].
  std::vector<float> normalize;
  std::string loss = "cross_entropy";  // cross_entropy | bce | mse
  std::uint64_t seed = 1;
  std::string data;               // mlp: IDX folder (default Fashion-MNIST); gcn: planetoid folder
  std::string dataset = "cora";   // gcn: cora | citeseer | any NAME with NAME.content/.edges/.split
  std::int64_t align_every = -1;  // steps between alignment measurements: mlp 50, gcn 1; 0 = off
  std::string metrics;            // JSON lines file
  std::string checkpoint;         // directory
  bool resume = false;
  std::string config;              // JSON file of these names
  int threads = 1;                 // OpenMP + OpenBLAS threads
  std::string log_level = "warn";  // spdlog level of the trainer's logs
};

/// Sets the model-dependent defaults and checks ranges; INVALID_ARGUMENT names the option.
Status finalize(Options& options);
/// Applies a JSON object of option names; unknown names and wrong types are INVALID_ARGUMENT.
Status apply_json(const nlohmann::json& json, Options& options);
/// Every option as JSON (what the run used; goes to the metrics file).
nlohmann::json to_json(const Options& options);

/// Parses argv: --config first (if any), then the flags. Returns the exit code to use instead of
/// running when CLI11 asks for one (--help) through `exit_code`.
Result<Options> parse_command_line(int argc, char** argv, int& exit_code);

}  // namespace opu::trainer::app
