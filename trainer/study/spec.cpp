#include "spec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "opu_sim/sim_device.h"

namespace opu::trainer::study {
namespace {

constexpr std::string_view kSimScheme = "sim://";
// The photon budget: electrons at full scale. Auto exposure puts the mean frame at a fixed
// fraction of full scale, so the electrons a reading holds, hence its shot noise, are set by
// gain x (2^bits - 1), not by the light level (docs/noise-study.md).
constexpr std::string_view kFullWell = "full_well_e";

const std::vector<std::pair<std::string, std::string>>& feedback_parameters() {
  static const std::vector<std::pair<std::string, std::string>> kParams = {
      {"threshold",
       "ternary threshold relative to max|e|; implies encoding=ternary (opu-train --threshold)"},
      {"bitplanes", "bit-planes per sign; implies encoding=bitplanes (opu-train --bitplanes)"},
      {"encoding", "ternary, bitplanes or stochastic (opu-train --encoding)"},
  };
  return kParams;
}

bool is_device_parameter(const std::string& name) {
  if (name == kFullWell) return true;
  const auto params = sim::SimConfig::describe_params();
  return std::any_of(params.begin(), params.end(), [&](const auto& p) { return p.first == name; });
}

Result<double> parse_number(const std::string& what, const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value)) {
    return invalid_argument(what + ": '" + text + "' is not a finite number");
  }
  return value;
}

std::string format_number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.10g", value);
  return buffer;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, separator)) parts.push_back(part);
  if (!text.empty() && text.back() == separator) parts.emplace_back();
  return parts;
}

// Whether `text` can be written as JSON: settings, device URIs and swept values end up in the
// ledger and in the fingerprint, and nlohmann::json refuses (throws) to write invalid UTF-8.
bool is_utf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

// "lo:hi" or "lo:hi:step", inclusive, with a tolerance of a millionth of a step for decimals.
constexpr int kMaxRangeValues = 1000;
Result<std::vector<std::string>> expand_range(const std::string& what, const std::string& text) {
  const std::vector<std::string> parts = split(text, ':');
  if (parts.size() < 2 || parts.size() > 3) {
    return invalid_argument(what + ": range '" + text + "' is not lo:hi or lo:hi:step");
  }
  Result<double> lo = parse_number(what, parts[0]);
  if (!lo.ok()) return lo.status();
  Result<double> hi = parse_number(what, parts[1]);
  if (!hi.ok()) return hi.status();
  double step = 1.0;
  if (parts.size() == 3) {
    Result<double> parsed = parse_number(what, parts[2]);
    if (!parsed.ok()) return parsed.status();
    step = *parsed;
  }
  if (!(step > 0.0)) {
    return invalid_argument(what + ": range '" + text + "' has step " + format_number(step) +
                            ", want > 0");
  }
  // Counted before any value is made, and each value computed from its index: "0:1e9" would
  // otherwise fill the memory, and a step below the values' resolution would never advance.
  const double span = (*hi - *lo) / step + 1e-6;
  if (span >= kMaxRangeValues) {
    return invalid_argument(what + ": range '" + text + "' has more than " +
                            std::to_string(kMaxRangeValues) + " values, want at most " +
                            std::to_string(kMaxRangeValues) + " (one training run per value)");
  }
  std::vector<std::string> values;
  for (int k = 0; span >= 0.0 && k <= static_cast<int>(span); ++k) {
    values.push_back(format_number(*lo + k * step));
  }
  if (values.empty()) {
    return invalid_argument(what + ": range '" + text + "' is empty (lo " + format_number(*lo) +
                            " > hi " + format_number(*hi) + ")");
  }
  return values;
}

// Applies a feedback-axis value to the options, through opu-train's own option table (the same
// parsing and range as --threshold, --bitplanes, --encoding).
Status apply_feedback_value(const std::string& name, const std::string& value, app::Options& o) {
  OPU_RETURN_IF_ERROR(
      app::apply_text(name, value, o).with_context("--sweep " + name + "=" + value));
  if (name == "threshold") o.encoding = "ternary";
  if (name == "bitplanes") o.encoding = "bitplanes";
  return {};
}

}  // namespace

std::string_view point_kind_name(PointKind kind) {
  switch (kind) {
    case PointKind::kDevice:
      return "device";
    case PointKind::kExactDigital:
      return "exact";
    case PointKind::kMatchedDigital:
      return "matched";
    case PointKind::kNoisyDigital:
      return "noisy";
  }
  return "unknown";
}

bool is_sim_uri(const std::string& uri) { return uri.rfind(kSimScheme, 0) == 0; }

Result<std::map<std::string, std::string>> sim_params(const std::string& uri) {
  if (!is_sim_uri(uri)) return invalid_argument("'" + uri + "' is not a sim:// URI");
  std::string query = uri.substr(kSimScheme.size());
  if (!query.empty() && query.front() == '/') query.erase(0, 1);
  if (!query.empty() && query.front() != '?') {
    return invalid_argument("'" + uri + "': sim:// takes only ?name=value parameters");
  }
  if (!query.empty()) query.erase(0, 1);
  return sim::parse_query(query);
}

std::string sim_uri(const std::map<std::string, std::string>& params) {
  std::string uri(kSimScheme);
  char separator = '?';
  for (const auto& [name, value] : params) {
    uri += separator + name + "=" + value;
    separator = '&';
  }
  return uri;
}

std::vector<std::pair<std::string, std::string>> sweep_parameters() {
  std::vector<std::pair<std::string, std::string>> all = {
      {std::string(kFullWell),
       "photon budget: electrons at full scale; sets gain_e_per_count = full_well_e / "
       "(2^adc_bits - 1), i.e. the shot noise (sim:// only)"}};
  for (const auto& [name, description] : sim::SimConfig::describe_params()) {
    all.emplace_back(name, "simulator: " + description + " (sim:// only)");
  }
  for (const auto& p : feedback_parameters()) all.push_back(p);
  all.emplace_back(
      "snr", "digital B plus i.i.d. Gaussian noise at this signal/noise variance (no device)");
  return all;
}

Result<AxisKind> axis_kind(const std::string& name) {
  if (name == "snr") return AxisKind::kSnr;
  for (const auto& p : feedback_parameters()) {
    if (p.first == name) return AxisKind::kFeedback;
  }
  if (is_device_parameter(name)) return AxisKind::kDevice;
  std::string known;
  for (const auto& p : sweep_parameters()) known += (known.empty() ? "" : ", ") + p.first;
  return invalid_argument("--sweep: unknown parameter '" + name + "', want one of: " + known);
}

Status apply_train_config(std::string_view text, const std::string& source, nlohmann::json& train) {
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return invalid_argument("--config " + source + ": want a JSON object of opu-train options");
  }
  train.update(json);
  return {};
}

Status apply_train_setting(const std::string& setting, nlohmann::json& train) {
  const std::size_t eq = setting.find('=');
  if (eq == std::string::npos || eq == 0) {
    return invalid_argument("--train '" + setting + "' is not NAME=VALUE");
  }
  if (!is_utf8(setting)) return invalid_argument("--train: the setting is not valid UTF-8");
  const std::string value = setting.substr(eq + 1);
  nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
  train[setting.substr(0, eq)] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
  return {};
}

Result<SweepAxis> parse_sweep(const std::string& text) {
  const std::size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return invalid_argument("--sweep '" + text + "' is not NAME=VALUES (e.g. adc_bits=2,4,8)");
  }
  SweepAxis axis;
  axis.name = text.substr(0, eq);
  OPU_RETURN_IF_ERROR(axis_kind(axis.name).status());
  const std::string values = text.substr(eq + 1);
  const std::string what = "--sweep " + axis.name;
  for (const std::string& item : split(values, ',')) {
    if (item.empty()) continue;
    if (!is_utf8(item)) return invalid_argument(what + ": a value is not valid UTF-8");
    if (item.find(':') != std::string::npos) {
      Result<std::vector<std::string>> range = expand_range(what, item);
      if (!range.ok()) return range.status();
      axis.values.insert(axis.values.end(), range->begin(), range->end());
    } else {
      axis.values.push_back(item);
    }
  }
  if (axis.values.empty()) {
    return invalid_argument(what + ": empty range '" + values + "', want values like " + axis.name +
                            "=1,2,4 or " + axis.name + "=1:8");
  }
  std::vector<std::string> sorted = axis.values;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return invalid_argument(what + ": value listed twice in '" + values + "'");
  }
  return axis;
}

std::vector<Point> expand_points(const StudySpec& spec) {
  std::vector<Point> points;
  for (const SweepAxis& axis : spec.sweeps) {
    const bool digital = axis.name == "snr";
    for (const std::string& value : axis.values) {
      const std::string key = axis.name + "=" + value;
      points.push_back(
          {key, axis.name, value, digital ? PointKind::kNoisyDigital : PointKind::kDevice});
      if (spec.matched_control && !digital) {
        points.push_back({key + "/matched", axis.name, value, PointKind::kMatchedDigital});
      }
    }
  }
  if (spec.exact_control) points.push_back({"exact", "", "", PointKind::kExactDigital});
  return points;
}

Result<std::string> point_device_uri(const std::string& worker_uri, const Point& point) {
  if (point.axis.empty() || !is_sim_uri(worker_uri)) return worker_uri;
  Result<AxisKind> kind = axis_kind(point.axis);
  if (!kind.ok()) return kind.status();
  if (*kind != AxisKind::kDevice) return worker_uri;
  Result<std::map<std::string, std::string>> params = sim_params(worker_uri);
  if (!params.ok()) return params.status();
  if (point.axis == kFullWell) {
    Result<double> electrons = parse_in_range<double>(point.value, kFullWellRange);
    if (!electrons.ok()) return electrons.status().with_context("--sweep " + point.key);
    // The base URI's bit depth, parsed (and checked) by the simulator's own table.
    Result<sim::SimConfig> base = sim::SimConfig::from_params(*params);
    if (!base.ok()) return base.status().with_context("--device " + worker_uri);
    const double full_scale = std::ldexp(1.0, base->camera.adc_bits) - 1.0;
    (*params)["gain_e_per_count"] = format_number(*electrons / full_scale);
  } else {
    (*params)[point.axis] = point.value;
  }
  const std::string uri = sim_uri(*params);
  // Parse it now, so a bad value is reported by name before any run starts.
  Result<sim::SimConfig> config = sim::SimConfig::from_params(*params);
  if (!config.ok()) return config.status().with_context("--sweep " + point.key);
  return uri;
}

Result<app::Options> run_options(const StudySpec& spec, const Point& point, std::uint64_t seed,
                                 const std::string& worker_uri, double matched_snr) {
  app::Options o;
  OPU_RETURN_IF_ERROR(
      app::apply_json(spec.train, o).with_context("training options (--config, --train)"));
  if (o.method != "dfa") {
    return invalid_argument("training options: method is '" + o.method +
                            "', want dfa (opu-study studies DFA's feedback)");
  }
  o.seed = seed;
  switch (point.kind) {
    case PointKind::kDevice: {
      Result<std::string> uri = point_device_uri(worker_uri, point);
      if (!uri.ok()) return uri.status();
      o.feedback = *uri;
      Result<AxisKind> kind = axis_kind(point.axis);
      if (!kind.ok()) return kind.status();
      if (*kind == AxisKind::kFeedback) {
        OPU_RETURN_IF_ERROR(apply_feedback_value(point.axis, point.value, o));
      }
      break;
    }
    case PointKind::kExactDigital:
      o.feedback = "digital-gaussian";  // the distribution a device's B has
      break;
    case PointKind::kMatchedDigital:
      o.feedback = "digital-noisy";
      o.feedback_snr = matched_snr;
      break;
    case PointKind::kNoisyDigital: {
      Result<double> snr = parse_number("--sweep " + point.key, point.value);
      if (!snr.ok()) return snr.status();
      o.feedback = "digital-noisy";
      o.feedback_snr = *snr;
      break;
    }
  }
  OPU_RETURN_IF_ERROR(app::finalize(o).with_context("--sweep " + point.key));
  return o;
}

Status validate(const StudySpec& spec) {
  if (spec.devices.empty()) return invalid_argument("--device: want at least one device URI");
  for (const std::string& uri : spec.devices) {
    if (!is_utf8(uri)) return invalid_argument("--device: a URI is not valid UTF-8");
  }
  if (spec.seeds.empty()) return invalid_argument("--seeds: want at least one seed");
  if (spec.sweeps.empty() && !spec.exact_control) {
    return invalid_argument("--sweep: nothing to run, want at least one --sweep NAME=VALUES");
  }
  if (!kSnrRepeatsRange.contains(spec.snr_repeats)) {
    return invalid_argument("--snr-repeats: " +
                            out_of_range_text(std::to_string(spec.snr_repeats), kSnrRepeatsRange));
  }
  if (!kSnrBatchRange.contains(static_cast<double>(spec.snr_batch))) {
    return invalid_argument("--snr-batch: " +
                            out_of_range_text(std::to_string(spec.snr_batch), kSnrBatchRange));
  }
  std::vector<std::uint64_t> seeds = spec.seeds;
  std::sort(seeds.begin(), seeds.end());
  if (auto twice = std::adjacent_find(seeds.begin(), seeds.end()); twice != seeds.end()) {
    return invalid_argument("--seeds: " + std::to_string(*twice) +
                            " is listed twice; expected distinct seeds");
  }
  for (const SweepAxis& axis : spec.sweeps) {
    Result<AxisKind> kind = axis_kind(axis.name);
    if (!kind.ok()) return kind.status();
    if (*kind != AxisKind::kDevice) continue;
    for (const std::string& uri : spec.devices) {
      if (!is_sim_uri(uri)) {
        return invalid_argument("--sweep " + axis.name + ": a device parameter, but --device " +
                                uri +
                                " is not sim:// (a server's camera is set when it starts: "
                                "sweep threshold, bitplanes or snr, or start replicas per value)");
      }
    }
  }
  // Every point must build valid options on every worker: bad values fail here, not mid-sweep.
  for (const Point& point : expand_points(spec)) {
    for (const std::string& uri : spec.devices) {
      OPU_RETURN_IF_ERROR(run_options(spec, point, spec.seeds.front(), uri, 1.0).status());
    }
  }
  return {};
}

std::string fingerprint(const StudySpec& spec) {
  const std::string& base = spec.devices.front();
  const nlohmann::json identity = {{"train", spec.train},
                                   {"device", is_sim_uri(base) ? base : "remote"},
                                   {"snr_repeats", spec.snr_repeats},
                                   {"snr_batch", spec.snr_batch},
                                   {"snr_prediction", spec.snr_prediction}};
  std::uint64_t hash = 1469598103934665603ULL;  // FNV-1a
  for (const char c : identity.dump()) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  }
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(hash));
  return buffer;
}

}  // namespace opu::trainer::study
