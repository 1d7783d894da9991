// opu-bench-remote: what serving the OPU over gRPC costs, measured in one run.
//
// Each workload runs the same requests on three paths: (a) an in-process SimDevice (sim://),
// (b) an opu::offload::Server with its own identical SimDevice through an in-process gRPC channel
// (stubs and codecs, no sockets), (c) the same server over a loopback TCP port (what opu-serve
// gives). The paths are timed in interleaved rounds, each keeping its best round, as wall time
// and as CPU time of the whole process.
//
// Then the same three paths with a null device (zeros of the right shape, no physics) isolate what
// serving adds per call: copies, protobuf, gRPC, TCP and thread hand-offs. That overhead is small
// and so measures precisely even on a loaded machine, where the simulator's own time moves by more
// than the overhead from one round to the next; the ratio it gives on top of the simulator's
// in-process time is printed last.
//
// Workloads (docs/design.md §6; the target: remote / in-process <= 1.15 for both):
//   dfa:  ternary LinearTransform 10 -> 256 at batch 128 (one DFA feedback projection),
//         thousands of calls;
//   bulk: Transform of 1,000 frames of 4,096 mirrors to 4,096 pixels (4 MB of counts per call).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "offload/open_device.h"
#include "offload/remote_device.h"
#include "offload/server.h"
#include "opu_sim/cli_validators.h"
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

// Seconds per call on the three paths: wall time (what a caller waits) and CPU time of the whole
// process (client, server and gRPC threads together: what the work costs). On a shared, loaded
// machine the CPU figure is the robust one: the scheduler favours threads that just woke up (the
// server's), which flatters the remote wall time.
struct Measured {
  double wall[3] = {1e300, 1e300, 1e300};  // in-process, in-process channel, loopback
  double cpu[3] = {1e300, 1e300, 1e300};
};

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void report(const std::string& name, const Measured& m) {
  static const char* kLabels[3] = {"in-process sim://", "gRPC, in-process channel",
                                   "gRPC, loopback TCP (opu-serve)"};
  std::printf("%s\n", name.c_str());
  std::printf("    %-30s %12s %7s %10s   %12s %7s %10s\n", "", "wall us/call", "ratio", "added us",
              "cpu us/call", "ratio", "added us");
  for (int d = 0; d < 3; ++d) {
    std::printf("    %-30s %12.1f %7.3f %+10.1f   %12.1f %7.3f %+10.1f\n", kLabels[d],
                m.wall[d] * 1e6, m.wall[d] / m.wall[0], (m.wall[d] - m.wall[0]) * 1e6,
                m.cpu[d] * 1e6, m.cpu[d] / m.cpu[0], (m.cpu[d] - m.cpu[0]) * 1e6);
  }
}

// Times `body(device)` on the three devices, interleaved: `rounds` rounds, each timing every
// device for about the same wall time, and keeps each device's best round. On a shared, noisy
// machine interleaving exposes all three to the same disturbances, and the best round is the
// least disturbed one.
Measured measure(opu::sim::Device& local, opu::sim::Device& channel, opu::sim::Device& loopback,
                 const std::function<void(opu::sim::Device&)>& body, double min_seconds, int rounds,
                 std::int64_t& calls) {
  using Clock = std::chrono::steady_clock;
  opu::sim::Device* devices[3] = {&local, &channel, &loopback};
  Measured m;
  for (auto* device : devices) body(*device);  // warm-up: connections, caches, lazy matrices
  const double slot = min_seconds / (3.0 * rounds);
  for (int round = 0; round < rounds; ++round) {
    for (int d = 0; d < 3; ++d) {
      std::int64_t n = 0;
      const auto start = Clock::now();
      const double cpu_start = process_cpu_seconds();
      double elapsed = 0.0;
      do {
        body(*devices[d]);
        ++n;
        elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      } while (elapsed < slot);
      calls += n;
      m.wall[d] = std::min(m.wall[d], elapsed / static_cast<double>(n));
      m.cpu[d] = std::min(m.cpu[d], (process_cpu_seconds() - cpu_start) / static_cast<double>(n));
    }
  }
  return m;
}

// A device that does no work: answers with zeros of the right shape. Served remotely, it leaves
// only what serving costs (copies, protobuf, gRPC, loopback TCP, thread hand-offs) in the timing,
// which is small and therefore measurable on a noisy machine where the simulator's own time
// varies by more than that overhead from one round to the next.
class NullDevice final : public opu::sim::Device {
 public:
  explicit NullDevice(opu::sim::DeviceInfo info) : info_(std::move(info)) {}
  opu::sim::DeviceInfo info() const override { return info_; }

 protected:
  opu::Result<opu::sim::Frames> do_transform(const opu::sim::TransformRequest& request) override {
    opu::sim::Frames frames;
    frames.n_out = request.n_out;
    frames.batch = request.batch;
    frames.adc_bits = info_.adc_bits;
    frames.data.assign(
        static_cast<std::size_t>(request.n_out * request.batch * frames.bytes_per_pixel()), 0);
    frames.info.frames = request.batch;
    return frames;
  }
  opu::Result<opu::sim::Projections> do_linear_transform(
      const opu::sim::LinearRequest& request) override {
    opu::sim::Projections projections;
    projections.values = Eigen::MatrixXf::Zero(request.n_out, request.batch);
    return projections;
  }

 private:
  opu::sim::DeviceInfo info_;
};

struct Setup {
  std::unique_ptr<opu::sim::Device> local;
  std::unique_ptr<opu::offload::Server> server;
  std::unique_ptr<opu::offload::RemoteDevice> channel;
  std::unique_ptr<opu::offload::RemoteDevice> loopback;
};

// The same kind of device three ways: in-process, and served (its own instance) through an
// in-process channel and over loopback TCP.
Setup make_setup(const std::function<std::unique_ptr<opu::sim::Device>()>& make) {
  Setup s;
  s.local = make();
  opu::offload::ServerOptions options;
  options.max_message_bytes = std::int64_t{64} << 20;
  auto server = opu::offload::Server::start(std::shared_ptr<opu::sim::Device>(make()), options);
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

std::unique_ptr<opu::sim::Device> open_sim(const std::string& query) {
  auto device = opu::offload::open_device("sim://?" + query);
  if (!device.ok()) throw std::runtime_error(device.status().to_string());
  return std::move(*device);
}

// One workload: the simulator end to end on the three paths, then the serving overhead alone
// (null device), and the ratio that overhead gives on top of the simulator's in-process time.
void run_workload(const std::string& title, const std::string& query,
                  const std::function<void(opu::sim::Device&)>& body, double seconds, int rounds) {
  std::int64_t calls = 0;
  Setup sim = make_setup([&] { return open_sim(query); });
  const Measured end_to_end =
      measure(*sim.local, *sim.channel, *sim.loopback, body, seconds * 0.7, rounds, calls);
  const opu::sim::DeviceInfo info = sim.local->info();
  sim = Setup();
  std::int64_t null_calls = 0;
  Setup null = make_setup([&] { return std::make_unique<NullDevice>(info); });
  const Measured overhead =
      measure(*null.local, *null.channel, *null.loopback, body, seconds * 0.3, rounds, null_calls);
  std::printf("%s\n", title.c_str());
  report("  simulator, end to end (" + std::to_string(calls) + " calls):", end_to_end);
  report("  null device: serving overhead alone (" + std::to_string(null_calls) + " calls):",
         overhead);
  for (int d = 1; d < 3; ++d) {
    const double added_s = overhead.wall[d] - overhead.wall[0];
    std::printf("  => %-30s added %8.1f us/call; on the simulator's %.1f us: ratio %.3f\n",
                d == 1 ? "in-process channel:" : "loopback TCP (opu-serve):", added_s * 1e6,
                end_to_end.wall[0] * 1e6, (end_to_end.wall[0] + added_s) / end_to_end.wall[0]);
  }
  std::printf("\n");
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
  // Sizes within the simulator's limits (n_in, n_out <= 2^31; batches <= its max_batch, 65536).
  const opu::ValueRange size = opu::ValueRange::integers(1, 2147483648.0);
  const opu::ValueRange batch = opu::ValueRange::integers(1, 65536);
  app.add_option("--threads", threads, "compute threads of every device (both sides)")
      ->check(opu::in_range<int>(opu::ValueRange::integers(1, 256)));
  app.add_option("--seconds", min_seconds, "wall time per workload, all devices together")
      ->check(opu::in_range<double>(opu::ValueRange::positive("seconds")));
  app.add_option("--rounds", rounds, "interleaved rounds per workload (best round kept)")
      ->check(opu::in_range<int>(opu::ValueRange::integers(1, 1000000)));
  app.add_option("--camera", camera, "ideal or realistic")
      ->check(opu::one_of({"ideal", "realistic"}));
  app.add_option("--dfa-mirrors", dfa_n_in, "device mirrors for the DFA workload")
      ->check(opu::in_range<std::int64_t>(size));
  app.add_option("--dfa-features", dfa_features, "error-vector length (classes)")
      ->check(opu::in_range<std::int64_t>(size));
  app.add_option("--dfa-n-out", dfa_n_out, "projection length (widest feedback point)")
      ->check(opu::in_range<std::int64_t>(size));
  app.add_option("--dfa-batch", dfa_batch, "vectors per call")
      ->check(opu::in_range<std::int64_t>(batch));
  app.add_option("--bulk-n-in", bulk_n_in, "mirrors per bulk frame")
      ->check(opu::in_range<std::int64_t>(size));
  app.add_option("--bulk-n-out", bulk_n_out, "pixels per bulk frame")
      ->check(opu::in_range<std::int64_t>(size));
  app.add_option("--bulk-batch", bulk_batch, "frames per bulk call")
      ->check(opu::in_range<std::int64_t>(batch));
  app.add_flag("--skip-bulk", skip_bulk, "only the DFA workload");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  opu::set_compute_threads(threads);

  const std::string common = "seed=7&camera=" + camera + "&threads=" + std::to_string(threads);
  std::printf("opu-bench-remote: threads %d, camera %s, %.0f s per workload in %d rounds\n\n",
              threads, camera.c_str(), min_seconds, rounds);

  {
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
    char title[256];
    std::snprintf(title, sizeof(title),
                  "dfa: ternary LinearTransform %lld -> %lld, batch %lld, on %lld mirrors",
                  static_cast<long long>(dfa_features), static_cast<long long>(dfa_n_out),
                  static_cast<long long>(dfa_batch), static_cast<long long>(dfa_n_in));
    run_workload(
        title, common + "&n_in=" + std::to_string(dfa_n_in) + "&n_out=" + std::to_string(dfa_n_out),
        [&](opu::sim::Device& device) {
          if (!device.linear_transform(request).ok()) {
            throw std::runtime_error("linear_transform failed");
          }
        },
        min_seconds, rounds);
  }
  if (!skip_bulk) {
    std::vector<std::uint8_t> inputs(
        static_cast<std::size_t>(bulk_batch * opu::sim::packed_bytes(bulk_n_in)));
    for (std::size_t i = 0; i < inputs.size(); ++i) inputs[i] = static_cast<std::uint8_t>(mix(i));
    opu::sim::TransformRequest request;
    request.n_in = bulk_n_in;
    request.n_out = bulk_n_out;
    request.batch = bulk_batch;
    request.inputs = inputs;
    char title[256];
    std::snprintf(
        title, sizeof(title),
        "bulk: Transform %lld frames x %lld mirrors -> %lld pixels (%.1f MB back per call)",
        static_cast<long long>(bulk_batch), static_cast<long long>(bulk_n_in),
        static_cast<long long>(bulk_n_out), static_cast<double>(bulk_batch * bulk_n_out) / 1e6);
    run_workload(
        title,
        common + "&n_in=" + std::to_string(bulk_n_in) + "&n_out=" + std::to_string(bulk_n_out),
        [&](opu::sim::Device& device) {
          if (!device.transform(request).ok()) throw std::runtime_error("transform failed");
        },
        min_seconds, rounds);
  }
  return 0;
}
