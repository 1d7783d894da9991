// opu-bench-remote: what serving the OPU over gRPC costs, measured in one run.
//
// For each workload the same requests go to (a) an in-process SimDevice (sim://), (b) an
// opu::offload::Server with its own identical SimDevice through an in-process gRPC channel (stubs
// and codecs, no sockets), and (c) the same server over a loopback TCP port (what opu-serve
// gives). The ratio remote / in-process and the added microseconds per call are printed; the
// three are timed in interleaved rounds and each keeps its best round.
//
// Workloads (DESIGN.md §6; the targets: remote / in-process <= 1.15):
//   dfa:  ternary LinearTransform of 10 -> 256 at batch 128 (one DFA feedback projection),
//         thousands of calls;
//   bulk: Transform of 1,000 frames of 4,096 mirrors to 4,096 pixels (4 MB of counts per call).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "offload/open_device.h"
#include "offload/remote_device.h"
#include "offload/server.h"
#include "opu_sim/packing.h"
#include "opu_sim/sim_device.h"
#include "opu_sim/threading.h"

namespace {

std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

struct Measured {
  double local_s = 0.0;
  double in_process_channel_s = 0.0;
  double loopback_s = 0.0;
};

void report(const std::string& name, const Measured& m, double calls_per_step_note) {
  const auto row = [&](const char* label, double seconds) {
    std::printf("  %-34s %10.1f us/call  ratio %5.3f  added %+8.1f us/call\n", label,
                seconds * 1e6, seconds / m.local_s, (seconds - m.local_s) * 1e6);
  };
  std::printf("%s\n", name.c_str());
  std::printf("  %-34s %10.1f us/call\n", "in-process sim://", m.local_s * 1e6);
  row("gRPC, in-process channel", m.in_process_channel_s);
  row("gRPC, loopback TCP (opu-serve)", m.loopback_s);
  if (calls_per_step_note > 0.0) {
    std::printf("  added per DFA training step (%.0f projection call(s)): %+.1f us\n",
                calls_per_step_note, (m.loopback_s - m.local_s) * 1e6 * calls_per_step_note);
  }
}

// Times `body(device)` on the three devices, interleaved: `rounds` rounds, each timing every
// device for about the same wall time, and keeps each device's best round. On a shared, noisy
// machine interleaving exposes all three to the same disturbances, and the best round is the
// least disturbed one.
Measured measure(opu::sim::Device& local, opu::sim::Device& channel, opu::sim::Device& loopback,
                 const std::function<void(opu::sim::Device&)>& body, double min_seconds,
                 int rounds, std::int64_t& calls) {
  using Clock = std::chrono::steady_clock;
  opu::sim::Device* devices[3] = {&local, &channel, &loopback};
  double best[3] = {1e300, 1e300, 1e300};
  for (auto* device : devices) body(*device);  // warm-up: connections, caches, lazy matrices
  const double slot = min_seconds / (3.0 * rounds);
  for (int round = 0; round < rounds; ++round) {
    for (int d = 0; d < 3; ++d) {
      std::int64_t n = 0;
      const auto start = Clock::now();
      double elapsed = 0.0;
      do {
        body(*devices[d]);
        ++n;
        elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      } while (elapsed < slot);
      calls += n;
      best[d] = std::min(best[d], elapsed / static_cast<double>(n));
    }
  }
  return {best[0], best[1], best[2]};
}

struct Setup {
  std::unique_ptr<opu::sim::Device> local;
  std::unique_ptr<opu::offload::Server> server;
  std::unique_ptr<opu::offload::RemoteDevice> channel;
  std::unique_ptr<opu::offload::RemoteDevice> loopback;
};

Setup make_setup(const std::string& query) {
  Setup s;
  auto local = opu::offload::open_device("sim://?" + query);
  auto served = opu::offload::open_device("sim://?" + query);
  if (!local.ok() || !served.ok()) {
    throw std::runtime_error((local.ok() ? served.status() : local.status()).to_string());
  }
  s.local = std::move(*local);
  opu::offload::ServerOptions options;
  options.max_message_bytes = std::int64_t{64} << 20;
  auto server = opu::offload::Server::start(std::shared_ptr<opu::sim::Device>(std::move(*served)),
                                            options);
  if (!server.ok()) throw std::runtime_error(server.status().to_string());
  s.server = std::move(*server);
  auto channel = s.server->connect_in_process();
  opu::offload::RemoteOptions remote;
  remote.addresses = {s.server->address()};
  auto loopback = opu::offload::RemoteDevice::connect(remote);
  if (!channel.ok() || !loopback.ok()) {
    throw std::runtime_error((channel.ok() ? loopback.status() : channel.status()).to_string());
  }
  s.channel = std::move(*channel);
  s.loopback = std::move(*loopback);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"opu-bench-remote: remote (gRPC) vs in-process OPU, measured in one run"};
  int threads = 1;
  double min_seconds = 30.0;
  int rounds = 10;
  std::string camera = "realistic";
  std::int64_t dfa_n_in = 1024, dfa_features = 10, dfa_n_out = 256, dfa_batch = 128;
  std::int64_t bulk_n_in = 4096, bulk_n_out = 4096, bulk_batch = 1000;
  bool skip_bulk = false;
  app.add_option("--threads", threads, "compute threads of every device (both sides)");
  app.add_option("--seconds", min_seconds, "wall time per workload, all devices together");
  app.add_option("--rounds", rounds, "interleaved rounds per workload (best round kept)");
  app.add_option("--camera", camera, "ideal or realistic");
  app.add_option("--dfa-mirrors", dfa_n_in, "device mirrors for the DFA workload");
  app.add_option("--dfa-features", dfa_features, "error-vector length (classes)");
  app.add_option("--dfa-n-out", dfa_n_out, "projection length (widest feedback point)");
  app.add_option("--dfa-batch", dfa_batch, "vectors per call");
  app.add_option("--bulk-n-in", bulk_n_in, "mirrors per bulk frame");
  app.add_option("--bulk-n-out", bulk_n_out, "pixels per bulk frame");
  app.add_option("--bulk-batch", bulk_batch, "frames per bulk call");
  app.add_flag("--skip-bulk", skip_bulk, "only the DFA workload");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  opu::set_compute_threads(threads);

  const std::string common = "seed=7&camera=" + camera + "&threads=" + std::to_string(threads);
  std::printf("opu-bench-remote: threads %d, camera %s, %.0f s per workload in %d rounds\n\n",
              threads, camera.c_str(), min_seconds, rounds);

  {
    Setup s = make_setup(common + "&n_in=" + std::to_string(dfa_n_in) +
                         "&n_out=" + std::to_string(dfa_n_out));
    std::vector<float> values(static_cast<std::size_t>(dfa_features * dfa_batch));
    for (std::size_t i = 0; i < values.size(); ++i) {
      values[i] = static_cast<float>(static_cast<double>(mix(i) >> 11) * 0x1.0p-52 - 0.5);
    }
    opu::sim::LinearRequest request;
    request.n_in = dfa_features;
    request.n_out = dfa_n_out;
    request.batch = dfa_batch;
    request.values = values;
    request.options.encoding = opu::sim::Encoding::kTernary;
    std::int64_t calls = 0;
    const Measured m = measure(
        *s.local, *s.channel, *s.loopback,
        [&](opu::sim::Device& device) {
          if (!device.linear_transform(request).ok()) throw std::runtime_error("linear failed");
        },
        min_seconds, rounds, calls);
    char title[256];
    std::snprintf(title, sizeof(title),
                  "dfa: ternary LinearTransform %lld -> %lld, batch %lld, %lld mirrors "
                  "(%lld calls in %d interleaved rounds)",
                  static_cast<long long>(dfa_features), static_cast<long long>(dfa_n_out),
                  static_cast<long long>(dfa_batch), static_cast<long long>(dfa_n_in),
                  static_cast<long long>(calls), rounds);
    report(title, m, 1.0);
  }
  if (!skip_bulk) {
    Setup s = make_setup(common + "&n_in=" + std::to_string(bulk_n_in) +
                         "&n_out=" + std::to_string(bulk_n_out));
    std::vector<std::uint8_t> inputs(
        static_cast<std::size_t>(bulk_batch * opu::sim::packed_bytes(bulk_n_in)));
    for (std::size_t i = 0; i < inputs.size(); ++i) inputs[i] = static_cast<std::uint8_t>(mix(i));
    opu::sim::TransformRequest request;
    request.n_in = bulk_n_in;
    request.n_out = bulk_n_out;
    request.batch = bulk_batch;
    request.inputs = inputs;
    std::int64_t calls = 0;
    const Measured m = measure(
        *s.local, *s.channel, *s.loopback,
        [&](opu::sim::Device& device) {
          if (!device.transform(request).ok()) throw std::runtime_error("transform failed");
        },
        min_seconds, rounds, calls);
    char title[256];
    std::snprintf(title, sizeof(title),
                  "bulk: Transform %lld frames x %lld mirrors -> %lld pixels (%.1f MB out per "
                  "call; %lld calls in %d interleaved rounds)",
                  static_cast<long long>(bulk_batch), static_cast<long long>(bulk_n_in),
                  static_cast<long long>(bulk_n_out),
                  static_cast<double>(bulk_batch * bulk_n_out) / 1e6,
                  static_cast<long long>(calls), rounds);
    report(title, m, 0.0);
  }
  return 0;
}
