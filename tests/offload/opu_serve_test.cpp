// opu-serve as a process: the bound address as the first line of stdout, SIGTERM -> exit 0, and
// a client with retries that finishes its job across a killed and restarted server.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "offload/remote_device.h"
#include "offload_test_support.h"

namespace {

constexpr std::int64_t kNIn = 256;
constexpr std::int64_t kNOut = 64;

}  // namespace

TEST_SUITE("offload") {
  TEST_CASE("opu-serve: prints the bound address first, serves, and exits 0 on SIGTERM") {
    opu::test::Subprocess serve(opu::test::opu_serve_args("127.0.0.1:0"));
    REQUIRE(serve.started());
    const std::string address = serve.read_line();
    REQUIRE(address.starts_with("127.0.0.1:"));
    CHECK(address != "127.0.0.1:0");
    opu::offload::RemoteOptions options;
    options.addresses = {address};
    auto device = opu::offload::RemoteDevice::connect(options);
    REQUIRE_MESSAGE(device.ok(), device.status().to_string());
    const auto inputs = opu::test::random_frames(kNIn, 8, 1);
    const auto request = opu::test::transform_request(inputs, kNIn, kNOut, 8);
    auto frames = (*device)->transform(request);
    REQUIRE(frames.ok());
    CHECK(frames->data == opu::test::make_sim()->transform(request)->data);
    serve.signal(SIGTERM);
    CHECK(serve.wait() == 0);
  }

  TEST_CASE("opu-serve: bad flags exit 2 without printing an address") {
    auto args = opu::test::opu_serve_args("127.0.0.1:0");
    args.push_back("--adc-bits");
    args.push_back("99");
    opu::test::Subprocess serve(args);
    REQUIRE(serve.started());
    CHECK(serve.read_line().empty());
    CHECK(serve.wait() == 2);
  }

  TEST_CASE("opu-serve: a value out of range exits 2 naming it and its range, nothing served") {
    // Server settings (its own table), simulator parameters (SimConfig's table) and --param.
    for (const auto& [arguments, message] : std::vector<std::pair<std::string, std::string>>{
             {"--max-inflight 0",
              "max_inflight (--max-inflight): 0 is out of range; expected an integer in [1, "
              "1000000]"},
             {"--max-message-mb 5000",
              "max_message_mb (--max-message-mb): 5000 is out of range; expected a number in "
              "[0.004, 2047] (MiB)"},
             {"--shutdown-grace-s -1",
              "shutdown_grace_s (--shutdown-grace-s): -1 is out of range; expected a number in "
              "[0, 86400] (seconds)"},
             {"--serve-linear maybe",
              "serve_linear (--serve-linear): 'maybe' is not a known value"},
             {"--param max_inflight=-3",
              "max_inflight (--max-inflight): -3 is out of range; expected an integer in [1, "
              "1000000]"},
             {"--adc-bits 0", "sim parameter 'adc_bits' is 0, want a value in [1, 16]"},
             {"--max-batch -5", "sim parameter 'max_batch' is -5, want a value in [1, 1073741824]"},
             {"--param seed=9", "--param seed=9: seed is already given ('7')"}}) {
      CAPTURE(arguments);
      std::string command;
      for (const std::string& arg : opu::test::opu_serve_args("127.0.0.1:0")) command += arg + " ";
      command += arguments + " 2>&1";
      FILE* pipe = ::popen(command.c_str(), "r");
      REQUIRE(pipe != nullptr);
      std::string output;
      char buffer[4096];
      while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
      const int status = ::pclose(pipe);
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 2);
      CHECK(output.find(message) != std::string::npos);
      CHECK(output.find("127.0.0.1:") == std::string::npos);  // no address: nothing was served
    }
  }

  TEST_CASE("opu-serve: a client with retries finishes its job across a killed, restarted server") {
    auto serve = std::make_unique<opu::test::Subprocess>(opu::test::opu_serve_args("127.0.0.1:0"));
    REQUIRE(serve->started());
    const std::string address = serve->read_line();
    REQUIRE(address.starts_with("127.0.0.1:"));

    opu::offload::RemoteOptions options;
    options.addresses = {address};
    options.retry.max_attempts = 60;  // up to ~10 s of backoff: far more than a restart takes
    options.retry.initial_backoff = std::chrono::milliseconds(10);
    options.retry.max_backoff = std::chrono::milliseconds(200);
    auto device = opu::offload::RemoteDevice::connect(options);
    REQUIRE_MESSAGE(device.ok(), device.status().to_string());

    constexpr int kJob = 60;
    constexpr int kKillAfter = 20;
    std::mutex mutex;
    std::condition_variable changed;
    int done = 0;
    bool killed = false;
    std::vector<std::vector<std::uint8_t>> results(kJob);
    std::vector<std::vector<std::uint8_t>> inputs(kJob);
    opu::Status job_status;
    std::thread job([&] {
      for (int i = 0; i < kJob; ++i) {
        inputs[i] = opu::test::random_frames(kNIn, 4, 700 + i);
        auto frames = (*device)->transform(opu::test::transform_request(inputs[i], kNIn, kNOut, 4));
        if (!frames.ok()) {
          job_status = frames.status();
          break;
        }
        results[i] = frames->data;
        std::unique_lock<std::mutex> lock(mutex);
        ++done;
        changed.notify_all();
        // Pause once, so that the next request surely meets the dead server.
        if (done == kKillAfter) changed.wait(lock, [&] { return killed; });
      }
      std::unique_lock<std::mutex> lock(mutex);
      done = kJob;
      changed.notify_all();
    });
    {
      std::unique_lock<std::mutex> lock(mutex);
      changed.wait(lock, [&] { return done >= kKillAfter; });
    }
    serve->signal(SIGKILL);
    CHECK(serve->wait() == 128 + SIGKILL);
    {
      const std::lock_guard<std::mutex> lock(mutex);
      killed = true;
      changed.notify_all();
    }
    // Restart on the same port while the client is retrying.
    serve = std::make_unique<opu::test::Subprocess>(opu::test::opu_serve_args(address));
    REQUIRE(serve->started());
    CHECK(serve->read_line() == address);
    job.join();
    REQUIRE_MESSAGE(job_status.ok(), job_status.to_string());
    CHECK((*device)->stats().retries >= 1);
    auto local = opu::test::make_sim();
    for (int i = 0; i < kJob; ++i) {
      CHECK(results[i] ==
            local->transform(opu::test::transform_request(inputs[i], kNIn, kNOut, 4))->data);
    }
    serve->signal(SIGTERM);
    CHECK(serve->wait() == 0);
  }

}  // TEST_SUITE
