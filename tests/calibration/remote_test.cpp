// The same procedures through opu-serve's engine give the same results as in-process (same seed):
// the server replays the same simulator, and the calibration sees only the Device interface.
#include <doctest/doctest.h>

#include "calibration/procedures.h"
#include "offload/open_device.h"
#include "offload/server.h"
#include "opu_sim/sim_device.h"
#include "test_support.h"

namespace cal = opu::calibration;

namespace {

std::shared_ptr<opu::sim::SimDevice> make_sim(std::map<std::string, std::string> params) {
  opu::Result<opu::sim::SimConfig> config = opu::sim::SimConfig::from_params(params);
  REQUIRE(config.ok());
  opu::Result<std::unique_ptr<opu::sim::SimDevice>> device = opu::sim::SimDevice::create(*config);
  REQUIRE(device.ok());
  return std::shared_ptr<opu::sim::SimDevice>(std::move(*device));
}

}  // namespace

TEST_SUITE("calibration") {
  TEST_CASE("remote: noise, tm and drift over gRPC equal the in-process results") {
    const std::uint64_t seed = opu::test::test_seed(41);
    INFO("seed " << seed);
    const std::map<std::string, std::string> params = {
        {"seed", std::to_string(seed)}, {"n_in", "64"}, {"n_out", "256"}, {"drift_tau_s", "0.2"}};
    std::shared_ptr<opu::sim::SimDevice> local = make_sim(params);
    opu::Result<std::unique_ptr<opu::offload::Server>> server =
        opu::offload::Server::start(make_sim(params), {});
    REQUIRE(server.ok());
    // Over a real socket, through the URI a user would type.
    opu::Result<std::unique_ptr<opu::sim::Device>> remote =
        opu::offload::open_device("grpc://" + (*server)->address());
    REQUIRE(remote.ok());

    cal::NoiseOptions noise;
    noise.repeats = 8;
    noise.dark_frames = 16;
    opu::Result<cal::NoiseSection> noise_local = cal::measure_noise(*local, noise);
    opu::Result<cal::NoiseSection> noise_remote = cal::measure_noise(**remote, noise);
    REQUIRE(noise_local.ok());
    REQUIRE(noise_remote.ok());
    CHECK(noise_local->gain_e_per_count == noise_remote->gain_e_per_count);
    CHECK(noise_local->read_noise_e == noise_remote->read_noise_e);
    CHECK(noise_local->frames == noise_remote->frames);
    CHECK(noise_local->device_time_s == noise_remote->device_time_s);

    cal::TmOptions tm;
    tm.n_in = 32;
    tm.n_out = 256;
    tm.gn_iterations = 4;
    opu::Result<cal::TmSection> tm_local = cal::recover_tm(*local, tm);
    opu::Result<cal::TmSection> tm_remote = cal::recover_tm(**remote, tm);
    REQUIRE(tm_local.ok());
    REQUIRE(tm_remote.ok());
    CHECK(tm_local->matrix == tm_remote->matrix);
    CHECK(tm_local->frames == tm_remote->frames);
    opu::Result<cal::VerifySection> verify_local = cal::verify_tm(*local, *tm_local, {});
    opu::Result<cal::VerifySection> verify_remote = cal::verify_tm(**remote, *tm_remote, {});
    REQUIRE(verify_local.ok());
    REQUIRE(verify_remote.ok());
    CHECK(verify_local->correlation == verify_remote->correlation);
    CHECK(verify_local->relative_error.has_value());         // in-process: the truth is known
    CHECK_FALSE(verify_remote->relative_error.has_value());  // remote: never revealed

    cal::DriftOptions drift;
    drift.interval_s = 0.01;
    drift.duration_s = 0.4;
    opu::Result<cal::DriftSection> drift_local = cal::measure_drift(*local, drift);
    opu::Result<cal::DriftSection> drift_remote = cal::measure_drift(**remote, drift);
    REQUIRE(drift_local.ok());
    REQUIRE(drift_remote.ok());
    CHECK(drift_local->correlation == drift_remote->correlation);
    CHECK(drift_local->decorrelation_time_s == drift_remote->decorrelation_time_s);
    (*server)->shutdown(std::chrono::milliseconds(100));
  }

  TEST_CASE("remote: an unreachable device is a clear error") {
    opu::Result<std::unique_ptr<opu::sim::Device>> remote =
        opu::offload::open_device("grpc://127.0.0.1:1?deadline_ms=500&retries=1");
    if (remote.ok()) {
      // Some clients connect lazily: then the first frames fail.
      opu::Result<cal::NoiseSection> noise = cal::measure_noise(**remote, {});
      REQUIRE_FALSE(noise.ok());
      CHECK(noise.status().code() == opu::StatusCode::kUnavailable);
    } else {
      CHECK(remote.status().code() == opu::StatusCode::kUnavailable);
    }
  }
}
