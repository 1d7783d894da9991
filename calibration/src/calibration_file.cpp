#include "calibration/calibration_file.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace opu::calibration {
namespace {

using nlohmann::json;

// Validation inside this file throws FieldError; the public functions turn it into a Status
// (exceptions inside, codes at the edge).
struct FieldError {
  Status status;
};

// A number as a person writes it (321.5, 2e+06), for messages.
std::string show_number(double value) {
  std::ostringstream text;
  text << value;
  return text.str();
}

std::string show(const json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

class Reader {
 public:
  Reader(const json& object, std::string path, std::string source)
      : object_(object), path_(std::move(path)), source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& got,
                         const std::string& want) const {
    throw FieldError{
        invalid_argument(source_ + ": " + name(key) + ": got " + got + ", want " + want)};
  }
  std::string name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  const json& get(const std::string& key, const std::string& want) const {
    const auto it = object_.find(key);
    if (it == object_.end()) fail(key, "nothing (missing)", want);
    return *it;
  }
  bool has(const std::string& key) const { return object_.contains(key); }

  double number(const std::string& key, double low = -std::numeric_limits<double>::infinity(),
                double high = std::numeric_limits<double>::infinity()) const {
    std::ostringstream want;
    want << "a number in [" << low << ", " << high << "]";
    const json& value = get(key, want.str());
    if (!value.is_number()) fail(key, show(value), want.str());
    const double x = value.get<double>();
    if (!(x >= low && x <= high)) fail(key, show(value), want.str());
    return x;
  }
  std::int64_t integer(const std::string& key, std::int64_t low = 0,
                       std::int64_t high = std::numeric_limits<std::int64_t>::max()) const {
    const std::string want =
        "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
    const json& value = get(key, want);
    if (!value.is_number_integer()) fail(key, show(value), want);
    const auto x = value.get<std::int64_t>();
    if (x < low || x > high) fail(key, show(value), want);
    return x;
  }
  std::uint64_t unsigned_integer(const std::string& key) const {
    const json& value = get(key, "an unsigned integer");
    if (!value.is_number_unsigned() &&
        !(value.is_number_integer() && value.get<std::int64_t>() >= 0)) {
      fail(key, show(value), "an unsigned integer");
    }
    return value.get<std::uint64_t>();
  }
  bool boolean(const std::string& key) const {
    const json& value = get(key, "true or false");
    if (!value.is_boolean()) fail(key, show(value), "true or false");
    return value.get<bool>();
  }
  std::string string(const std::string& key) const {
    const json& value = get(key, "a string");
    if (!value.is_string()) fail(key, show(value), "a string");
    return value.get<std::string>();
  }
  std::vector<double> numbers(const std::string& key) const {
    const json& value = get(key, "an array of numbers");
    if (!value.is_array()) fail(key, show(value), "an array of numbers");
    std::vector<double> out;
    for (const json& item : value) {
      if (!item.is_number()) fail(key, "an element " + show(item), "an array of numbers");
      out.push_back(item.get<double>());
    }
    return out;
  }
  std::vector<std::int64_t> integers(const std::string& key, std::int64_t low,
                                     std::int64_t high) const {
    const std::string want =
        "an array of integers in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
    const json& value = get(key, want);
    if (!value.is_array()) fail(key, show(value), want);
    std::vector<std::int64_t> out;
    for (const json& item : value) {
      if (!item.is_number_integer() || item.get<std::int64_t>() < low ||
          item.get<std::int64_t>() > high) {
        fail(key, "an element " + show(item), want);
      }
      out.push_back(item.get<std::int64_t>());
    }
    return out;
  }
  std::vector<float> floats(const std::string& key, std::size_t count) const {
    const std::string want = "base64 of " + std::to_string(count) + " float32 values";
    const json& value = get(key, want);
    if (!value.is_string()) fail(key, show(value), want);
    Result<std::vector<float>> decoded = decode_floats(value.get<std::string>(), name(key));
    if (!decoded.ok()) throw FieldError{decoded.status().with_context(source_)};
    if (decoded->size() != count) {
      fail(key, std::to_string(decoded->size()) + " values", want);
    }
    for (const float x : *decoded) {
      if (!std::isfinite(x)) fail(key, "a non-finite value", want + " (all finite)");
    }
    return std::move(*decoded);
  }
  Reader section(const std::string& key) const {
    const json& value = get(key, "an object");
    if (!value.is_object()) fail(key, show(value), "an object");
    return Reader(value, name(key), source_);
  }

 private:
  const json& object_;
  std::string path_;
  std::string source_;
};

constexpr double kInf = std::numeric_limits<double>::infinity();

DeviceRecord read_device(const Reader& r) {
  DeviceRecord d;
  d.uri = r.string("uri");
  d.model = r.string("model");
  d.simulated = r.boolean("simulated");
  d.max_n_in = r.integer("max_n_in", 1);
  d.max_n_out = r.integer("max_n_out", 1);
  d.adc_bits = static_cast<int>(r.integer("adc_bits", 1, 16));
  return d;
}

json write_device(const DeviceRecord& d) {
  return {{"uri", d.uri},           {"model", d.model},         {"simulated", d.simulated},
          {"max_n_in", d.max_n_in}, {"max_n_out", d.max_n_out}, {"adc_bits", d.adc_bits}};
}

NoiseSection read_noise(const Reader& r) {
  NoiseSection s;
  s.gain_e_per_count = r.number("gain_e_per_count", 1e-12, kInf);
  s.gain_stderr = r.number("gain_stderr", 0);
  s.read_noise_e = r.number("read_noise_e", 0);
  s.read_noise_stderr = r.number("read_noise_stderr", 0);
  s.read_noise_counts = r.number("read_noise_counts", 0);
  s.read_noise_ptc_e = r.number("read_noise_ptc_e", 0);
  s.dark_level_counts = r.number("dark_level_counts");
  s.dark_level_stderr = r.number("dark_level_stderr", 0);
  s.dark_spread_counts = r.number("dark_spread_counts", 0);
  s.saturation_counts = r.number("saturation_counts", 0);
  s.saturation_e = r.number("saturation_e");
  s.exposures_us = r.numbers("exposures_us");
  s.points_used = r.integer("points_used");
  s.fit_reduced_chi2 = r.number("fit_reduced_chi2", 0);
  s.frames = r.integer("frames");
  s.device_time_s = r.number("device_time_s", 0);
  return s;
}

json write_noise(const NoiseSection& s) {
  return {{"gain_e_per_count", s.gain_e_per_count},
          {"gain_stderr", s.gain_stderr},
          {"read_noise_e", s.read_noise_e},
          {"read_noise_stderr", s.read_noise_stderr},
          {"read_noise_counts", s.read_noise_counts},
          {"read_noise_ptc_e", s.read_noise_ptc_e},
          {"dark_level_counts", s.dark_level_counts},
          {"dark_level_stderr", s.dark_level_stderr},
          {"dark_spread_counts", s.dark_spread_counts},
          {"saturation_counts", s.saturation_counts},
          {"saturation_e", s.saturation_e},
          {"exposures_us", s.exposures_us},
          {"points_used", s.points_used},
          {"fit_reduced_chi2", s.fit_reduced_chi2},
          {"frames", s.frames},
          {"device_time_s", s.device_time_s}};
}

ExposureSection read_exposure(const Reader& r) {
  ExposureSection s;
  s.exposure_us = r.number("exposure_us", 1e-9, kInf);
  s.percentile = r.number("percentile", 0, 100);
  s.target_fraction = r.number("target_fraction", 0, 1);
  s.achieved_fraction = r.number("achieved_fraction", 0);
  s.saturated_fraction = r.number("saturated_fraction", 0, 1);
  s.density = r.number("density", 0, 1);
  s.n_in = r.integer("n_in", 1);
  s.n_out = r.integer("n_out", 1);
  s.dark_level_counts = r.number("dark_level_counts");
  s.masked_pixels = r.integers("masked_pixels", 0, s.n_out - 1);
  s.frames = r.integer("frames");
  s.device_time_s = r.number("device_time_s", 0);
  return s;
}

json write_exposure(const ExposureSection& s) {
  return {{"exposure_us", s.exposure_us},
          {"percentile", s.percentile},
          {"target_fraction", s.target_fraction},
          {"achieved_fraction", s.achieved_fraction},
          {"saturated_fraction", s.saturated_fraction},
          {"density", s.density},
          {"n_in", s.n_in},
          {"n_out", s.n_out},
          {"dark_level_counts", s.dark_level_counts},
          {"masked_pixels", s.masked_pixels},
          {"frames", s.frames},
          {"device_time_s", s.device_time_s}};
}

TmSection read_tm(const Reader& r) {
  TmSection s;
  s.n_in = r.integer("n_in", 1, std::int64_t{1} << 24);
  s.n_out = r.integer("n_out", 1, std::int64_t{1} << 24);
  if (s.n_in * s.n_out > (std::int64_t{1} << 28)) {
    r.fail("n_out", std::to_string(s.n_out) + " (with n_in " + std::to_string(s.n_in) + ")",
           "n_in * n_out <= 2^28");
  }
  s.column_offset = r.integer("column_offset", 0);
  s.exposure_us = r.number("exposure_us", 1e-9, kInf);
  const std::string layout = r.string("matrix_layout");
  if (layout != "row-major n_out x n_in, re then im") {
    r.fail("matrix_layout", "\"" + layout + "\"", "\"row-major n_out x n_in, re then im\"");
  }
  const std::size_t entries = static_cast<std::size_t>(s.n_in * s.n_out);
  const std::vector<float> re = r.floats("matrix_re", entries);
  const std::vector<float> im = r.floats("matrix_im", entries);
  s.matrix.resize(s.n_out, s.n_in);
  for (std::int64_t i = 0; i < s.n_out; ++i) {
    for (std::int64_t j = 0; j < s.n_in; ++j) {
      const std::size_t k = static_cast<std::size_t>(i * s.n_in + j);
      s.matrix(i, j) = {re[k], im[k]};
    }
  }
  const std::vector<float> dark = r.floats("dark_counts", static_cast<std::size_t>(s.n_out));
  s.dark_counts = Eigen::Map<const Eigen::VectorXf>(dark.data(), s.n_out);
  s.anchors = r.integer("anchors", 1);
  s.signals_per_shell = r.integer("signals_per_shell", 1);
  s.gn_iterations = r.integer("gn_iterations", 0);
  s.init_correlation = r.number("init_correlation", -1, 1);
  s.fit_correlation = r.number("fit_correlation", -1, 1);
  s.seed = r.unsigned_integer("seed");
  s.frames = r.integer("frames");
  s.device_time_s = r.number("device_time_s", 0);
  s.wall_time_s = r.number("wall_time_s", 0);
  return s;
}

json write_tm(const TmSection& s) {
  std::vector<float> re(static_cast<std::size_t>(s.n_in * s.n_out));
  std::vector<float> im(re.size());
  for (std::int64_t i = 0; i < s.n_out; ++i) {
    for (std::int64_t j = 0; j < s.n_in; ++j) {
      const std::size_t k = static_cast<std::size_t>(i * s.n_in + j);
      re[k] = s.matrix(i, j).real();
      im[k] = s.matrix(i, j).imag();
    }
  }
  return {
      {"n_in", s.n_in},
      {"n_out", s.n_out},
      {"column_offset", s.column_offset},
      {"exposure_us", s.exposure_us},
      {"units", "sqrt(counts above dark at exposure_us); up to a per-row phase and conjugation"},
      {"matrix_layout", "row-major n_out x n_in, re then im"},
      {"matrix_re", encode_floats(re.data(), re.size())},
      {"matrix_im", encode_floats(im.data(), im.size())},
      {"dark_counts", encode_floats(s.dark_counts.data(), static_cast<std::size_t>(s.n_out))},
      {"anchors", s.anchors},
      {"signals_per_shell", s.signals_per_shell},
      {"gn_iterations", s.gn_iterations},
      {"init_correlation", s.init_correlation},
      {"fit_correlation", s.fit_correlation},
      {"seed", s.seed},
      {"frames", s.frames},
      {"device_time_s", s.device_time_s},
      {"wall_time_s", s.wall_time_s}};
}

VerifySection read_verify(const Reader& r) {
  VerifySection s;
  s.correlation = r.number("correlation", -1, 1);
  if (r.has("correlation_ceiling")) s.correlation_ceiling = r.number("correlation_ceiling", -1, 1);
  if (r.has("relative_error")) s.relative_error = r.number("relative_error", 0);
  if (r.has("conjugated_rows")) s.conjugated_rows = r.number("conjugated_rows", 0, 1);
  if (r.has("truth_scale")) s.truth_scale = r.number("truth_scale", 0);
  if (r.has("relative_error_rescaled")) {
    s.relative_error_rescaled = r.number("relative_error_rescaled", 0);
  }
  s.held_out = r.integer("held_out", 1);
  s.density = r.number("density", 0, 1);
  s.seed = r.unsigned_integer("seed");
  s.frames = r.integer("frames");
  s.device_time_s = r.number("device_time_s", 0);
  return s;
}

json write_verify(const VerifySection& s) {
  json j = {{"correlation", s.correlation}, {"held_out", s.held_out},
            {"density", s.density},         {"seed", s.seed},
            {"frames", s.frames},           {"device_time_s", s.device_time_s}};
  if (s.correlation_ceiling) j["correlation_ceiling"] = *s.correlation_ceiling;
  if (s.relative_error) j["relative_error"] = *s.relative_error;
  if (s.conjugated_rows) j["conjugated_rows"] = *s.conjugated_rows;
  if (s.truth_scale) j["truth_scale"] = *s.truth_scale;
  if (s.relative_error_rescaled) j["relative_error_rescaled"] = *s.relative_error_rescaled;
  return j;
}

DriftSection read_drift(const Reader& r) {
  DriftSection s;
  s.lag_s = r.numbers("lag_s");
  s.correlation = r.numbers("correlation");
  if (s.lag_s.size() != s.correlation.size()) {
    r.fail("correlation", std::to_string(s.correlation.size()) + " values",
           std::to_string(s.lag_s.size()) + " (one per lag_s)");
  }
  s.decorrelation_time_s = r.number("decorrelation_time_s", 0);
  s.threshold = r.number("threshold", 0, 1);
  s.recalibrate_after_s = r.number("recalibrate_after_s", 0);
  s.noise_ceiling = r.number("noise_ceiling", -1, 1);
  s.interval_s = r.number("interval_s", 0);
  s.duration_s = r.number("duration_s", 0);
  s.frames = r.integer("frames");
  s.device_time_s = r.number("device_time_s", 0);
  return s;
}

json write_drift(const DriftSection& s) {
  return {{"lag_s", s.lag_s},
          {"correlation", s.correlation},
          {"decorrelation_time_s", s.decorrelation_time_s},
          {"threshold", s.threshold},
          {"recalibrate_after_s", s.recalibrate_after_s},
          {"noise_ceiling", s.noise_ceiling},
          {"interval_s", s.interval_s},
          {"duration_s", s.duration_s},
          {"frames", s.frames},
          {"device_time_s", s.device_time_s}};
}

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

std::string encode_floats(const float* values, std::size_t count) {
  std::vector<std::uint8_t> bytes(count * 4);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &values[i], 4);
    for (int b = 0; b < 4; ++b)
      bytes[4 * i + static_cast<std::size_t>(b)] = (bits >> (8 * b)) & 0xFFU;
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::uint32_t n = (std::uint32_t{bytes[i]} << 16) |
                            (i + 1 < bytes.size() ? std::uint32_t{bytes[i + 1]} << 8 : 0U) |
                            (i + 2 < bytes.size() ? std::uint32_t{bytes[i + 2]} : 0U);
    out += kBase64[(n >> 18) & 63U];
    out += kBase64[(n >> 12) & 63U];
    out += i + 1 < bytes.size() ? kBase64[(n >> 6) & 63U] : '=';
    out += i + 2 < bytes.size() ? kBase64[n & 63U] : '=';
  }
  return out;
}

Result<std::vector<float>> decode_floats(std::string_view text, std::string_view field) {
  auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) {
    return invalid_argument(std::string(field) + ": base64 length " + std::to_string(text.size()) +
                            " is not a multiple of 4");
  }
  std::vector<std::uint8_t> bytes;
  bytes.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    std::uint32_t n = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = text[i + k];
      int v = 0;
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        ++pad;
      } else {
        v = value_of(c);
        if (v < 0 || pad > 0) {
          return invalid_argument(std::string(field) + ": character " + std::to_string(i + k) +
                                  " is not base64");
        }
      }
      n = (n << 6) | static_cast<std::uint32_t>(v);
    }
    bytes.push_back(static_cast<std::uint8_t>(n >> 16));
    if (pad < 2) bytes.push_back(static_cast<std::uint8_t>(n >> 8));
    if (pad < 1) bytes.push_back(static_cast<std::uint8_t>(n));
  }
  if (bytes.size() % 4 != 0) {
    return invalid_argument(std::string(field) + ": " + std::to_string(bytes.size()) +
                            " bytes is not a whole number of float32");
  }
  std::vector<float> values(bytes.size() / 4);
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::uint32_t bits = 0;
    for (int b = 0; b < 4; ++b)
      bits |= std::uint32_t{bytes[4 * i + static_cast<std::size_t>(b)]} << (8 * b);
    std::memcpy(&values[i], &bits, 4);
  }
  return values;
}

Result<CalibrationFile> parse_calibration(std::string_view text, std::string_view source_view) {
  const std::string source(source_view);
  json document;
  try {
    document = json::parse(text);
  } catch (const json::exception& error) {
    // parse_error, and out_of_range for a number beyond a double (1e400).
    return invalid_argument(source + ": not valid JSON (" + error.what() + ")");
  }
  try {
    if (!document.is_object()) {
      throw FieldError{
          invalid_argument(source + ": got " + show(document) + ", want a JSON object")};
    }
    const Reader root(document, "", source);
    const std::string format = root.string("format");
    if (format != kCalibrationFormat) {
      root.fail("format", "\"" + format + "\"", "\"" + std::string(kCalibrationFormat) + "\"");
    }
    const std::int64_t version = root.integer("version", 1);
    if (version > kCalibrationVersion) {
      return failed_precondition(
          source + ": version " + std::to_string(version) + " is newer than this build reads (" +
          std::to_string(kCalibrationVersion) + "); update opu-calibrate or recalibrate");
    }
    CalibrationFile file;
    file.version = static_cast<int>(version);
    if (root.has("device")) file.device = read_device(root.section("device"));
    if (root.has("noise")) file.noise = read_noise(root.section("noise"));
    if (root.has("exposure")) file.exposure = read_exposure(root.section("exposure"));
    if (root.has("tm")) file.tm = read_tm(root.section("tm"));
    if (root.has("verify")) file.verify = read_verify(root.section("verify"));
    if (root.has("drift")) file.drift = read_drift(root.section("drift"));
    return file;
  } catch (const FieldError& error) {
    return error.status;
  } catch (const json::exception& error) {
    return invalid_argument(source + ": " + error.what());
  }
}

Result<CalibrationFile> load_calibration(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("calibration file '" + path + "' cannot be opened");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return data_loss("calibration file '" + path + "': read failed");
  return parse_calibration(text.str(), path);
}

std::string format_calibration(const CalibrationFile& file) {
  json document = {{"format", kCalibrationFormat}, {"version", kCalibrationVersion}};
  if (file.device) document["device"] = write_device(*file.device);
  if (file.noise) document["noise"] = write_noise(*file.noise);
  if (file.exposure) document["exposure"] = write_exposure(*file.exposure);
  if (file.tm) document["tm"] = write_tm(*file.tm);
  if (file.verify) document["verify"] = write_verify(*file.verify);
  if (file.drift) document["drift"] = write_drift(*file.drift);
  return document.dump(2) + "\n";
}

Status save_calibration(const CalibrationFile& file, const std::string& path) {
  const std::string text = format_calibration(file);
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) return unavailable("cannot write '" + temporary + "' (for '" + path + "')");
    out << text;
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      return data_loss("writing '" + temporary + "' failed (disk full?)");
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::remove(temporary.c_str());
    return unavailable("cannot rename '" + temporary + "' to '" + path + "': " + error.message());
  }
  return {};
}

Result<CalibrationFile> load_or_new(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return CalibrationFile{};
  Result<CalibrationFile> file = load_calibration(path);
  if (!file.ok()) {
    return file.status().with_context(
        "refusing to update an unreadable calibration file "
        "(move it away to start a new one)");
  }
  return file;
}

DeviceSettings device_settings(const CalibrationFile& file) {
  DeviceSettings settings;
  if (file.exposure) {
    settings.exposure_us = file.exposure->exposure_us;
    settings.masked_pixels = file.exposure->masked_pixels;
    settings.dark_level_counts = file.exposure->dark_level_counts;
  }
  if (file.noise) {
    settings.gain_e_per_count = file.noise->gain_e_per_count;
    settings.dark_level_counts = file.noise->dark_level_counts;
  }
  if (file.drift) settings.recalibrate_after_s = file.drift->recalibrate_after_s;
  if (file.device) {
    settings.device_max_n_in = file.device->max_n_in;
    settings.device_max_n_out = file.device->max_n_out;
  }
  // Consumers look pixels up by bisection; the file does not promise an order.
  std::sort(settings.masked_pixels.begin(), settings.masked_pixels.end());
  settings.masked_pixels.erase(
      std::unique(settings.masked_pixels.begin(), settings.masked_pixels.end()),
      settings.masked_pixels.end());
  return settings;
}

Result<DeviceSettings> load_device_settings(const std::string& path) {
  Result<CalibrationFile> file = load_calibration(path);
  if (!file.ok()) return file.status();
  if (!file->exposure) {
    return failed_precondition(path +
                               ": exposure: got nothing (missing), want the section that "
                               "'opu-calibrate exposure --out " +
                               path + "' writes (the exposure and the masked pixels)");
  }
  return device_settings(*file);
}

Status check_device_settings(const DeviceSettings& settings, const DeviceLimits& device,
                             std::string_view source_view) {
  const std::string source(source_view);
  const auto shape_differs = [](std::int64_t recorded, std::int64_t actual) {
    return recorded > 0 && recorded != actual;
  };
  if (shape_differs(settings.device_max_n_in, device.max_n_in) ||
      shape_differs(settings.device_max_n_out, device.max_n_out)) {
    return failed_precondition(
        source + ": device: got a device of " + std::to_string(settings.device_max_n_in) +
        " mirrors x " + std::to_string(settings.device_max_n_out) + " pixels, want this one's " +
        std::to_string(device.max_n_in) + " x " + std::to_string(device.max_n_out) +
        " (a calibration of another device; calibrate this one)");
  }
  if (device.max_exposure_us > 0.0 && settings.exposure_us > device.max_exposure_us) {
    return out_of_range(
        source + ": exposure.exposure_us: got " + show_number(settings.exposure_us) +
        ", want at most the device's max_exposure_us " + show_number(device.max_exposure_us));
  }
  if (!settings.masked_pixels.empty() && settings.masked_pixels.back() >= device.max_n_out) {
    return out_of_range(source + ": exposure.masked_pixels: got pixel " +
                        std::to_string(settings.masked_pixels.back()) +
                        ", want pixels below the device's max_n_out " +
                        std::to_string(device.max_n_out));
  }
  return {};
}

}  // namespace opu::calibration
