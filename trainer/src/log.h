// The library's named logger ("trainer"). Executables own sinks and levels; until one registers a
// logger of that name, ours writes through the default logger's sinks.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>

namespace opu::trainer {

inline std::shared_ptr<spdlog::logger> logger() {
  std::shared_ptr<spdlog::logger> log = spdlog::get("trainer");
  if (!log) {
    const std::vector<spdlog::sink_ptr>& sinks = spdlog::default_logger()->sinks();
    log = std::make_shared<spdlog::logger>("trainer", sinks.begin(), sinks.end());
    log->set_level(spdlog::default_logger()->level());
    try {
      spdlog::register_logger(log);
    } catch (const spdlog::spdlog_ex&) {
      log = spdlog::get("trainer");  // registered concurrently
    }
  }
  return log;
}

}  // namespace opu::trainer
