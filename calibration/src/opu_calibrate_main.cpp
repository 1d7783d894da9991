// opu-calibrate: characterise any OPU through the Device interface (docs/design.md §5).
//
//   opu-calibrate noise    --device URI [--out FILE]   photon-transfer curve
//   opu-calibrate exposure --device URI [--out FILE]   automatic exposure
//   opu-calibrate tm       --device URI --n-in N --n-out M --out FILE
//   opu-calibrate verify   --device URI --calibration FILE
//   opu-calibrate drift    --device URI [--out FILE]
//
// Each subcommand rewrites its section of one calibration file (atomically), shows progress on
// stderr, and prints as its last stdout line one JSON object with its figures (or with "error").
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "calibration/calibration_file.h"
#include "calibration/procedures.h"
#include "offload/open_device.h"
#include "opu_sim/cli_validators.h"
#include "opu_sim/value_range.h"

namespace {

using nlohmann::json;
using opu::in_range;
using opu::ValueRange;
namespace cal = opu::calibration;

// The accepted range of every flag, in one place (the procedures check the same bounds on their
// options, and those that depend on the device). 0 means "the device's / automatic" only where
// the flag says so; nothing negative is taken for a default.
const ValueRange kFraction = ValueRange::open_closed(0, 1);  // density: (0, 1]
const ValueRange kOpenFraction = ValueRange::open(0, 1);     // target, fill, threshold
const ValueRange kSeed = ValueRange::at_least(0);
const ValueRange kCount = ValueRange::at_least(1);
const ValueRange kPositive = ValueRange::positive();
const ValueRange kNoiseRepeats = ValueRange::at_least(4, "a variance needs several frames");
const ValueRange kNoiseDarkFrames = ValueRange::at_least(8);
const ValueRange kPixels4096 = ValueRange::at_least(0, "0 = up to 4096");
const ValueRange kPixels1024 = ValueRange::at_least(0, "0 = up to 1024");
const ValueRange kMirrorsAll = ValueRange::at_least(0, "0 = all");
const ValueRange kPercentile = ValueRange::open(0, 100);
const ValueRange kTmMirrors = ValueRange::at_least(2);
const ValueRange kOffset = ValueRange::at_least(0);
const ValueRange kAnchors = ValueRange::at_least(2, "at most --n-in");
const ValueRange kSignals = ValueRange::at_least(0, "0 = 2 x shell size + 10");
const ValueRange kRandomFrames = ValueRange::at_least(0, "default: --n-in");
const ValueRange kAutoExposure = ValueRange::non_negative("us; 0 = automatic");
const ValueRange kDefaultExposure = ValueRange::non_negative("us; 0 = the device's default");
const ValueRange kIterations = ValueRange::at_least(0, "0 = none");
const ValueRange kHeldOut = ValueRange::at_least(2);
const std::vector<std::string> kLogLevels = {"trace", "debug",    "info", "warn",
                                             "error", "critical", "off"};

// tm --held-out: 0 (no check) or a verify-sized count (>= 2).
CLI::Validator held_out_or_none() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text == "0") return {};
        const opu::Result<std::int64_t> n = opu::parse_in_range<std::int64_t>(text, kHeldOut);
        if (n.ok()) return {};
        return text + " is out of range; expected 0 (no check) or " + kHeldOut.expected();
      },
      "0 (no check) or " + kHeldOut.expected());
}

struct Common {
  std::string device_uri;
  std::string file = "opu-calibration.json";
  std::string log_level = "warn";
  bool quiet = false;
};

void add_common(CLI::App& command, Common& common, bool file_required = false) {
  command
      .add_option("--device", common.device_uri,
                  "device URI: sim://?seed=7&n_in=100&..., grpc://host:port, grpcs://...")
      ->required();
  CLI::Option* out = command.add_option("--out,--calibration", common.file,
                                        "calibration file to update (its other sections are kept)");
  if (file_required) out->required();
  command.add_option("--log-level", common.log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str()
      ->check(opu::one_of(kLogLevels));
  command.add_flag("--quiet", common.quiet, "no progress on stderr");
}

// Progress on stderr: a line per tenth of each stage (a terminal gets one updating line).
cal::Progress make_progress(bool quiet) {
  if (quiet) return {};
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  return [terminal, last_stage = std::string(), last_tenth = -1](
             std::string_view stage, std::int64_t done, std::int64_t total) mutable {
    const int tenth = total > 0 ? static_cast<int>(10 * done / total) : 10;
    if (stage == last_stage && tenth == last_tenth && done != total) return;
    if (terminal) {
      std::fprintf(stderr, "\r%-40.*s %3d%% (%lld/%lld)%s", static_cast<int>(stage.size()),
                   stage.data(), static_cast<int>(100 * done / std::max<std::int64_t>(total, 1)),
                   static_cast<long long>(done), static_cast<long long>(total),
                   done == total ? "\n" : "");
    } else if (stage != last_stage || tenth != last_tenth) {
      std::fprintf(stderr, "%.*s: %lld/%lld\n", static_cast<int>(stage.size()), stage.data(),
                   static_cast<long long>(done), static_cast<long long>(total));
    }
    std::fflush(stderr);
    last_stage = std::string(stage);
    last_tenth = tenth;
  };
}

// The result line: the last thing on stdout, whatever happened.
int finish(const std::string& command, const opu::Status& status, json figures = json::object()) {
  json line = {{"command", command}};
  if (!status.ok()) {
    std::cerr << "opu-calibrate " << command << ": " << status.to_string() << "\n";
    line["error"] = status.message();
    line["code"] = std::string(opu::status_code_name(status.code()));
    std::cout << line.dump() << std::endl;
    return 1;
  }
  line.update(figures);
  std::cout << line.dump() << std::endl;
  return 0;
}

cal::DeviceRecord record_of(const std::string& uri, const opu::sim::DeviceInfo& info) {
  cal::DeviceRecord record;
  record.uri = uri;
  record.model = info.model;
  record.simulated = info.simulated;
  record.max_n_in = info.max_n_in;
  record.max_n_out = info.max_n_out;
  record.adc_bits = info.adc_bits;
  return record;
}

// Opens the file to update (refusing a corrupt one) and the device, in that order, so a bad file
// fails before any frame is taken.
struct Session {
  cal::CalibrationFile file;
  std::unique_ptr<opu::sim::Device> device;
};

opu::Result<Session> open_session(const Common& common) {
  Session session;
  opu::Result<cal::CalibrationFile> file = cal::load_or_new(common.file);
  if (!file.ok()) return file.status();
  session.file = std::move(*file);
  opu::Result<std::unique_ptr<opu::sim::Device>> device =
      opu::offload::open_device(common.device_uri);
  if (!device.ok())
    return device.status().with_context("opening device '" + common.device_uri + "'");
  session.device = std::move(*device);
  const opu::sim::DeviceInfo info = session.device->info();
  if (session.file.device && session.file.device->model != info.model) {
    spdlog::warn("{} was calibrated on '{}', this device is '{}'", common.file,
                 session.file.device->model, info.model);
  }
  session.file.device = record_of(common.device_uri, info);
  return session;
}

json verify_figures(const cal::VerifySection& v) {
  json j = {{"correlation", v.correlation}, {"held_out", v.held_out}, {"verify_frames", v.frames}};
  if (v.correlation_ceiling) j["correlation_ceiling"] = *v.correlation_ceiling;
  if (v.relative_error) j["relative_error"] = *v.relative_error;
  if (v.conjugated_rows) j["conjugated_rows"] = *v.conjugated_rows;
  if (v.truth_scale) j["truth_scale"] = *v.truth_scale;
  if (v.relative_error_rescaled) j["relative_error_rescaled"] = *v.relative_error_rescaled;
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "opu-calibrate: characterise an OPU (noise, exposure, transmission matrix, drift) "
      "through any device URI; results go to one versioned JSON calibration file"};
  app.require_subcommand(1);

  Common common;
  cal::NoiseOptions noise;
  CLI::App* noise_cmd = app.add_subcommand(
      "noise", "photon-transfer curve: gain (e-/count), read noise, dark level, saturation");
  add_common(*noise_cmd, common);
  noise_cmd
      ->add_option("--exposures-us", noise.exposures_us,
                   "exposures of the curve, us (default: device default x 1/4..8)")
      ->check(in_range<double>(kPositive));
  noise_cmd->add_option("--repeats", noise.repeats, "frames per pattern and exposure")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kNoiseRepeats));
  noise_cmd->add_option("--dark-frames", noise.dark_frames, "all-off frames")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kNoiseDarkFrames));
  noise_cmd->add_option("--n-out", noise.n_out, "pixels (0 = up to 4096)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kPixels4096));
  noise_cmd->add_option("--density", noise.density, "fraction of mirrors on")
      ->capture_default_str()
      ->check(in_range<double>(kFraction));
  noise_cmd->add_option("--seed", noise.seed, "pattern seed")
      ->capture_default_str()
      ->check(in_range<std::uint64_t>(kSeed));

  cal::ExposureOptions exposure;
  CLI::App* exposure_cmd = app.add_subcommand(
      "exposure", "exposure putting a percentile of counts at a fraction of full scale");
  add_common(*exposure_cmd, common);
  exposure_cmd->add_option("--percentile", exposure.percentile, "percentile of signal counts")
      ->capture_default_str()
      ->check(in_range<double>(kPercentile));
  exposure_cmd
      ->add_option("--target", exposure.target_fraction,
                   "wanted value of that percentile, fraction of full scale")
      ->capture_default_str()
      ->check(in_range<double>(kOpenFraction));
  exposure_cmd->add_option("--density", exposure.density, "fraction of mirrors on")
      ->capture_default_str()
      ->check(in_range<double>(kFraction));
  exposure_cmd->add_option("--n-in", exposure.n_in, "mirrors used (0 = all)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kMirrorsAll));
  exposure_cmd->add_option("--n-out", exposure.n_out, "pixels (0 = up to 4096)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kPixels4096));
  exposure_cmd->add_option("--probe-frames", exposure.probe_frames, "frames per probe")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kCount));
  exposure_cmd->add_option("--seed", exposure.seed, "pattern seed")
      ->capture_default_str()
      ->check(in_range<std::uint64_t>(kSeed));

  cal::TmOptions tm;
  std::int64_t tm_held_out = 200;
  bool tm_ignore_noise = false;
  CLI::App* tm_cmd = app.add_subcommand(
      "tm",
      "recover the transmission matrix of a block from intensities (numerical "
      "interferometry + weighted Gauss-Newton), then check it on held-out inputs");
  add_common(*tm_cmd, common);
  tm_cmd->add_option("--n-in", tm.n_in, "columns (mirrors) of the block")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kTmMirrors));
  tm_cmd->add_option("--n-out", tm.n_out, "rows (first pixels)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kCount));
  tm_cmd->add_option("--column-offset", tm.column_offset, "first mirror of the block")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kOffset));
  tm_cmd->add_option("--anchors", tm.anchors, "nested anchors (= shells of the block)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kAnchors));
  tm_cmd
      ->add_option("--signals-per-shell", tm.signals_per_shell,
                   "random signals per shell (0 = 2 x shell size + 10)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kSignals));
  tm_cmd->add_option("--anchor-repeats", tm.anchor_repeats, "repeats of each anchor-pair frame")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kCount));
  // Not given: as many as --n-in (TmOptions' -1, which the flag itself never accepts).
  tm_cmd
      ->add_option_function<std::int64_t>(
          "--random-frames", [&tm](const std::int64_t& n) { tm.random_frames = n; },
          "random full-block frames for the refinement (default: --n-in)")
      ->check(in_range<std::int64_t>(kRandomFrames));
  tm_cmd
      ->add_option("--exposure-us", tm.exposure_us,
                   "exposure (0 = auto: full-block frames at --fill of full scale)")
      ->capture_default_str()
      ->check(in_range<double>(kAutoExposure));
  tm_cmd
      ->add_option("--fill", tm.fill,
                   "auto exposure: mean of a full-block frame, fraction of "
                   "full scale")
      ->capture_default_str()
      ->check(in_range<double>(kOpenFraction));
  tm_cmd->add_option("--gn-iterations", tm.gn_iterations, "Gauss-Newton passes (0 = none)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kIterations));
  tm_cmd->add_option("--cg-iterations", tm.cg_iterations, "CG steps per pass")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kCount));
  tm_cmd->add_option("--seed", tm.seed, "design seed")
      ->capture_default_str()
      ->check(in_range<std::uint64_t>(kSeed));
  tm_cmd->add_option("--held-out", tm_held_out, "held-out inputs checked after (0 = no check)")
      ->capture_default_str()
      ->check(held_out_or_none());
  tm_cmd->add_flag("--ignore-noise-section", tm_ignore_noise,
                   "estimate the variance model from the frames even if the file has a noise "
                   "section");

  cal::VerifyOptions verify;
  CLI::App* verify_cmd = app.add_subcommand(
      "verify",
      "predict held-out intensities from the recovered matrix and correlate them with "
      "measured frames (and, on sim://, compare with the true matrix)");
  add_common(*verify_cmd, common, /*file_required=*/true);
  verify_cmd->add_option("--held-out", verify.held_out, "held-out random inputs")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kHeldOut));
  verify_cmd->add_option("--density", verify.density, "fraction of the block's mirrors on")
      ->capture_default_str()
      ->check(in_range<double>(kFraction));
  verify_cmd->add_option("--seed", verify.seed, "held-out seed")
      ->capture_default_str()
      ->check(in_range<std::uint64_t>(kSeed));

  cal::DriftOptions drift;
  CLI::App* drift_cmd = app.add_subcommand(
      "drift",
      "reference frames over device time: correlation curve, decorrelation time, when "
      "to recalibrate");
  add_common(*drift_cmd, common);
  drift_cmd->add_option("--interval-s", drift.interval_s, "device time between samples")
      ->capture_default_str()
      ->check(in_range<double>(kPositive));
  drift_cmd
      ->add_option("--duration-s", drift.duration_s,
                   "device time spanned (at least 4 x --interval-s)")
      ->capture_default_str()
      ->check(in_range<double>(kPositive));
  drift_cmd
      ->add_option("--threshold", drift.threshold,
                   "recommend recalibration before the correlation falls below this")
      ->capture_default_str()
      ->check(in_range<double>(kOpenFraction));
  drift_cmd->add_option("--n-out", drift.n_out, "pixels (0 = up to 1024)")
      ->capture_default_str()
      ->check(in_range<std::int64_t>(kPixels1024));
  drift_cmd->add_option("--exposure-us", drift.exposure_us, "exposure (0 = device default)")
      ->capture_default_str()
      ->check(in_range<double>(kDefaultExposure));
  drift_cmd->add_option("--seed", drift.seed, "reference seed")
      ->capture_default_str()
      ->check(in_range<std::uint64_t>(kSeed));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // --help: 0; otherwise CLI11 has printed why on stderr
    if (code == 0) return 0;
    // The result line, as for every other error: the last thing on stdout.
    const std::string command =
        app.get_subcommands().empty() ? std::string() : app.get_subcommands().front()->get_name();
    std::cout << json{{"command", command},
                      {"error", e.what()},
                      {"code",
                       std::string(opu::status_code_name(opu::StatusCode::kInvalidArgument))}}
                     .dump()
              << std::endl;
    return 2;
  }

  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("opu-calibrate", sink));
  spdlog::set_level(spdlog::level::from_str(common.log_level));
  auto calibration_logger = std::make_shared<spdlog::logger>("calibration", sink);
  calibration_logger->set_level(spdlog::level::from_str(common.log_level));
  spdlog::register_logger(calibration_logger);

  const cal::Progress progress = make_progress(common.quiet);
  CLI::App* chosen = app.get_subcommands().front();
  const std::string command = chosen->get_name();

  opu::Result<Session> session = open_session(common);
  if (!session.ok()) return finish(command, session.status());
  cal::CalibrationFile& file = session->file;
  opu::sim::Device& device = *session->device;
  json figures;

  if (command == "noise") {
    opu::Result<cal::NoiseSection> result = cal::measure_noise(device, noise, progress);
    if (!result.ok()) return finish(command, result.status());
    file.noise = *result;
    figures = {{"gain_e_per_count", result->gain_e_per_count},
               {"gain_stderr", result->gain_stderr},
               {"read_noise_e", result->read_noise_e},
               {"read_noise_stderr", result->read_noise_stderr},
               {"read_noise_ptc_e", result->read_noise_ptc_e},
               {"dark_level_counts", result->dark_level_counts},
               {"saturation_counts", result->saturation_counts},
               {"points_used", result->points_used},
               {"frames", result->frames},
               {"device_time_s", result->device_time_s}};
  } else if (command == "exposure") {
    opu::Result<cal::ExposureSection> result = cal::find_exposure(device, exposure, progress);
    if (!result.ok()) return finish(command, result.status());
    file.exposure = *result;
    figures = {{"exposure_us", result->exposure_us},
               {"percentile", result->percentile},
               {"achieved_fraction", result->achieved_fraction},
               {"saturated_fraction", result->saturated_fraction},
               {"masked_pixels", result->masked_pixels.size()},
               {"frames", result->frames},
               {"device_time_s", result->device_time_s}};
  } else if (command == "tm") {
    if (file.noise && !tm_ignore_noise) {
      tm.gain_e_per_count = file.noise->gain_e_per_count;
      tm.read_noise_counts = file.noise->read_noise_counts;
    }
    opu::Result<cal::TmSection> result = cal::recover_tm(device, tm, progress);
    if (!result.ok()) return finish(command, result.status());
    file.tm = *result;
    file.verify.reset();  // a verify section describes the previous matrix
    figures = {{"n_in", result->n_in},
               {"n_out", result->n_out},
               {"frames", result->frames},
               {"frames_per_entry", static_cast<double>(result->frames) /
                                        static_cast<double>(result->n_in * result->n_out)},
               {"device_time_s", result->device_time_s},
               {"wall_time_s", result->wall_time_s},
               {"exposure_us", result->exposure_us},
               {"init_correlation", result->init_correlation},
               {"fit_correlation", result->fit_correlation}};
    if (tm_held_out > 0) {
      verify.held_out = tm_held_out;
      opu::Result<cal::VerifySection> checked = cal::verify_tm(device, *result, verify, progress);
      if (!checked.ok()) return finish(command, checked.status().with_context("held-out check"));
      file.verify = *checked;
      figures.update(verify_figures(*checked));
    }
  } else if (command == "verify") {
    if (!file.tm) {
      return finish(command, opu::failed_precondition(
                                 common.file + " has no tm section: run opu-calibrate tm first"));
    }
    opu::Result<cal::VerifySection> result = cal::verify_tm(device, *file.tm, verify, progress);
    if (!result.ok()) return finish(command, result.status());
    file.verify = *result;
    figures = verify_figures(*result);
    figures["frames"] = result->frames;
    figures["device_time_s"] = result->device_time_s;
    figures["tm_frames"] = file.tm->frames;
  } else if (command == "drift") {
    opu::Result<cal::DriftSection> result = cal::measure_drift(device, drift, progress);
    if (!result.ok()) return finish(command, result.status());
    file.drift = *result;
    figures = {{"decorrelation_time_s", result->decorrelation_time_s},
               {"threshold", result->threshold},
               {"recalibrate_after_s", result->recalibrate_after_s},
               {"noise_ceiling", result->noise_ceiling},
               {"samples", result->lag_s.size()},
               {"frames", result->frames},
               {"device_time_s", result->device_time_s}};
  }
  const opu::Status saved = cal::save_calibration(file, common.file);
  if (!saved.ok()) return finish(command, saved);
  figures["file"] = common.file;
  return finish(command, {}, figures);
}
