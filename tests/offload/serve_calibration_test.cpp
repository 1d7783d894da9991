// opu-serve --calibration: a calibrated simulator is served as calibrated (its exposure as the
// default, its masked pixels projected to 0), in-process through apply_calibration() and through
// the opu-serve process; bad calibration files stop it before it serves.
#include "offload/serve_calibration.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "calibration/calibration_file.h"
#include "offload/remote_device.h"
#include "offload/serve_config.h"
#include "offload/server.h"
#include "offload_test_support.h"

namespace {

namespace cal = opu::calibration;

constexpr std::int64_t kNIn = 256;
constexpr std::int64_t kNOut = 64;
constexpr double kExposureUs = 250.0;
const std::vector<std::int64_t> kMasked = {2, 5, 40};

// What `opu-calibrate exposure` writes for the offload tests' small device (256 x 64).
cal::CalibrationFile exposure_file() {
  cal::CalibrationFile file;
  file.device = cal::DeviceRecord{"sim://?seed=7", "opu-sim", true, kNIn, kNOut, 8};
  cal::ExposureSection exposure;
  exposure.exposure_us = kExposureUs;
  exposure.percentile = 99.9;
  exposure.target_fraction = 0.9;
  exposure.n_in = kNIn;
  exposure.n_out = kNOut;
  exposure.masked_pixels = kMasked;
  file.exposure = exposure;
  return file;
}

std::string save(const opu::test::TempDir& dir, const std::string& name,
                 const cal::CalibrationFile& file) {
  const std::string path = dir.file(name);
  REQUIRE(cal::save_calibration(file, path).ok());
  return path;
}

// Masked rows are exactly 0; the others carry signal (with an ideal camera only the holographic
// dark-pixel mask, ~2% of pixels, adds zero rows).
void check_masked(const Eigen::MatrixXf& projections) {
  for (const std::int64_t pixel : kMasked) {
    CAPTURE(pixel);
    CHECK((projections.row(pixel).array() == 0.0F).all());
  }
  const auto lit = (projections.rowwise().squaredNorm().array() > 0.0F).count();
  CHECK(lit >= kNOut - static_cast<std::int64_t>(kMasked.size()) - 4);
}

std::vector<std::string> serve_args(const std::string& calibration) {
  std::vector<std::string> args = opu::test::opu_serve_args("127.0.0.1:0");
  args.insert(args.end(), {"--calibration", calibration});
  return args;
}

}  // namespace

TEST_SUITE("offload") {
  TEST_CASE("apply_calibration: the exposure and the masked pixels reach the served device") {
    opu::test::TempDir dir;
    const std::string path = save(dir, "cal.json", exposure_file());
    auto config = opu::sim::SimConfig::from_params(opu::test::small_params("realistic"));
    REQUIRE(config.ok());
    auto applied = opu::offload::apply_calibration(path, *config);
    REQUIRE_MESSAGE(applied.ok(), applied.status().to_string());
    CHECK(applied->find("3 masked pixels") != std::string::npos);
    CHECK(config->camera.exposure_us == kExposureUs);
    CHECK(config->holography.masked_pixels == kMasked);

    auto local = opu::sim::SimDevice::create(*config);
    auto served = opu::sim::SimDevice::create(*config);
    REQUIRE((local.ok() && served.ok()));
    auto server =
        opu::offload::Server::start(std::shared_ptr<opu::sim::Device>(std::move(*served)), {});
    REQUIRE(server.ok());
    auto remote = (*server)->connect_in_process();
    REQUIRE(remote.ok());
    CHECK((*remote)->info().exposure_us == kExposureUs);

    // The same calls to the local twin and to the server: Transform with exposure_us 0 takes
    // the calibrated default; LinearTransform projects masked pixels to 0, bit for bit alike.
    const auto inputs = opu::test::random_frames(kNIn, 4, 3);
    const auto frames_request = opu::test::transform_request(inputs, kNIn, kNOut, 4);
    auto frames = (*remote)->transform(frames_request);
    auto local_frames = (*local)->transform(frames_request);
    REQUIRE((frames.ok() && local_frames.ok()));
    CHECK(frames->info.exposure_us == kExposureUs);
    CHECK(frames->data == local_frames->data);
    const auto values = opu::test::random_values(10, 8, 5);
    const auto request = opu::test::linear_request(values, 10, kNOut, 8);
    auto got = (*remote)->linear_transform(request);
    auto want = (*local)->linear_transform(request);
    REQUIRE((want.ok() && got.ok()));
    for (const std::int64_t pixel : kMasked) CHECK((got->values.row(pixel).array() == 0).all());
    CHECK((got->values.array() == want->values.array()).all());
  }

  TEST_CASE("apply_calibration: bad files name the file and the field, and the config is untouched") {
    opu::test::TempDir dir;
    auto base = opu::sim::SimConfig::from_params(opu::test::small_params());
    REQUIRE(base.ok());
    const auto error = [&](const std::string& path) {
      opu::sim::SimConfig config = *base;
      auto applied = opu::offload::apply_calibration(path, config);
      REQUIRE_FALSE(applied.ok());
      CHECK(config.camera.exposure_us == base->camera.exposure_us);
      CHECK(config.holography.masked_pixels.empty());
      CHECK(applied.status().message().find(path) != std::string::npos);
      return applied.status();
    };
    SUBCASE("missing") {
      CHECK(error(dir.file("absent.json")).code() == opu::StatusCode::kNotFound);
    }
    SUBCASE("corrupt") {
      REQUIRE(opu::test::write_file(dir.file("corrupt.json"), "{\"format\": \"opu-cal"));
      CHECK(error(dir.file("corrupt.json")).message().find("not valid JSON") != std::string::npos);
    }
    SUBCASE("a future version") {
      nlohmann::json doc = nlohmann::json::parse(cal::format_calibration(exposure_file()));
      doc["version"] = 99;
      REQUIRE(opu::test::write_file(dir.file("future.json"), doc.dump()));
      const opu::Status status = error(dir.file("future.json"));
      CHECK(status.code() == opu::StatusCode::kFailedPrecondition);
      CHECK(status.message().find("version 99 is newer") != std::string::npos);
    }
    SUBCASE("a malformed field") {
      nlohmann::json doc = nlohmann::json::parse(cal::format_calibration(exposure_file()));
      doc["exposure"]["masked_pixels"] = {1, 64};
      REQUIRE(opu::test::write_file(dir.file("field.json"), doc.dump()));
      CHECK(error(dir.file("field.json")).message().find("exposure.masked_pixels: got") !=
            std::string::npos);
    }
    SUBCASE("no exposure section") {
      cal::CalibrationFile file = exposure_file();
      file.exposure.reset();
      const opu::Status status = error(save(dir, "noise-only.json", file));
      CHECK(status.code() == opu::StatusCode::kFailedPrecondition);
      CHECK(status.message().find("exposure: got nothing") != std::string::npos);
    }
    SUBCASE("an exposure beyond the camera's longest") {
      cal::CalibrationFile file = exposure_file();
      file.exposure->exposure_us = 2e6;
      const opu::Status status = error(save(dir, "long.json", file));
      CHECK(status.code() == opu::StatusCode::kOutOfRange);
      CHECK(status.message().find("exposure.exposure_us: got 2e+06") != std::string::npos);
    }
    SUBCASE("a calibration of another device") {
      cal::CalibrationFile file = exposure_file();
      file.device->max_n_out = 1024;
      const opu::Status status = error(save(dir, "other.json", file));
      CHECK(status.code() == opu::StatusCode::kFailedPrecondition);
      CHECK(status.message().find("another device") != std::string::npos);
    }
  }

  TEST_CASE("ServeConfig: calibration is a server setting, from flags and JSON files") {
    opu::offload::ServeConfig config;
    REQUIRE(opu::offload::apply_serve_params({{"calibration", "cal.json"}}, config).ok());
    CHECK(config.calibration_file == "cal.json");
    CHECK(config.sim_params.empty());
  }

  TEST_CASE("opu-serve --calibration: serves the device as calibrated") {
    opu::test::TempDir dir;
    const std::string path = save(dir, "cal.json", exposure_file());
    opu::test::Subprocess serve(serve_args(path));
    REQUIRE(serve.started());
    const std::string address = serve.read_line();
    REQUIRE(address.starts_with("127.0.0.1:"));
    opu::offload::RemoteOptions options;
    options.addresses = {address};
    auto device = opu::offload::RemoteDevice::connect(options);
    REQUIRE_MESSAGE(device.ok(), device.status().to_string());
    CHECK((*device)->info().exposure_us == kExposureUs);
    const auto values = opu::test::random_values(10, 8, 6);
    auto projections = (*device)->linear_transform(opu::test::linear_request(values, 10, kNOut, 8));
    REQUIRE_MESSAGE(projections.ok(), projections.status().to_string());
    check_masked(projections->values);
    serve.signal(SIGTERM);
    CHECK(serve.wait() == 0);
  }

  TEST_CASE("opu-serve --calibration: a bad file exits 2 before serving") {
    opu::test::TempDir dir;
    REQUIRE(opu::test::write_file(dir.file("corrupt.json"), "not json"));
    for (const std::string& path : {dir.file("absent.json"), dir.file("corrupt.json")}) {
      CAPTURE(path);
      opu::test::Subprocess serve(serve_args(path));
      REQUIRE(serve.started());
      CHECK(serve.read_line().empty());  // no address: it never served
      CHECK(serve.wait() == 2);
    }
  }
}
