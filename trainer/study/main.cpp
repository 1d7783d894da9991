// opu-study: how much hardware imperfection can DFA absorb? Sweeps device and feedback
// parameters, trains (in-process, opu-train's run_training) several seeds per point, and writes
// runs.jsonl, summary.csv and SVG plots. See docs/noise-study.md.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "opu_sim/cli_validators.h"
#include "spec.h"
#include "study.h"

namespace {

using opu::trainer::study::RunSettings;
using opu::trainer::study::StudySpec;

std::string parameter_list() {
  std::ostringstream text;
  text << "\nSweep parameters (--sweep NAME=V1,V2,... or NAME=LO:HI[:STEP]; one parameter at a "
          "time around the base device and options):\n";
  for (const auto& [name, description] : opu::trainer::study::sweep_parameters()) {
    text << "  " << name << ": " << description << "\n";
  }
  text << "\nExample:\n  opu-study --device 'sim://?n_out=256' --train epochs=3 --seeds 1,2 \\\n"
          "    --sweep adc_bits=2,4,6,8,12 --sweep full_well_e=300,1000,3000,10000 \\\n"
          "    --controls exact,matched --out out/study\n";
  return text.str();
}

opu::Status read_config(const std::string& path, nlohmann::json& train) {
  std::ifstream in(path);
  if (!in) return opu::not_found("--config " + path + ": no such file");
  std::ostringstream text;
  text << in.rdbuf();
  return opu::trainer::study::apply_train_config(text.str(), path, train);
}

opu::Status apply_controls(const std::vector<std::string>& controls, StudySpec& spec) {
  for (const std::string& control : controls) {
    if (control == "exact") {
      spec.exact_control = true;
    } else if (control == "matched") {
      spec.matched_control = true;
    } else {
      return opu::invalid_argument("--controls: '" + control + "', want exact or matched");
    }
  }
  return {};
}

void set_up_logging(const std::string& level) {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  // spdlog::set_level() sets every registered logger: the default first, then ours.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("opu-study", sink));
  spdlog::set_level(spdlog::level::warn);
  auto study = std::make_shared<spdlog::logger>("study", sink);
  study->set_level(spdlog::level::from_str(level));
  spdlog::register_logger(study);
  // The trainer's own logs stay quiet: a sweep runs hundreds of trainings.
  auto trainer = std::make_shared<spdlog::logger>("trainer", sink);
  trainer->set_level(spdlog::level::warn);
  spdlog::register_logger(trainer);
}

}  // namespace

int main(int argc, char** argv) {
  StudySpec spec;
  RunSettings settings;
  std::vector<std::string> devices;
  std::vector<std::string> sweeps;
  std::vector<std::string> train_settings;
  std::vector<std::string> controls;
  std::string config_path;
  std::string log_level = "info";
  CLI::App cli{
      "opu-study: sweep hardware-noise parameters of DFA feedback (device camera, encoding, "
      "digital controls), several seeds per point; resumable, parallel over replicas"};
  cli.footer(parameter_list());
  cli.add_option("--out", settings.out_dir,
                 "output directory (ledger, runs.jsonl, summary.csv, "
                 "plots/); rerun with the same --out to resume")
      ->required();
  cli.add_option("--device", devices,
                 "device URI, repeat for replicas (one worker each): sim://?name=value... "
                 "(default sim://), grpc://host:port; device parameters sweep on sim:// only");
  cli.add_option("--sweep", sweeps, "NAME=V1,V2,... or NAME=LO:HI[:STEP] (repeatable)");
  cli.add_option("--controls", controls,
                 "exact (digital Gaussian B) and/or matched (B + i.i.d. noise at each device "
                 "point's measured SNR)")
      ->delimiter(',')
      ->check(opu::one_of({"exact", "matched"}));
  cli.add_option("--seeds", spec.seeds, "training seeds per point, distinct (default 1,2)")
      ->delimiter(',')
      ->check(opu::in_range<std::uint64_t>(opu::trainer::study::kSeedRange));
  cli.add_option("--config", config_path, "JSON file of opu-train options for every run")
      ->check(CLI::ExistingFile);
  cli.add_option("--train", train_settings,
                 "opu-train option NAME=VALUE for every run (repeatable; overrides --config), "
                 "e.g. --train model=gcn --train epochs=3");
  cli.add_option("--snr-repeats", spec.snr_repeats, "projections per SNR measurement (8)")
      ->check(opu::in_range<int>(opu::trainer::study::kSnrRepeatsRange));
  cli.add_option("--snr-batch", spec.snr_batch, "error-like vectors per SNR measurement (64)")
      ->check(opu::in_range<std::int64_t>(opu::trainer::study::kSnrBatchRange));
  bool no_prediction = false;
  cli.add_flag("--no-prediction", no_prediction,
               "skip the camera-model prediction and the ideal-camera comparison");
  cli.add_option_function<std::int64_t>(
         "--max-runs", [&settings](const std::int64_t& n) { settings.max_runs = n; },
         "stop after this many runs (the rest on the next call; default: all)")
      ->check(opu::in_range<std::int64_t>(opu::trainer::study::kMaxRunsRange));
  cli.add_flag("--retry-failed", settings.retry_failed, "rerun runs the ledger holds as failed");
  cli.add_option("--gnuplot", settings.gnuplot,
                 "gnuplot executable (default gnuplot; empty: write .dat/.gp only)");
  cli.add_option("--log-level", log_level, "trace, debug, info, warn, error, off (info)")
      ->check(opu::one_of({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? 0 : 2;
  }
  set_up_logging(log_level);
  if (!devices.empty()) spec.devices = devices;
  spec.snr_prediction = !no_prediction;
  opu::Status status;
  if (!config_path.empty()) status = read_config(config_path, spec.train);
  for (const std::string& s : train_settings) {
    if (status.ok()) status = opu::trainer::study::apply_train_setting(s, spec.train);
  }
  if (status.ok()) status = apply_controls(controls, spec);
  for (const std::string& text : sweeps) {
    if (!status.ok()) break;
    opu::Result<opu::trainer::study::SweepAxis> axis = opu::trainer::study::parse_sweep(text);
    status = axis.status();
    if (axis.ok()) spec.sweeps.push_back(*axis);
  }
  if (!status.ok()) {
    std::cerr << "opu-study: error: " << status.to_string() << "\n";
    return 2;
  }
  try {
    opu::Result<opu::trainer::study::StudyOutcome> outcome =
        opu::trainer::study::run_study(spec, settings);
    if (!outcome.ok()) {
      std::cerr << "opu-study: error: " << outcome.status().to_string() << "\n";
      return outcome.status().code() == opu::StatusCode::kInvalidArgument ? 2 : 1;
    }
    std::cout << nlohmann::json{{"out", settings.out_dir},   {"runs", outcome->runs},
                                {"reused", outcome->reused}, {"ran", outcome->ran},
                                {"failed", outcome->failed}, {"complete", outcome->complete},
                                {"plots", outcome->plotted}}
                     .dump()
              << std::endl;
    return outcome->complete ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "opu-study: internal error: " << e.what() << "\n";
    return 3;
  }
}
