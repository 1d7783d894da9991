// opu-study's named logger ("study"): progress lines of a sweep. The executable registers it with
// its sinks and level; without it (tests), the default logger is used.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>

namespace opu::trainer::study {

inline std::shared_ptr<spdlog::logger> study_logger() {
  std::shared_ptr<spdlog::logger> log = spdlog::get("study");
  return log ? log : spdlog::default_logger();
}

}  // namespace opu::trainer::study
