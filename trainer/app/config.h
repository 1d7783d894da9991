// opu-train's options: one struct, filled from defaults, then a JSON config file (--config), then
// the command line (flags win). The JSON keys are the flag names ("weight-decay" or
// "weight_decay").
//
// Options whose default depends on the model or the method are std::optional: empty means "not
// set" (an absent JSON key, or JSON null), and finalize() gives only those their model's default.
// A value that is set is kept as it is or refused: every option has one accepted range, used by
// the flags, the JSON config and finalize() alike, and an out-of-range value is an
// INVALID_ARGUMENT naming the option, the value and the range ("--lr: -1 is out of range;
// expected a number > 0"), never a default in disguise.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/feedback.h"

namespace opu::trainer::app {

struct Options {
  std::string model = "mlp";   // mlp | gcn | transformer
  std::string method = "dfa";  // bp | dfa | shallow
  // digital | digital-gaussian | digital-noisy | a device URI (sim://, grpc://)
  std::string feedback = "digital";
  /// digital-noisy: Gaussian B plus i.i.d. Gaussian noise with signal/noise variance = this
  /// (> 0; required by digital-noisy).
  std::optional<double> feedback_snr;
  // Device feedback. The defaults are recommended_linear_options() (trainer/feedback.h), the
  // combination that closes the camera gap (docs/camera-gap.md): unbiased stochastic rounding to
  // 2 bit-planes per sign, identical codes of a batch measured once, each code's frames averaged
  // 4 times, the reference 256 times. The literal scheme (ternary, no sharing, 1 repeat, the
  // device's reference) stays available.
  std::string encoding{sim::encoding_name(recommended_linear_options().encoding)};
  float threshold = 0.1F;        // ternary threshold, relative to each sample's max |e|
  std::optional<int> bitplanes;  // bit-planes per sign, [1, 16]: bitplanes 4, stochastic 2
  bool share_frames = recommended_linear_options().share_frames;  // identical codes share frames
  int repeats = recommended_linear_options().repeats;  // each code's frame pair, averaged
  int reference_repeats = recommended_linear_options().reference_repeats;       // 0: device default
  double reference_max_age = recommended_linear_options().reference_max_age_s;  // 0: every call
  /// Calibration file of the feedback device (opu-calibrate exposure --out FILE): its exposure is
  /// sent with every projection request and its masked pixels' projections are zeroed here.
  /// Empty = none; ignored by digital feedback.
  std::string calibration;
  // Not set (std::nullopt) = the default of the model (and method), filled by finalize().
  std::optional<std::int64_t> epochs;    // >= 1: mlp 15, gcn 200
  std::optional<std::int64_t> batch;     // >= 1: mlp 128, transformer 32 (gcn is full batch)
  std::optional<float> lr;               // > 0: mlp 0.01, gcn 0.01
  float momentum = 0.9F;                 // [0, 1); sgd only
  std::optional<std::string> optimizer;  // sgd | adam: mlp sgd, gcn adam
  std::optional<float> weight_decay;     // >= 0: mlp 0; gcn bp 5e-4, dfa/shallow 1e-4 (first layer)
  std::optional<float> dropout;          // [0, 1): mlp 0; gcn bp 0.5, gcn dfa/shallow 0.1 (paper)
  std::optional<float> input_dropout;    // [0, 1), gcn: bp 0.5 (Kipf & Welling), dfa/shallow 0
  std::optional<std::vector<std::int64_t>> hidden;  // 1-16 sizes >= 1: mlp 256 256, gcn 16
  std::string activation = "relu";                  // relu | tanh | sigmoid (| gelu: transformer)
  /// mlp: inputs (pixels / 255) become (x - MEAN) / STD. Not set (the default) standardises with
  /// the training split's own mean and std, as the paper's example does for MNIST (0.1307,
  /// 0.3081; for Fashion-MNIST 0.2860, 0.3530); {0, 1} leaves pixels in [0, 1]. run_training()
  /// records the values it used here.
  std::optional<std::vector<float>> normalize;
  std::string loss = "cross_entropy";  // cross_entropy | bce | mse
  std::uint64_t seed = 1;
  std::string data;              // mlp: IDX folder (default Fashion-MNIST); gcn: planetoid folder
  std::string dataset = "cora";  // gcn: cora | citeseer | any NAME with NAME.content/.edges/.split
  /// Steps between alignment measurements, >= 0 (0 = off): mlp 50, gcn 1.
  std::optional<std::int64_t> align_every;
  std::string metrics;     // JSON lines file
  std::string checkpoint;  // directory
  bool resume = false;
  std::string config;              // JSON file of these names
  int threads = 1;                 // OpenMP + OpenBLAS threads, [1, 1024]
  std::string log_level = "warn";  // trace | debug | info | warn | error | off

  // --- transformer (docs/trainer.md, "The Transformer"): a character-level language model on the
  // text file --data (default data/tinyshakespeare/input.txt), trained for --steps steps.
  std::string dfa_points = "macro";      // macro (each block's output) | micro (3 per block)
  std::string dfa_error = "hidden";      // DFA projects dL/d(final hidden) | dL/d(logits)
  std::int64_t layers = 4;               // >= 1
  std::int64_t d_model = 128;            // >= 1, a multiple of heads
  std::int64_t heads = 4;                // >= 1
  std::int64_t d_ff = 512;               // >= 1
  std::int64_t context = 128;            // >= 1: characters per training window
  bool pre_ln = false;                   // post-LN blocks as the paper, or pre-LN
  std::string positions = "sinusoidal";  // sinusoidal | learned
  std::optional<std::int64_t> steps;     // >= 1: 2000
  std::optional<std::string> schedule;   // noam | constant | plateau: constant
  std::optional<std::int64_t> warmup;    // >= 0 steps: bp (and noam) 100, dfa/shallow 0
  std::optional<float> beta2;            // Adam's, [0, 1): bp 0.98, dfa/shallow 0.999 (paper)
  float clip = 0.5F;                     // gradient-norm clipping, >= 0 (0 = none; paper 0.5)
  std::int64_t eval_every = 200;         // steps between validations, >= 0 (0 = at the end)
  std::int64_t eval_chars = 0;           // validation characters evaluated, >= 0 (0 = all)
  std::int64_t sample = 0;               // characters generated at the end, >= 0
  float temperature = 0.8F;              // of the samples, >= 0 (0 = the most likely character)
};

/// Checks every option against its range (and the options that depend on each other), then gives
/// the options that are not set their model's default; INVALID_ARGUMENT names the option, the value
/// and the range, NOT_FOUND a --calibration file that does not exist. After it epochs, batch, lr,
/// optimizer, weight_decay, dropout, input_dropout, hidden, align_every, bitplanes, steps,
/// schedule, warmup and beta2 hold a value; feedback_snr holds one with digital-noisy feedback,
/// normalize when it was given.
Status finalize(Options& options);
/// Applies a JSON object of option names (null = not set); unknown names, wrong types and values
/// out of range are INVALID_ARGUMENT naming the key, the value and the range.
Status apply_json(const nlohmann::json& json, Options& options);
/// Sets one option from text as the command line gives it (`--NAME TEXT`; lists as JSON or
/// separated by spaces or commas), with the same checks; INVALID_ARGUMENT names `--NAME`.
Status apply_text(const std::string& name, const std::string& text, Options& options);
/// Every option as JSON, null for those not set (what the run used; goes to the metrics file).
/// apply_json(to_json(o)) on default Options gives back `o`.
nlohmann::json to_json(const Options& options);

/// Parses argv: --config first (if any), then the flags. Returns the exit code to use instead of
/// running when CLI11 asks for one (--help) through `exit_code`.
Result<Options> parse_command_line(int argc, char** argv, int& exit_code);

}  // namespace opu::trainer::app
