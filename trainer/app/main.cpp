// opu-train: see docs/trainer.md. Flags, log sinks and the exit code live here; everything else is
// run_training() in app.cpp.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <iostream>

#include "app.h"
#include "config.h"

int main(int argc, char** argv) {
  int exit_code = -1;
  opu::Result<opu::trainer::app::Options> options =
      opu::trainer::app::parse_command_line(argc, argv, exit_code);
  if (exit_code >= 0) return exit_code;
  if (!options.ok()) {
    std::cerr << "opu-train: error: " << options.status().to_string() << "\n";
    return 2;
  }
  // Logs go to stderr: stdout carries the epoch lines and ends with the JSON summary.
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto log = std::make_shared<spdlog::logger>("trainer", sink);
  log->set_level(spdlog::level::from_str(options->log_level));
  spdlog::register_logger(log);
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("opu-train", sink));
  spdlog::set_level(spdlog::level::from_str(options->log_level));
  try {
    opu::Result<nlohmann::json> summary = opu::trainer::app::run_training(
        std::move(*options), std::cout, std::cerr, isatty(STDERR_FILENO) != 0);
    return summary.ok() ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "opu-train: internal error: " << e.what() << "\n";
    return 3;
  }
}
