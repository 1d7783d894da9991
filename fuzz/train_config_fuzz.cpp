// Fuzz target: opu-train's --config JSON file (trainer/app/config.cpp).
//
// Input: the content of a config file, given to parse_command_line() as `opu-train --config FILE`
// (the file is in memory: fuzz_support.h's MemoryFile), then, as run_training() does, finalize()
// and to_json() (what goes to the metrics file).
// Properties: no crash, leak or undefined behaviour (a JSON number converted to an option's type
// included); finalized options are written as JSON that reads back to the same options.
#include <cstdint>
#include <string>

#include "config.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static opu::fuzz::MemoryFile file("train-config");
  std::string path = file.write(opu::fuzz::as_text(data, size));
  std::string program = "opu-train";
  std::string flag = "--config";
  char* argv[] = {program.data(), flag.data(), path.data(), nullptr};
  int exit_code = -1;
  opu::Result<opu::trainer::app::Options> options =
      opu::trainer::app::parse_command_line(3, argv, exit_code);
  if (!options.ok()) return 0;
  if (!opu::trainer::app::finalize(*options).ok()) return 0;
  const nlohmann::json written = opu::trainer::app::to_json(*options);
  opu::trainer::app::Options again;
  const opu::Status read = opu::trainer::app::apply_json(written, again);
  OPU_FUZZ_CHECK(read.ok(),
                 "to_json, then apply_json: " + read.to_string() + "\n" + written.dump());
  OPU_FUZZ_CHECK(opu::trainer::app::to_json(again) == written,
                 "to_json -> apply_json -> to_json changed the options: " + written.dump());
  return 0;
}
