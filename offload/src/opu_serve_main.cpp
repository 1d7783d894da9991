// opu-serve: serves a simulated OPU as the gRPC service opu.v1.OpuDevice.
//
//   opu-serve --listen 127.0.0.1:0 --seed 7 --n-in 1024 --n-out 1024 --camera realistic
//   opu-serve --seed 7 --camera realistic --calibration cal.json   # from opu-calibrate --out
//
// The first line on stdout is the bound address (HOST:PORT), flushed, so that scripts and tests
// can start it on port 0 and read where it listens. Logs go to stderr. SIGINT/SIGTERM: stop
// accepting, let in-flight calls finish (up to --shutdown-grace-s), exit 0.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>

#include "offload/serve_calibration.h"
#include "offload/serve_config.h"
#include "offload/server.h"
#include "opu_sim/sim_device.h"
#include "opu_sim/threading.h"

namespace {

// Self-pipe: the handler only writes the signal number (async-signal-safe); a thread reads it and
// runs the shutdown as ordinary code. Blocking the signals instead would not do: libraries start
// threads before main (OpenBLAS's pool) that would still take them and die.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int signal) {
  const auto byte = static_cast<unsigned char>(signal);
  [[maybe_unused]] const ssize_t written = write(g_signal_pipe[1], &byte, 1);
}

std::string dashes(std::string name) {
  std::replace(name.begin(), name.end(), '_', '-');
  return name;
}

bool parse_level(const std::string& name, spdlog::level::level_enum& level) {
  static const std::map<std::string, spdlog::level::level_enum> kLevels = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"error", spdlog::level::err},   {"off", spdlog::level::off}};
  const auto found = kLevels.find(name);
  if (found == kLevels.end()) return false;
  level = found->second;
  return true;
}

int fail(int code, const std::string& message) {
  std::cerr << "opu-serve: " << message << "\n";
  return code;
}

}  // namespace

static int run(int argc, char** argv) {
  if (pipe(g_signal_pipe) != 0) return fail(1, "cannot create the signal pipe");
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  CLI::App app{
      "opu-serve: serves a simulated OPU as the gRPC service opu.v1.OpuDevice.\n"
      "Prints the bound HOST:PORT as the first line of stdout. Every setting can also come from\n"
      "--config FILE (a JSON object of the same names with underscores); flags win over it."};
  app.set_help_flag("-h,--help", "Print this help and exit");

  std::string config_file;
  std::vector<std::string> generic_params;
  app.add_option("--config", config_file, "JSON config file (flat object of the names below)");
  app.add_option("--param", generic_params,
                 "NAME=VALUE for any simulator parameter (repeatable), as in sim:// URIs");

  // One option per name, all stored as text and parsed by the owners of the names: the server's
  // settings by apply_serve_params(), the simulator's by SimConfig::from_params().
  std::map<std::string, std::string> values;
  std::vector<std::pair<std::string, CLI::Option*>> options;
  std::set<std::string> taken;
  auto add = [&](const std::string& name, const std::string& description, const char* group) {
    if (!taken.insert(name).second) return;
    options.emplace_back(
        name, app.add_option("--" + dashes(name), values[name], description)->group(group));
  };
  for (const auto& [name, description] : opu::offload::describe_serve_params()) {
    add(name, description, "Server");
  }
  for (const auto& [name, description] : opu::sim::SimConfig::describe_params()) {
    add(name, description, "Simulated device");
  }
  // The flags the issue names, in case the simulator's list lacks one (then from_params reports
  // the name as unknown, which is the truth).
  for (const char* name : {"seed", "n_in", "n_out", "camera", "threads", "drift_tau_s"}) {
    add(name, "simulator parameter (see SimConfig)", "Simulated device");
  }
  CLI11_PARSE(app, argc, argv);

  opu::offload::ServeConfig config;
  if (!config_file.empty()) {
    auto params = opu::offload::read_json_params(config_file);
    if (!params.ok()) return fail(2, params.status().to_string());
    if (auto status = opu::offload::apply_serve_params(*params, config); !status.ok()) {
      return fail(2, status.to_string());
    }
  }
  std::map<std::string, std::string> flags;
  for (const auto& [name, option] : options) {
    if (option->count() > 0) flags[name] = values[name];
  }
  for (const std::string& pair : generic_params) {
    const std::size_t equals = pair.find('=');
    if (equals == std::string::npos || equals == 0) {
      return fail(2, "--param '" + pair + "' is not NAME=VALUE");
    }
    const std::string name = opu::offload::normalize_param_name(pair.substr(0, equals));
    // One value per name: a second one would silently replace the first.
    if (!flags.emplace(name, pair.substr(equals + 1)).second) {
      return fail(2, "--param " + pair + ": " + name + " is already given ('" + flags[name] +
                         "'); give each parameter once");
    }
  }
  if (auto status = opu::offload::apply_serve_params(flags, config); !status.ok()) {
    return fail(2, status.to_string());
  }

  // The executable owns the sinks: one stderr sink for its own logger and the library's.
  spdlog::level::level_enum level = spdlog::level::info;
  if (!parse_level(config.log_level, level)) {  // apply_serve_params() accepted only these
    return fail(2, "--log-level '" + config.log_level +
                       "' unknown, want trace, debug, info, warn, error or off");
  }
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto log = std::make_shared<spdlog::logger>("opu-serve", sink);
  auto offload_log = std::make_shared<spdlog::logger>("offload", sink);
  for (const auto& logger : {log, offload_log}) {
    logger->set_level(level);
    spdlog::register_logger(logger);
  }
  spdlog::set_default_logger(log);
  spdlog::set_level(level);

  auto sim_config = opu::sim::SimConfig::from_params(config.sim_params);
  if (!sim_config.ok()) return fail(2, sim_config.status().to_string());
  // Before serving: a device that cannot be used as calibrated is not served at all.
  std::string calibration_applied;
  if (!config.calibration_file.empty()) {
    auto applied = opu::offload::apply_calibration(config.calibration_file, *sim_config);
    if (!applied.ok()) return fail(2, "--calibration: " + applied.status().to_string());
    calibration_applied = *applied;
  }
  opu::set_compute_threads(sim_config->threads);
  auto device = opu::sim::SimDevice::create(*sim_config);
  if (!device.ok()) return fail(2, device.status().to_string());
  auto server_options = config.server_options();
  if (!server_options.ok()) return fail(2, server_options.status().to_string());
  const opu::sim::DeviceInfo info = (*device)->info();
  auto server = opu::offload::Server::start(std::shared_ptr<opu::sim::Device>(std::move(*device)),
                                            *server_options);
  if (!server.ok()) return fail(1, server.status().to_string());

  std::cout << (*server)->address() << std::endl;  // the first line, flushed
  if (!calibration_applied.empty()) log->info("{}", calibration_applied);
  log->info("{}: n_in {} x n_out {}, {}-bit camera, frame time {} us, linear mode {}", info.model,
            info.max_n_in, info.max_n_out, info.adc_bits, info.frametime_us,
            server_options->serve_linear ? "on" : "off (UNIMPLEMENTED)");

  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  int received = 0;
  std::thread signal_thread([&] {
    unsigned char signal = 0;
    while (read(g_signal_pipe[0], &signal, 1) < 0 && errno == EINTR) {
    }
    const std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
    received = signal;
    wake.notify_all();
  });

  {
    std::unique_lock<std::mutex> lock(mutex);
    const auto interval = std::chrono::duration<double>(config.summary_interval_s);
    while (!stopping) {
      if (config.summary_interval_s > 0.0) {
        if (!wake.wait_for(lock, interval, [&] { return stopping; })) {
          log->info("summary: {}", (*server)->stats().summary());
        }
      } else {
        wake.wait(lock, [&] { return stopping; });
      }
    }
  }
  log->info("{}: shutting down, in-flight calls get up to {} s", strsignal(received),
            config.shutdown_grace_s);
  (*server)->shutdown(
      std::chrono::milliseconds(static_cast<std::int64_t>(config.shutdown_grace_s * 1000.0)));
  (*server)->wait();
  signal_thread.join();
  log->info("final summary: {}", (*server)->stats().summary());
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // a bug or out of memory: say so instead of aborting
    std::cerr << "opu-serve: fatal: " << e.what() << "\n";
    return 1;
  }
}
