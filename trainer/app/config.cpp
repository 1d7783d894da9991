#include "config.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <type_traits>

#include "opu_sim/cli_validators.h"
#include "opu_sim/device.h"
#include "opu_sim/value_range.h"

namespace opu::trainer::app {
namespace {

using Json = nlohmann::json;

// One table drives the flags, JSON in and out and the checks of finalize(), so an option cannot
// be forgotten in one of them, and a value has one accepted range wherever it comes from.
struct Field {
  std::string name;  // the flag without "--", and the JSON key
  // A JSON value (never null: null is "not set") into the options; errors name the value and
  // the range, not the option (the caller knows how it was spelt).
  std::function<Status(const Json&, Options&)> read;
  // The value as text, as given after the flag (--NAME TEXT), with the same checks.
  std::function<Status(const std::string&, Options&)> read_text;
  // The option as JSON; null when not set.
  std::function<Json(const Options&)> write;
  // The option's current value against its range (finalize(): values set in code); errors name
  // the value and the range.
  std::function<Status(const Options&)> check;
  // Declares the flag, with the same range as a CLI11 validator.
  std::function<void(CLI::App&, Options&)> add;
};

template <typename T>
const T* value_of(const T& value) {
  return &value;
}
template <typename T>
const T* value_of(const std::optional<T>& value) {
  return value ? &*value : nullptr;
}

template <typename T>
Json json_of(const T& value) {
  return Json(value);
}
template <typename T>
Json json_of(const std::optional<T>& value) {
  return value ? Json(*value) : Json(nullptr);
}

// A value as people write it: integers exactly, floats to their own precision (0.1F is "0.1").
template <typename T>
std::string show(T value) {
  if constexpr (std::is_integral_v<T>) {
    return std::to_string(value);
  } else {
    char buffer[40];
    std::snprintf(buffer, sizeof(buffer), "%.*g", std::is_same_v<T, float> ? 7 : 10,
                  static_cast<double>(value));
    return buffer;
  }
}

template <typename T>
std::string show_list(const std::vector<T>& values) {
  std::string text = "[";
  for (const T& value : values) text += (text.size() > 1 ? ", " : "") + show(value);
  return text + "]";
}

// A number (integer or real) within `range`; the member is a T or a std::optional<T>.
template <typename T, typename Member>
Field number(std::string name, Member Options::*member, ValueRange range, std::string help) {
  Field f;
  f.name = name;
  f.read = [member, range](const Json& j, Options& o) -> Status {
    if (!j.is_number()) {
      return invalid_argument(j.dump() + " is not a number; expected " + range.expected());
    }
    Result<T> value = parse_in_range<T>(j.dump(), range);
    if (!value.ok()) return value.status();
    o.*member = *value;
    return {};
  };
  f.read_text = [member, range](const std::string& text, Options& o) -> Status {
    Result<T> value = parse_in_range<T>(text, range);
    if (!value.ok()) return value.status();
    o.*member = *value;
    return {};
  };
  f.write = [member](const Options& o) { return json_of(o.*member); };
  f.check = [member, range](const Options& o) -> Status {
    const T* value = value_of(o.*member);
    if (value != nullptr && !range.contains(static_cast<double>(*value))) {
      return invalid_argument(out_of_range_text(show(*value), range));
    }
    return {};
  };
  f.add = [name, member, range, help](CLI::App& cli, Options& o) {
    cli.add_option_function<std::string>(
           "--" + name,
           [&o, member, range](const std::string& text) {
             o.*member = parse_in_range<T>(text, range).value();  // the validator accepted it
           },
           help)
        ->type_name(range.integer ? "INT" : "NUMBER")
        ->check(in_range<T>(range));
  };
  return f;
}

std::string choice_problem(const std::string& value, const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return {};
  return not_one_of_text(value, choices);
}

std::string list(const std::vector<std::string>& choices) {
  std::string text;
  for (const std::string& c : choices) text += (text.empty() ? "" : ", ") + c;
  return text;
}

// One of a list of words; the member is a std::string or a std::optional<std::string>.
template <typename Member>
Field choice(std::string name, Member Options::*member, std::vector<std::string> choices,
             std::string help) {
  Field f;
  f.name = name;
  f.read = [member, choices](const Json& j, Options& o) -> Status {
    if (!j.is_string()) {
      return invalid_argument(j.dump() + " is not a string; expected one of " + list(choices));
    }
    const std::string problem = choice_problem(j.get<std::string>(), choices);
    if (!problem.empty()) return invalid_argument(problem);
    o.*member = j.get<std::string>();
    return {};
  };
  f.read_text = [member, choices](const std::string& text, Options& o) -> Status {
    const std::string problem = choice_problem(text, choices);
    if (!problem.empty()) return invalid_argument(problem);
    o.*member = text;
    return {};
  };
  f.write = [member](const Options& o) { return json_of(o.*member); };
  f.check = [member, choices](const Options& o) -> Status {
    const std::string* value = value_of(o.*member);
    if (value == nullptr) return {};
    const std::string problem = choice_problem(*value, choices);
    return problem.empty() ? Status() : invalid_argument(problem);
  };
  f.add = [name, member, choices, help](CLI::App& cli, Options& o) {
    cli.add_option_function<std::string>(
           "--" + name, [&o, member](const std::string& text) { o.*member = text; }, help)
        ->type_name("WORD")
        ->check(one_of(choices));
  };
  return f;
}

// Free text (a path, a URI, a name): any string.
Field text(std::string name, std::string Options::*member, std::string help) {
  Field f;
  f.name = name;
  f.read = [member](const Json& j, Options& o) -> Status {
    if (!j.is_string()) return invalid_argument(j.dump() + " is not a string");
    o.*member = j.get<std::string>();
    return {};
  };
  f.read_text = [member](const std::string& text, Options& o) -> Status {
    o.*member = text;
    return {};
  };
  f.write = [member](const Options& o) { return Json(o.*member); };
  f.check = [](const Options&) { return Status(); };
  f.add = [name, member, help](CLI::App& cli, Options& o) {
    cli.add_option("--" + name, o.*member, help);
  };
  return f;
}

// true or false; `flags` is CLI11's spelling ("--share-frames,!--no-share-frames").
Field boolean(std::string name, bool Options::*member, std::string flags, std::string help) {
  Field f;
  f.name = name;
  f.read = [member](const Json& j, Options& o) -> Status {
    if (!j.is_boolean()) return invalid_argument(j.dump() + " is not true or false");
    o.*member = j.get<bool>();
    return {};
  };
  f.read_text = [member](const std::string& text, Options& o) -> Status {
    if (text != "true" && text != "false") {
      return invalid_argument(not_one_of_text(text, {"true", "false"}));
    }
    o.*member = text == "true";
    return {};
  };
  f.write = [member](const Options& o) { return Json(o.*member); };
  f.check = [](const Options&) { return Status(); };
  f.add = [flags, member, help](CLI::App& cli, Options& o) {
    cli.add_flag(flags, o.*member, help);
  };
  return f;
}

// A list as text: a JSON list ("[256, 256]") or numbers separated by spaces or commas.
std::function<Status(const std::string&, Options&)> list_from_text(
    std::function<Status(const Json&, Options&)> read) {
  return [read = std::move(read)](const std::string& text, Options& o) -> Status {
    Json parsed = Json::parse(text, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_array()) {
      std::string spaced = text;
      for (char& c : spaced) c = c == ',' ? ' ' : c;
      std::istringstream words(spaced);
      parsed = Json::array();
      for (std::string word; words >> word;) {
        const Json number = Json::parse(word, nullptr, false);
        parsed.push_back(number.is_discarded() ? Json(word) : number);
      }
    }
    return read(parsed, o);
  };
}

// --hidden: 1 to 16 layer sizes, each an integer >= 1.
constexpr std::size_t kMaxHiddenLayers = 16;
const ValueRange kLayerSize = ValueRange::at_least(1);

std::string hidden_expected() {
  return "1 to " + std::to_string(kMaxHiddenLayers) + " layer sizes, each " + kLayerSize.expected();
}

Status check_hidden(const std::vector<std::int64_t>& sizes, const std::string& shown) {
  if (sizes.empty() || sizes.size() > kMaxHiddenLayers) {
    return invalid_argument(shown + " is out of range; expected " + hidden_expected());
  }
  for (const std::int64_t size : sizes) {
    if (!kLayerSize.contains(static_cast<double>(size))) {
      return invalid_argument(out_of_range_text(std::to_string(size), kLayerSize) +
                              " (every layer size)");
    }
  }
  return {};
}

Field hidden_field(std::string help) {
  Field f;
  f.name = "hidden";
  f.read = [](const Json& j, Options& o) -> Status {
    if (!j.is_array())
      return invalid_argument(j.dump() + " is not a list; expected " + hidden_expected());
    std::vector<std::int64_t> sizes;
    for (const Json& size : j) {
      if (!size.is_number()) {
        return invalid_argument(size.dump() + " is not a number; expected " + hidden_expected());
      }
      Result<std::int64_t> parsed = parse_in_range<std::int64_t>(size.dump(), kLayerSize);
      if (!parsed.ok()) return parsed.status();
      sizes.push_back(*parsed);
    }
    OPU_RETURN_IF_ERROR(check_hidden(sizes, j.dump()));
    o.hidden = sizes;
    return {};
  };
  f.read_text = list_from_text(f.read);
  f.write = [](const Options& o) { return json_of(o.hidden); };
  f.check = [](const Options& o) -> Status {
    if (!o.hidden) return {};
    return check_hidden(*o.hidden, show_list(*o.hidden));
  };
  f.add = [help](CLI::App& cli, Options& o) {
    cli.add_option_function<std::vector<std::string>>(
           "--hidden",
           [&o](const std::vector<std::string>& texts) {
             std::vector<std::int64_t> sizes;
             for (const std::string& t : texts) {
               sizes.push_back(parse_in_range<std::int64_t>(t, kLayerSize).value());
             }
             o.hidden = sizes;
           },
           help)
        ->type_name("INT")
        ->expected(1, static_cast<int>(kMaxHiddenLayers))
        ->check(in_range<std::int64_t>(kLayerSize));
  };
  return f;
}

// --normalize MEAN STD: two finite numbers, STD > 0.
const ValueRange kMean = [] {
  ValueRange any_number;  // finite
  any_number.note = "MEAN";
  return any_number;
}();
const ValueRange kStd = ValueRange::positive("STD");
const std::string kNormalizeExpected = "two numbers MEAN STD, STD > 0";

Status check_normalize(const std::vector<float>& values, const std::string& shown) {
  if (values.size() != 2) {
    return invalid_argument(shown + " is out of range; expected " + kNormalizeExpected);
  }
  if (!kMean.contains(values[0])) {
    return invalid_argument(out_of_range_text(show(values[0]), kMean));
  }
  if (!kStd.contains(values[1])) {
    return invalid_argument(out_of_range_text(show(values[1]), kStd));
  }
  return {};
}

Field normalize_field(std::string help) {
  Field f;
  f.name = "normalize";
  f.read = [](const Json& j, Options& o) -> Status {
    if (!j.is_array()) {
      return invalid_argument(j.dump() + " is not a list; expected " + kNormalizeExpected);
    }
    std::vector<float> values;
    for (const Json& value : j) {
      if (!value.is_number()) {
        return invalid_argument(value.dump() + " is not a number; expected " + kNormalizeExpected);
      }
      Result<float> parsed = parse_in_range<float>(value.dump(), values.empty() ? kMean : kStd);
      if (!parsed.ok()) return parsed.status();
      values.push_back(*parsed);
    }
    OPU_RETURN_IF_ERROR(check_normalize(values, j.dump()));
    o.normalize = values;
    return {};
  };
  f.read_text = list_from_text(f.read);
  f.write = [](const Options& o) { return json_of(o.normalize); };
  f.check = [](const Options& o) -> Status {
    if (!o.normalize) return {};
    return check_normalize(*o.normalize, show_list(*o.normalize));
  };
  f.add = [help](CLI::App& cli, Options& o) {
    cli.add_option_function<std::vector<std::string>>(
           "--normalize",
           [&o](const std::vector<std::string>& texts) {
             o.normalize = std::vector<float>{parse_in_range<float>(texts.at(0), kMean).value(),
                                              parse_in_range<float>(texts.at(1), kStd).value()};
           },
           help)
        ->type_name("NUMBER")
        ->expected(2)
        ->check(in_range<float>(kMean).application_index(0))
        ->check(in_range<float>(kStd).application_index(1));
  };
  return f;
}

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      choice("model", &Options::model, {"mlp", "gcn", "transformer"},
             "mlp (784-256-256-10 on IDX images), gcn (Planetoid) or transformer (a character "
             "language model on a text file)"),
      choice("method", &Options::method, {"bp", "dfa", "shallow"},
             "bp, dfa or shallow (default dfa)"),
      text("feedback", &Options::feedback,
           "digital (U[-1,1) B), digital-gaussian, digital-noisy (Gaussian B + i.i.d. noise, see "
           "--feedback-snr), or a device URI: sim://?..., grpc://h:p"),
      number<double>("feedback-snr", &Options::feedback_snr, ValueRange::positive(),
                     "digital-noisy: signal variance / noise variance of B e, per sample "
                     "(required by digital-noisy)"),
      choice("encoding", &Options::encoding, {"ternary", "bitplanes", "stochastic"},
             "device feedback: ternary (thresholded), bitplanes, or stochastic (unbiased)"),
      number<float>("threshold", &Options::threshold, ValueRange::closed_open(0, 1),
                    "ternary threshold relative to max|e| (0.1)"),
      number<int>("bitplanes", &Options::bitplanes, ValueRange::integers(1, 16),
                  "bit-planes per sign (bitplanes 4, stochastic 2)"),
      boolean("share-frames", &Options::share_frames, "--share-frames,!--no-share-frames",
              "identical codes within a batch are measured once (default on)"),
      number<int>("repeats", &Options::repeats, ValueRange::integers(1, 64),
                  "device feedback: frames of each code taken N times and averaged (4)"),
      number<int>("reference-repeats", &Options::reference_repeats,
                  ValueRange::integers(0, sim::kMaxReferenceRepeats, "0 = the device's default"),
                  "device feedback: reference frames averaged per call (256), 0 = the device's "
                  "own default"),
      number<double>("reference-max-age", &Options::reference_max_age,
                     ValueRange::non_negative("device seconds; 0 = a fresh reference every call"),
                     "device feedback: device seconds a measured reference serves later calls; "
                     "0 = measured in every call (default; docs/camera-gap.md: reuse halves the "
                     "frames but costs accuracy)"),
      text("calibration", &Options::calibration,
           "device feedback: calibration file (opu-calibrate exposure --out FILE), which must "
           "exist; its exposure goes with every request, its masked pixels project to 0. "
           "Digital feedback ignores it"),
      number<std::int64_t>("epochs", &Options::epochs, ValueRange::at_least(1),
                           "epochs (mlp 15, gcn 200)"),
      number<std::int64_t>("batch", &Options::batch, ValueRange::at_least(1),
                           "mini-batch size (mlp 128; transformer 32 windows)"),
      number<float>("lr", &Options::lr, ValueRange::positive(), "learning rate (0.01)"),
      number<float>("momentum", &Options::momentum, ValueRange::closed_open(0, 1),
                    "SGD momentum (0.9)"),
      choice("optimizer", &Options::optimizer, {"sgd", "adam"}, "sgd or adam (mlp sgd, gcn adam)"),
      number<float>("weight-decay", &Options::weight_decay, ValueRange::non_negative(),
                    "L2 weight decay (mlp 0; gcn first layer: bp 5e-4, dfa/shallow 1e-4)"),
      number<float>("dropout", &Options::dropout, ValueRange::closed_open(0, 1),
                    "hidden dropout (mlp 0; gcn bp 0.5, gcn dfa/shallow 0.1 as the paper)"),
      number<float>("input-dropout", &Options::input_dropout, ValueRange::closed_open(0, 1),
                    "gcn input dropout (bp 0.5 as Kipf & Welling, dfa/shallow 0 as the paper)"),
      hidden_field("hidden sizes (mlp 256 256, gcn 16)"),
      choice("activation", &Options::activation, {"relu", "tanh", "sigmoid", "gelu"},
             "hidden activation: relu, tanh, sigmoid (mlp); relu, gelu, tanh, sigmoid "
             "(transformer FFN)"),
      normalize_field(
          "mlp: MEAN STD of the input normalisation (x - MEAN) / STD; default: the training "
          "split's own pixel mean and std, as the paper does; 0 1 = none"),
      choice("loss", &Options::loss, {"cross_entropy", "ce", "bce", "mse"},
             "cross_entropy (or ce), bce or mse"),
      number<std::uint64_t>("seed", &Options::seed, ValueRange::at_least(0),
                            "seed of every random stream (1)"),
      text("data", &Options::data,
           "mlp: IDX folder; gcn: Planetoid folder; transformer: a text file (default "
           "data/tinyshakespeare/input.txt)"),
      text("dataset", &Options::dataset, "gcn: cora or citeseer"),
      number<std::int64_t>("align-every", &Options::align_every, ValueRange::at_least(0, "0 = off"),
                           "steps between alignment measurements, 0 = off (mlp 50, gcn 1)"),
      text("metrics", &Options::metrics, "JSON lines file for per-epoch records"),
      text("checkpoint", &Options::checkpoint, "directory: a checkpoint after every epoch"),
      boolean("resume", &Options::resume, "--resume", "continue from --checkpoint DIR"),
      number<int>("threads", &Options::threads, ValueRange::integers(1, 1024),
                  "compute threads (OpenMP + OpenBLAS), default 1"),
      choice("log-level", &Options::log_level,
             {"trace", "debug", "info", "warn", "error", "critical", "off"},
             "trace, debug, info, warn, error, critical, off (warn)"),
      // --- transformer (docs/trainer.md, "The Transformer") ---
      choice("dfa-points", &Options::dfa_points, {"macro", "micro"},
             "transformer DFA feedback points: macro (each block's output) or micro (after "
             "attention, after the FFN's activation, at the block's output)"),
      choice("dfa-error", &Options::dfa_error, {"hidden", "logits"},
             "transformer: DFA projects dL/d(final hidden state) per token (the paper's) or "
             "dL/d(logits)"),
      number<std::int64_t>("layers", &Options::layers, ValueRange::at_least(1),
                           "transformer blocks (4)"),
      number<std::int64_t>("d-model", &Options::d_model, ValueRange::at_least(1),
                           "transformer width, a multiple of --heads (128)"),
      number<std::int64_t>("heads", &Options::heads, ValueRange::at_least(1),
                           "transformer attention heads (4)"),
      number<std::int64_t>("d-ff", &Options::d_ff, ValueRange::at_least(1),
                           "transformer FFN width (512)"),
      number<std::int64_t>("context", &Options::context, ValueRange::at_least(1),
                           "transformer context: characters per window (128)"),
      boolean("pre-ln", &Options::pre_ln, "--pre-ln",
              "transformer: pre-LayerNorm blocks (default post-LN, as the paper)"),
      choice("positions", &Options::positions, {"sinusoidal", "learned"},
             "transformer positions: sinusoidal (default) or learned"),
      number<std::int64_t>("steps", &Options::steps, ValueRange::at_least(1),
                           "transformer training steps (2000)"),
      choice("schedule", &Options::schedule, {"noam", "constant", "plateau"},
             "transformer learning rate: noam (warm-up to --lr, then 1/sqrt(step)), constant "
             "(after a linear warm-up, the default) or plateau (x0.2 when validation "
             "stalls)"),
      number<std::int64_t>("warmup", &Options::warmup, ValueRange::at_least(0),
                           "transformer warm-up steps (bp and noam 100, dfa/shallow 0)"),
      number<float>("beta2", &Options::beta2, ValueRange::closed_open(0, 1),
                    "Adam beta2 (transformer: bp 0.98, dfa/shallow 0.999, as the paper)"),
      number<float>("clip", &Options::clip, ValueRange::non_negative("0 = none"),
                    "transformer gradient-norm clipping (0.5, the paper's)"),
      number<std::int64_t>("eval-every", &Options::eval_every,
                           ValueRange::at_least(0, "0 = at the end only"),
                           "transformer: steps between validations (200)"),
      number<std::int64_t>("eval-chars", &Options::eval_chars, ValueRange::at_least(0, "0 = all"),
                           "transformer: validation characters evaluated (0 = all)"),
      number<std::int64_t>("sample", &Options::sample, ValueRange::at_least(0),
                           "transformer: characters to generate after training (0)"),
      number<float>("temperature", &Options::temperature, ValueRange::non_negative(),
                    "transformer: sampling temperature (0.8; 0 = the most likely character)"),
  };
  return table;
}

// "weight_decay" and "weight-decay" name the same option.
const Field* find_field(const std::string& name) {
  std::string key = name;
  for (char& c : key) c = c == '_' ? '-' : c;
  for (const Field& f : fields()) {
    if (f.name == key) return &f;
  }
  return nullptr;
}

// The transformer's own defaults (the reference setting of docs/trainer.md: BP with Adam 1e-3,
// beta2 0.98 and 100 warm-up steps; DFA and shallow with a constant 5e-4 and beta2 0.999),
// and the options it cannot use.
Status finalize_transformer(Options& o) {
  if (o.d_model % o.heads != 0) {
    return invalid_argument("--d-model: " + std::to_string(o.d_model) +
                            " is not a multiple of --heads " + std::to_string(o.heads));
  }
  if (o.loss != "cross_entropy" && o.loss != "ce") {
    return invalid_argument("--loss: " + o.loss +
                            " does not apply; the transformer is trained with cross_entropy");
  }
  if (o.epochs && *o.epochs != 1) {
    return invalid_argument("--epochs: " + std::to_string(*o.epochs) +
                            " does not apply; the transformer trains for --steps steps");
  }
  if (!o.checkpoint.empty() || o.resume) {
    return invalid_argument("--checkpoint, --resume: not available with --model transformer yet");
  }
  const bool bp = o.method == "bp";
  if (!o.batch) o.batch = 32;
  if (!o.steps) o.steps = 2000;
  if (!o.lr) o.lr = bp ? 1e-3F : 5e-4F;
  if (!o.optimizer) o.optimizer = "adam";
  if (!o.weight_decay) o.weight_decay = 0.0F;
  if (!o.dropout) o.dropout = 0.1F;  // the paper's model
  if (!o.align_every) o.align_every = 100;
  if (!o.schedule) o.schedule = "constant";
  if (!o.warmup) o.warmup = bp || *o.schedule == "noam" ? 100 : 0;
  if (!o.beta2) o.beta2 = bp ? 0.98F : 0.999F;
  if (*o.schedule == "noam" && *o.warmup < 1) {
    return invalid_argument(
        "--warmup: 0 is out of range; expected an integer >= 1 with "
        "--schedule noam");
  }
  o.epochs = 1;  // unused: --steps counts
  return {};
}

}  // namespace

Status apply_json(const nlohmann::json& json, Options& options) {
  if (!json.is_object()) return invalid_argument("want a JSON object of option names");
  for (const auto& [raw_key, value] : json.items()) {
    const Field* field = find_field(raw_key);
    if (field == nullptr) {
      return invalid_argument(
          "unknown option '" + raw_key +
          "' (the keys are opu-train's flag names: lr, epochs, weight-decay, ...)");
    }
    if (value.is_null()) continue;  // not set: the default stays
    OPU_RETURN_IF_ERROR(field->read(value, options).with_context(raw_key));
  }
  return {};
}

Status apply_text(const std::string& name, const std::string& text, Options& options) {
  const Field* field = find_field(name);
  if (field == nullptr) return invalid_argument("unknown option '" + name + "'");
  return field->read_text(text, options).with_context("--" + field->name);
}

nlohmann::json to_json(const Options& options) {
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : fields()) j[f.name] = f.write(options);
  return j;
}

Status finalize(Options& o) {
  // Every value that is set, against its range, before any default is filled in.
  for (const Field& f : fields()) OPU_RETURN_IF_ERROR(f.check(o).with_context("--" + f.name));
  const bool gcn = o.model == "gcn";
  if (o.feedback == "digital-noisy" && !o.feedback_snr) {
    return invalid_argument("--feedback-snr: not set; expected " +
                            ValueRange::positive().expected() + " with --feedback digital-noisy");
  }
  if (o.resume && o.checkpoint.empty()) {
    return invalid_argument("--resume needs --checkpoint DIR (where the checkpoint is)");
  }
  if (!o.calibration.empty() && !std::filesystem::is_regular_file(o.calibration)) {
    return not_found("--calibration: " + o.calibration + ": no such file");
  }
  const bool transformer = o.model == "transformer";
  if (transformer) OPU_RETURN_IF_ERROR(finalize_transformer(o));
  if (!transformer && o.activation == "gelu") {
    return invalid_argument(
        "--activation: gelu is for the transformer; expected one of relu, "
        "tanh, sigmoid with --model " +
        o.model);
  }
  // Only what is not set takes the model's default.
  if (!o.batch) o.batch = 128;
  if (!o.epochs) o.epochs = gcn ? 200 : 15;
  if (!o.lr) o.lr = 0.01F;
  if (!o.optimizer) o.optimizer = gcn ? "adam" : "sgd";
  // GCN: Kipf & Welling's recipe for BP; the paper's DFAGraphNet recipe (lighter hidden dropout,
  // no input dropout, weaker decay) for DFA and shallow.
  const bool gcn_bp = gcn && o.method == "bp";
  if (!o.weight_decay) o.weight_decay = gcn ? (gcn_bp ? 5e-4F : 1e-4F) : 0.0F;
  if (!o.dropout) o.dropout = gcn ? (gcn_bp ? 0.5F : 0.1F) : 0.0F;
  if (!o.input_dropout) o.input_dropout = gcn_bp ? 0.5F : 0.0F;
  if (!o.hidden) {
    o.hidden = gcn ? std::vector<std::int64_t>{16} : std::vector<std::int64_t>{256, 256};
  }
  if (!o.align_every) o.align_every = gcn ? 1 : 50;
  if (!o.bitplanes) {
    o.bitplanes = o.encoding == "stochastic" ? recommended_linear_options().bitplanes : 4;
  }
  return {};
}

Result<Options> parse_command_line(int argc, char** argv, int& exit_code) {
  exit_code = -1;
  Options options;
  // --config is applied first so that explicit flags override it: CLI11 writes an option only
  // when its flag is present.
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string path;
    if (arg == "--config" && i + 1 < argc) {
      path = argv[i + 1];
    } else if (arg.rfind("--config=", 0) == 0) {
      path = arg.substr(9);
    } else {
      continue;
    }
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
  CLI::App cli{
      "opu-train: train an MLP (Fashion-MNIST or any IDX folder), a GCN (Planetoid) or a "
      "Transformer language model (any text file) with BP, DFA (digital or OPU feedback) or "
      "shallow learning"};
  for (const Field& f : fields()) f.add(cli, options);
  std::string config_path;
  cli.add_option("--config", config_path, "JSON file of these option names (flags override)");
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
