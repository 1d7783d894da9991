// Fuzz target: opu-serve's --config JSON file (offload/src/serve_config.cpp), and the simulator
// parameters it carries (opu_sim/src/sim_config.cpp).
//
// Input: the content of a config file. It goes through what opu-serve's main() does with one:
// parse_json_params(), apply_serve_params(), SimConfig::from_params() on the simulator's names,
// and, when it names no TLS or token file (whose reading is not the parser), server_options().
// Properties: no crash, leak or undefined behaviour; every accepted setting can be used as
// opu_serve_main.cpp uses it (the shutdown grace in milliseconds, the summary period as a wait on
// the steady clock, the message limit in bytes).
#include <chrono>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "offload/serve_config.h"
#include "opu_sim/sim_device.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  opu::Result<std::map<std::string, std::string>> params =
      opu::offload::parse_json_params(opu::fuzz::as_text(data, size), "fuzz.json");
  if (!params.ok()) return 0;
  opu::offload::ServeConfig config;
  if (!opu::offload::apply_serve_params(*params, config).ok()) return 0;
  // opu_serve_main.cpp: the summary period waits on a condition variable (steady clock, in its
  // own duration), the grace becomes milliseconds.
  const auto period = std::chrono::duration<double>(config.summary_interval_s);
  (void)(std::chrono::steady_clock::now() +
         std::chrono::ceil<std::chrono::steady_clock::duration>(period));
  const auto grace =
      std::chrono::milliseconds(static_cast<std::int64_t>(config.shutdown_grace_s * 1000.0));
  (void)(std::chrono::system_clock::now() + grace);
  OPU_FUZZ_CHECK(config.max_inflight >= 1, "max_inflight " + std::to_string(config.max_inflight));
  opu::Result<opu::sim::SimConfig> sim = opu::sim::SimConfig::from_params(config.sim_params);
  if (sim.ok()) OPU_FUZZ_CHECK(sim->validate().ok(), "accepted, then invalid");
  if (config.tls_cert_file.empty() && config.tls_key_file.empty() && config.token_file.empty()) {
    opu::Result<opu::offload::ServerOptions> options = config.server_options();
    OPU_FUZZ_CHECK(options.ok(), "server options: " + options.status().to_string());
    OPU_FUZZ_CHECK(options->max_message_bytes >= 4096,
                   "max_message_bytes " + std::to_string(options->max_message_bytes) +
                       " is below what Server::start accepts");
  }
  return 0;
}
