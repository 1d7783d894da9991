// SimConfig: one table of parameters shared by sim:// URIs, opu-serve flags and config files.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

#include "opu_sim/sim_device.h"

namespace opu::sim {
namespace {

Status bad_value(std::string_view name, std::string_view value, std::string_view want) {
  return invalid_argument("sim parameter '" + std::string(name) + "': value '" +
                          std::string(value) + "' is not " + std::string(want));
}

template <typename Int>
Status parse_int(std::string_view name, std::string_view text, Int& out) {
  Int value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range ||
      (std::is_unsigned_v<Int> && !text.empty() && text.front() == '-')) {
    // A number, but not one the parameter can hold: say which are.
    return bad_value(name, text,
                     "an integer in [" + std::to_string(std::numeric_limits<Int>::min()) + ", " +
                         std::to_string(std::numeric_limits<Int>::max()) + "]");
  }
  if (error != std::errc() || end != text.data() + text.size()) {
    return bad_value(name, text, "an integer");
  }
  out = value;
  return {};
}

Status parse_double(std::string_view name, std::string_view text, double& out) {
  std::string copy(text);
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || !std::isfinite(value)) {
    return bad_value(name, text, "a finite number");
  }
  out = value;
  return {};
}

Status parse_bool(std::string_view name, std::string_view text, bool& out) {
  if (text == "1" || text == "true" || text == "on" || text == "yes") {
    out = true;
  } else if (text == "0" || text == "false" || text == "off" || text == "no") {
    out = false;
  } else {
    return bad_value(name, text, "a boolean (true/false, 1/0, on/off)");
  }
  return {};
}

std::string format_double(double value) {
  std::ostringstream text;
  text << value;
  return text.str();
}

struct Param {
  std::string name;
  std::string description;
  std::function<Status(SimConfig&, std::string_view)> set;
  std::function<std::string(const SimConfig&)> show;
};

#define OPU_INT_PARAM(NAME, FIELD, DESCRIPTION)                                       \
  Param {                                                                             \
    NAME, DESCRIPTION,                                                                \
        [](SimConfig& c, std::string_view v) { return parse_int(NAME, v, c.FIELD); }, \
        [](const SimConfig& c) { return std::to_string(c.FIELD); }                    \
  }
#define OPU_DOUBLE_PARAM(NAME, FIELD, DESCRIPTION)                                       \
  Param {                                                                                \
    NAME, DESCRIPTION,                                                                   \
        [](SimConfig& c, std::string_view v) { return parse_double(NAME, v, c.FIELD); }, \
        [](const SimConfig& c) { return format_double(c.FIELD); }                        \
  }
#define OPU_BOOL_PARAM(NAME, FIELD, DESCRIPTION)                                       \
  Param {                                                                              \
    NAME, DESCRIPTION,                                                                 \
        [](SimConfig& c, std::string_view v) { return parse_bool(NAME, v, c.FIELD); }, \
        [](const SimConfig& c) { return std::string(c.FIELD ? "true" : "false"); }     \
  }

Status set_medium(SimConfig& config, std::string_view value) {
  if (value == "auto") {
    config.medium = MediumKind::kAuto;
  } else if (value == "dense") {
    config.medium = MediumKind::kDense;
  } else if (value == "streamed") {
    config.medium = MediumKind::kStreamed;
  } else if (value == "structured") {
    config.medium = MediumKind::kStructured;
  } else {
    return bad_value("medium", value, "one of auto, dense, streamed, structured");
  }
  return {};
}

// The camera presets. `camera` is applied before every other parameter, so individual settings
// refine a preset whatever their order in the URI or file.
Status set_camera_preset(SimConfig& config, std::string_view value) {
  if (value == "realistic") {
    config.camera = CameraConfig{};
  } else if (value == "ideal") {
    config.camera = CameraConfig{};
    config.camera.ideal = true;
    config.camera.shot_noise = false;
    config.camera.read_noise = false;
    config.camera.dark_offset_counts = 0.0;
  } else {
    return bad_value("camera", value, "one of ideal, realistic");
  }
  return {};
}

const std::vector<Param>& params() {
  static const std::vector<Param> kParams = {
      Param{"camera", "camera preset: realistic (8-bit, shot + read noise) or ideal (no noise)",
            set_camera_preset,
            [](const SimConfig& c) { return std::string(c.camera.ideal ? "ideal" : "realistic"); }},
      OPU_INT_PARAM("seed", seed, "the medium: replicas with the same seed are the same device"),
      OPU_INT_PARAM("noise_seed", noise_seed, "camera noise stream (0 = derived from seed)"),
      OPU_INT_PARAM("n_in", n_in, "input mirrors"),
      OPU_INT_PARAM("n_out", n_out, "camera pixels"),
      Param{"medium",
            "backend: auto (dense up to 2 GiB, else structured), dense, streamed, structured",
            set_medium, [](const SimConfig& c) { return std::string(medium_kind_name(c.medium)); }},
      OPU_INT_PARAM("adc_bits", camera.adc_bits, "ADC bits per count, 1..16"),
      OPU_DOUBLE_PARAM("exposure_us", camera.exposure_us, "default exposure, microseconds"),
      OPU_DOUBLE_PARAM("max_exposure_us", camera.max_exposure_us, "longest exposure accepted"),
      OPU_DOUBLE_PARAM("photons_per_us", camera.photons_per_us,
                       "photo-electrons per microsecond per unit |E|^2"),
      OPU_DOUBLE_PARAM("gain_e_per_count", camera.gain_e_per_count, "ADC gain, electrons/count"),
      OPU_DOUBLE_PARAM("read_noise_e", camera.read_noise_e, "read noise std, electrons"),
      OPU_DOUBLE_PARAM("dark_offset_counts", camera.dark_offset_counts, "dark level, counts"),
      OPU_BOOL_PARAM("shot_noise", camera.shot_noise, "Poisson shot noise on/off"),
      OPU_BOOL_PARAM("read_noise", camera.read_noise, "Gaussian read noise on/off"),
      OPU_BOOL_PARAM("exact_shot_noise", camera.exact_shot_noise,
                     "Poisson draws everywhere (off: one Gaussian where shot+read skew < 0.05)"),
      OPU_DOUBLE_PARAM("readout_us", camera.readout_us, "sensor readout time, microseconds"),
      OPU_DOUBLE_PARAM("overhead_us", camera.overhead_us, "per-frame overhead, microseconds"),
      OPU_DOUBLE_PARAM("drift_tau_s", drift_tau_s,
                       "medium decorrelation period T in device seconds (0 = no drift)"),
      OPU_BOOL_PARAM("realtime", realtime, "pace calls to the device clock"),
      OPU_INT_PARAM("threads", threads, "compute threads per request"),
      OPU_INT_PARAM("max_batch", max_batch, "largest batch per call"),
      OPU_INT_PARAM("reference_blocks", holography.reference_blocks,
                    "linear mode: reference size in feature blocks"),
      OPU_DOUBLE_PARAM("dark_pixel_fraction", holography.dark_pixel_fraction,
                       "linear mode: mask pixels whose I(r) is below this fraction of the mean"),
      OPU_DOUBLE_PARAM("target_fill", holography.target_fill,
                       "linear mode: auto exposure target, fraction of full scale (0 = off)"),
      OPU_INT_PARAM("reference_repeats", holography.reference_repeats,
                    "linear mode: reference frames averaged per call"),
      Param{"fft_planning",
            "structured medium: estimate (reproducible bits) or measure (faster; reproducible "
            "with the same fft_wisdom file)",
            [](SimConfig& c, std::string_view v) -> Status {
              if (v != "estimate" && v != "measure") {
                return bad_value("fft_planning", v, "one of estimate, measure");
              }
              c.fft.measure = v == "measure";
              return {};
            },
            [](const SimConfig& c) { return std::string(c.fft.measure ? "measure" : "estimate"); }},
      Param{"fft_wisdom", "structured medium: FFTW wisdom file, loaded and saved",
            [](SimConfig& c, std::string_view v) -> Status {
              c.fft.wisdom_path = std::string(v);
              return {};
            },
            [](const SimConfig& c) { return c.fft.wisdom_path; }},
  };
  return kParams;
}

#undef OPU_INT_PARAM
#undef OPU_DOUBLE_PARAM
#undef OPU_BOOL_PARAM

}  // namespace

std::string_view medium_kind_name(MediumKind kind) {
  switch (kind) {
    case MediumKind::kAuto:
      return "auto";
    case MediumKind::kDense:
      return "dense";
    case MediumKind::kStreamed:
      return "streamed";
    case MediumKind::kStructured:
      return "structured";
  }
  return "unknown";
}

double CameraConfig::frametime_us(double exposure) const {
  return std::max(exposure, readout_us) + overhead_us;
}

Result<SimConfig> SimConfig::from_params(const std::map<std::string, std::string>& values) {
  SimConfig config;
  if (auto preset = values.find("camera"); preset != values.end()) {
    OPU_RETURN_IF_ERROR(set_camera_preset(config, preset->second));
  }
  for (const auto& [name, value] : values) {
    if (name == "camera") continue;
    const auto& table = params();
    // An init-capture: clang before 16 cannot capture a structured binding.
    const auto param = std::find_if(table.begin(), table.end(),
                                    [&key = name](const Param& p) { return p.name == key; });
    if (param == table.end()) {
      std::string known;
      for (const Param& p : table) known += (known.empty() ? "" : ", ") + p.name;
      return invalid_argument("unknown sim parameter '" + name + "', want one of: " + known);
    }
    OPU_RETURN_IF_ERROR(param->set(config, value));
  }
  OPU_RETURN_IF_ERROR(config.validate());
  return config;
}

std::vector<std::pair<std::string, std::string>> SimConfig::describe_params() {
  const SimConfig defaults;
  std::vector<std::pair<std::string, std::string>> described;
  for (const Param& p : params()) {
    described.emplace_back(p.name, p.description + " [" + p.show(defaults) + "]");
  }
  return described;
}

Status SimConfig::validate() const {
  // Bounds and values as written: integers in full (n_in's 2147483648, not 2.14748e+09).
  const auto show = [](double value) {
    if (value == std::floor(value) && std::fabs(value) < 1e15) {
      return std::to_string(static_cast<long long>(value));
    }
    return format_double(value);
  };
  auto range = [&](std::string_view name, double value, double low, double high) -> Status {
    if (!(value >= low && value <= high)) {
      return invalid_argument("sim parameter '" + std::string(name) + "' is " + show(value) +
                              ", want a value in [" + show(low) + ", " + show(high) + "]");
    }
    return {};
  };
  OPU_RETURN_IF_ERROR(range("n_in", static_cast<double>(n_in), 1, 1LL << 31));
  OPU_RETURN_IF_ERROR(range("n_out", static_cast<double>(n_out), 1, 1LL << 31));
  OPU_RETURN_IF_ERROR(range("adc_bits", camera.adc_bits, 1, 16));
  OPU_RETURN_IF_ERROR(range("max_exposure_us", camera.max_exposure_us, 1, 1e9));
  OPU_RETURN_IF_ERROR(range("exposure_us", camera.exposure_us, 1, camera.max_exposure_us));
  OPU_RETURN_IF_ERROR(range("photons_per_us", camera.photons_per_us, 1e-9, 1e12));
  OPU_RETURN_IF_ERROR(range("gain_e_per_count", camera.gain_e_per_count, 1e-6, 1e9));
  OPU_RETURN_IF_ERROR(range("read_noise_e", camera.read_noise_e, 0, 1e9));
  OPU_RETURN_IF_ERROR(range("dark_offset_counts", camera.dark_offset_counts, 0, 65535));
  OPU_RETURN_IF_ERROR(range("readout_us", camera.readout_us, 0, 1e9));
  OPU_RETURN_IF_ERROR(range("overhead_us", camera.overhead_us, 0, 1e9));
  OPU_RETURN_IF_ERROR(range("drift_tau_s", drift_tau_s, 0, 1e12));
  OPU_RETURN_IF_ERROR(range("threads", threads, 1, 1024));
  OPU_RETURN_IF_ERROR(range("max_batch", static_cast<double>(max_batch), 1, 1LL << 30));
  OPU_RETURN_IF_ERROR(range("reference_blocks", holography.reference_blocks, 1, 1e6));
  OPU_RETURN_IF_ERROR(range("dark_pixel_fraction", holography.dark_pixel_fraction, 0, 1));
  OPU_RETURN_IF_ERROR(range("target_fill", holography.target_fill, 0, 1));
  OPU_RETURN_IF_ERROR(range("reference_repeats", holography.reference_repeats, 1, 1024));
  // The holographic path stops at the first masked pixel beyond a call's n_out: sorted, unique.
  const std::vector<std::int64_t>& masked = holography.masked_pixels;
  for (std::size_t i = 0; i < masked.size(); ++i) {
    if (masked[i] < 0 || masked[i] >= n_out || (i > 0 && masked[i] <= masked[i - 1])) {
      return invalid_argument(
          "holography.masked_pixels[" + std::to_string(i) + "] is " + std::to_string(masked[i]) +
          ", want strictly increasing pixel indices in [0, n_out = " + std::to_string(n_out) + ")");
    }
  }
  return {};
}

Result<std::map<std::string, std::string>> parse_query(std::string_view query) {
  std::map<std::string, std::string> values;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return invalid_argument("query: '" + std::string(pair) + "' is not name=value");
    }
    const std::string name(pair.substr(0, eq));
    const std::string value(pair.substr(eq + 1));
    // A second value would silently replace the first.
    if (const auto [it, added] = values.emplace(name, value); !added) {
      return invalid_argument("query: '" + name + "' is given twice ('" + it->second + "' and '" +
                              value + "'), want each parameter once");
    }
  }
  return values;
}

}  // namespace opu::sim
