// opu-serve as a process: the bound address as the first line of stdout, SIGTERM -> exit 0, and
// a client with retries that finishes its job across a killed and restarted server.
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

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
