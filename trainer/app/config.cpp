#include "config.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "opu_sim/device.h"

namespace opu::trainer::app {
namespace {

// One table drives JSON in and out, so a new option cannot be forgotten in one of them.
struct Field {
  std::function<void(const nlohmann::json&, Options&)> read;
  std::function<nlohmann::json(const Options&)> write;
};

template <typename T>
Field field(T Options::*member) {
  return {[member](const nlohmann::json& j, Options& o) { o.*member = j.get<T>(); },
          [member](const Options& o) { return nlohmann::json(o.*member); }};
}

const std::map<std::string, Field>& fields() {
  static const std::map<std::string, Field> table = {
      {"model", field(&Options::model)},
      {"method", field(&Options::method)},
      {"feedback", field(&Options::feedback)},
      {"feedback-snr", field(&Options::feedback_snr)},
      {"encoding", field(&Options::encoding)},
      {"threshold", field(&Options::threshold)},
      {"bitplanes", field(&Options::bitplanes)},
      {"share-frames", field(&Options::share_frames)},
      {"repeats", field(&Options::repeats)},
      {"reference-repeats", field(&Options::reference_repeats)},
      {"reference-max-age", field(&Options::reference_max_age)},
      {"calibration", field(&Options::calibration)},
      {"epochs", field(&Options::epochs)},
      {"batch", field(&Options::batch)},
      {"lr", field(&Options::lr)},
      {"momentum", field(&Options::momentum)},
      {"optimizer", field(&Options::optimizer)},
      {"weight-decay", field(&Options::weight_decay)},
      {"dropout", field(&Options::dropout)},
      {"input-dropout", field(&Options::input_dropout)},
      {"hidden", field(&Options::hidden)},
      {"activation", field(&Options::activation)},
      {"normalize", field(&Options::normalize)},
      {"loss", field(&Options::loss)},
      {"seed", field(&Options::seed)},
      {"data", field(&Options::data)},
      {"dataset", field(&Options::dataset)},
      {"align-every", field(&Options::align_every)},
      {"metrics", field(&Options::metrics)},
      {"checkpoint", field(&Options::checkpoint)},
      {"resume", field(&Options::resume)},
      {"threads", field(&Options::threads)},
      {"log-level", field(&Options::log_level)},
  };
  return table;
}

Status bad(const std::string& name, const std::string& got, const std::string& want) {
  return invalid_argument("--" + name + " is " + got + ", want " + want);
}

}  // namespace

Status apply_json(const nlohmann::json& json, Options& options) {
  if (!json.is_object()) return invalid_argument("config: want a JSON object of option names");
  for (const auto& [raw_key, value] : json.items()) {
    std::string key = raw_key;
    for (char& c : key) c = c == '_' ? '-' : c;
    auto it = fields().find(key);
    if (it == fields().end()) {
      return invalid_argument("config: unknown option '" + raw_key + "'");
    }
    try {
      it->second.read(value, options);
    } catch (const nlohmann::json::exception& e) {
      return invalid_argument("config: option '" + raw_key + "' is " + value.dump() +
                              ", wrong type (" + e.what() + ")");
    }
  }
  return {};
}

nlohmann::json to_json(const Options& options) {
  nlohmann::json j;
  for (const auto& [name, f] : fields()) j[name] = f.write(options);
  return j;
}

Status finalize(Options& o) {
  const bool gcn = o.model == "gcn";
  if (o.model != "mlp" && !gcn) return bad("model", "'" + o.model + "'", "mlp or gcn");
  if (o.method != "bp" && o.method != "dfa" && o.method != "shallow") {
    return bad("method", "'" + o.method + "'", "bp, dfa or shallow");
  }
  if (o.epochs < 0) o.epochs = gcn ? 200 : 15;
  if (o.lr < 0.0F) o.lr = 0.01F;
  if (o.optimizer.empty()) o.optimizer = gcn ? "adam" : "sgd";
  // GCN: Kipf & Welling's recipe for BP; the paper's DFAGraphNet recipe (lighter hidden dropout,
  // no input dropout, weaker decay) for DFA and shallow.
  const bool gcn_bp = gcn && o.method == "bp";
  if (o.weight_decay < 0.0F) o.weight_decay = gcn ? (gcn_bp ? 5e-4F : 1e-4F) : 0.0F;
  if (o.dropout < 0.0F) o.dropout = gcn ? (gcn_bp ? 0.5F : 0.1F) : 0.0F;
  if (o.input_dropout < 0.0F) o.input_dropout = gcn_bp ? 0.5F : 0.0F;
  if (o.hidden.empty())
    o.hidden = gcn ? std::vector<std::int64_t>{16} : std::vector<std::int64_t>{256, 256};
  if (o.align_every < 0) o.align_every = gcn ? 1 : 50;
  if (o.epochs < 1) return bad("epochs", std::to_string(o.epochs), ">= 1");
  if (o.batch < 1) return bad("batch", std::to_string(o.batch), ">= 1");
  if (!(o.lr > 0.0F)) return bad("lr", std::to_string(o.lr), "> 0");
  if (!(o.dropout < 1.0F)) return bad("dropout", std::to_string(o.dropout), "in [0, 1)");
  if (!(o.input_dropout < 1.0F)) {
    return bad("input-dropout", std::to_string(o.input_dropout), "in [0, 1)");
  }
  for (std::int64_t h : o.hidden) {
    if (h < 1) return bad("hidden", std::to_string(h), "sizes >= 1");
  }
  if (!sim::parse_encoding(o.encoding).ok()) {
    return bad("encoding", "'" + o.encoding + "'", "ternary, bitplanes or stochastic");
  }
  if (o.bitplanes < 0) {
    o.bitplanes = o.encoding == "stochastic" ? recommended_linear_options().bitplanes : 4;
  }
  if (!(o.threshold >= 0.0F && o.threshold < 1.0F)) {
    return bad("threshold", std::to_string(o.threshold), "in [0, 1)");
  }
  if (o.repeats < 1 || o.repeats > 64)
    return bad("repeats", std::to_string(o.repeats), "in [1, 64]");
  if (o.reference_repeats < 0 || o.reference_repeats > sim::kMaxReferenceRepeats) {
    return bad("reference-repeats", std::to_string(o.reference_repeats),
               "in [0, " + std::to_string(sim::kMaxReferenceRepeats) + "]");
  }
  if (!(o.reference_max_age >= 0.0 && std::isfinite(o.reference_max_age))) {
    return bad("reference-max-age", std::to_string(o.reference_max_age),
               "device seconds >= 0 (0 = a fresh reference in every call)");
  }
  if (o.bitplanes < 1 || o.bitplanes > 16) {
    return bad("bitplanes", std::to_string(o.bitplanes), "in [1, 16]");
  }
  if (!o.normalize.empty() && o.normalize.size() != 2) {
    return invalid_argument("--normalize wants two numbers MEAN STD, got " +
                            std::to_string(o.normalize.size()));
  }
  if (!o.normalize.empty() && !(o.normalize[1] > 0.0F)) {
    return bad("normalize", "STD " + std::to_string(o.normalize[1]), "STD > 0");
  }
  if (o.feedback == "digital-noisy" && !(o.feedback_snr > 0.0 && std::isfinite(o.feedback_snr))) {
    return bad("feedback-snr", std::to_string(o.feedback_snr),
               "a finite value > 0 with --feedback digital-noisy");
  }
  if (o.threads < 1) return bad("threads", std::to_string(o.threads), ">= 1");
  if (o.resume && o.checkpoint.empty()) {
    return invalid_argument("--resume needs --checkpoint DIR (where the checkpoint is)");
  }
  return {};
}

Result<Options> parse_command_line(int argc, char** argv, int& exit_code) {
  exit_code = -1;
  Options options;
  // --config is applied first so that explicit flags override it: CLI11 writes a variable only
  // when its flag is present.
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--config") {
      const std::string path = argv[i + 1];
      std::ifstream in(path);
      if (!in) return not_found("--config " + path + ": no such file");
      nlohmann::json json;
      try {
        json = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        return invalid_argument("--config " + path + ": not JSON (" + e.what() + ")");
      }
      OPU_RETURN_IF_ERROR(apply_json(json, options).with_context("--config " + path));
    }
  }
  CLI::App cli{
      "opu-train: train an MLP or a GCN with BP, DFA (digital or OPU feedback) or "
      "shallow learning"};
  Options& o = options;
  cli.add_option("--model", o.model, "mlp (784-256-256-10 on IDX images) or gcn (Planetoid)");
  cli.add_option("--method", o.method, "bp, dfa or shallow (default dfa)");
  cli.add_option("--feedback", o.feedback,
                 "digital (U[-1,1) B), digital-gaussian, digital-noisy (Gaussian B + i.i.d. "
                 "noise, see --feedback-snr), or a device URI: sim://?..., grpc://h:p");
  cli.add_option("--feedback-snr", o.feedback_snr,
                 "digital-noisy: signal variance / noise variance of B e, per sample (> 0)");
  cli.add_option("--encoding", o.encoding,
                 "device feedback: ternary (thresholded), bitplanes, or stochastic (unbiased)");
  cli.add_option("--threshold", o.threshold, "ternary threshold relative to max|e| (0.1)");
  cli.add_option("--bitplanes", o.bitplanes, "bit-planes per sign (bitplanes 4, stochastic 2)");
  cli.add_flag("--share-frames,!--no-share-frames", o.share_frames,
               "identical codes within a batch are measured once (default on)");
  cli.add_option("--repeats", o.repeats,
                 "device feedback: frames of each code taken N times and averaged (4)");
  cli.add_option("--reference-repeats", o.reference_repeats,
                 "device feedback: reference frames averaged per call (256), 0 = the device's "
                 "own default");
  cli.add_option("--reference-max-age", o.reference_max_age,
                 "device feedback: device seconds a measured reference serves later calls; 0 = "
                 "measured in every call (default; docs/camera-gap.md: reuse halves the frames "
                 "but costs accuracy)");
  cli.add_option("--calibration", o.calibration,
                 "device feedback: calibration file (opu-calibrate exposure --out FILE); its "
                 "exposure goes with every request, its masked pixels project to 0. Digital "
                 "feedback ignores it");
  cli.add_option("--epochs", o.epochs, "epochs (mlp 15, gcn 200)");
  cli.add_option("--batch", o.batch, "mini-batch size (mlp, 128)");
  cli.add_option("--lr", o.lr, "learning rate (0.01)");
  cli.add_option("--momentum", o.momentum, "SGD momentum (0.9)");
  cli.add_option("--optimizer", o.optimizer, "sgd or adam (mlp sgd, gcn adam)");
  cli.add_option("--weight-decay", o.weight_decay,
                 "L2 weight decay (mlp 0; gcn first layer: bp 5e-4, dfa/shallow 1e-4)");
  cli.add_option("--dropout", o.dropout,
                 "hidden dropout (mlp 0; gcn bp 0.5, gcn dfa/shallow 0.1 as the paper)");
  cli.add_option("--input-dropout", o.input_dropout,
                 "gcn input dropout (bp 0.5 as Kipf & Welling, dfa/shallow 0 as the paper)");
  cli.add_option("--hidden", o.hidden, "hidden sizes (mlp 256 256, gcn 16)")->expected(1, 16);
  cli.add_option("--activation", o.activation, "mlp hidden activation: relu, tanh, sigmoid");
  cli.add_option("--normalize", o.normalize,
                 "mlp: MEAN STD of the input normalisation (x - MEAN) / STD; default: the "
                 "training split's own pixel mean and std, as the paper does; 0 1 = none")
      ->expected(2);
  cli.add_option("--loss", o.loss, "cross_entropy, bce or mse");
  cli.add_option("--seed", o.seed, "seed of every random stream (1)");
  cli.add_option("--data", o.data, "mlp: IDX folder; gcn: Planetoid folder");
  cli.add_option("--dataset", o.dataset, "gcn: cora or citeseer");
  cli.add_option("--align-every", o.align_every, "steps between alignment measurements, 0 = off");
  cli.add_option("--metrics", o.metrics, "JSON lines file for per-epoch records");
  cli.add_option("--checkpoint", o.checkpoint, "directory: a checkpoint after every epoch");
  cli.add_flag("--resume", o.resume, "continue from --checkpoint DIR");
  std::string config_path;
  cli.add_option("--config", config_path, "JSON file of these option names (flags override)");
  cli.add_option("--threads", o.threads, "compute threads (OpenMP + OpenBLAS), default 1");
  cli.add_option("--log-level", o.log_level, "trace, debug, info, warn, error, off (warn)");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every malformed command line exits 2 (CLI11 has printed why).
    exit_code = cli.exit(e) == 0 ? 0 : 2;
    if (exit_code != 0) return invalid_argument(e.what());
    return options;
  }
  return options;
}

}  // namespace opu::trainer::app
