// The calibration file: round trip, atomic writes, and errors that name field, value and want.
#include "calibration/calibration_file.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace cal = opu::calibration;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("opu_cal_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

cal::CalibrationFile full_file() {
  cal::CalibrationFile file;
  file.device = cal::DeviceRecord{"sim://?seed=7", "opu-sim dense 100x50", true, 100, 50, 8};
  cal::NoiseSection noise;
  noise.gain_e_per_count = 40.1;
  noise.read_noise_e = 9.9;
  noise.exposures_us = {100, 200};
  noise.saturation_counts = 255;
  file.noise = noise;
  cal::ExposureSection exposure;
  exposure.exposure_us = 321.5;
  exposure.percentile = 99.9;
  exposure.target_fraction = 0.9;
  exposure.n_in = 100;
  exposure.n_out = 50;
  exposure.masked_pixels = {3, 17};
  file.exposure = exposure;
  cal::TmSection tm;
  tm.n_in = 3;
  tm.n_out = 2;
  tm.exposure_us = 100;
  tm.matrix.resize(2, 3);
  tm.matrix << std::complex<float>(1, -2), std::complex<float>(0.5F, 1e-7F),
      std::complex<float>(-3, 4), std::complex<float>(7, 8), std::complex<float>(-1e10F, 0),
      std::complex<float>(0, 0.25F);
  tm.dark_counts = Eigen::VectorXf::Constant(2, 2.0F);
  tm.anchors = 2;
  tm.signals_per_shell = 5;
  tm.seed = 18446744073709551615ULL;
  file.tm = tm;
  cal::VerifySection verify;
  verify.correlation = 0.98;
  verify.relative_error = 0.1;
  verify.held_out = 10;
  verify.density = 0.5;
  file.verify = verify;
  cal::DriftSection drift;
  drift.lag_s = {0, 0.1};
  drift.correlation = {1, 0.9};
  drift.threshold = 0.9;
  file.drift = drift;
  return file;
}

std::string error_of(const std::string& text) {
  opu::Result<cal::CalibrationFile> parsed = cal::parse_calibration(text, "cal.json");
  REQUIRE_FALSE(parsed.ok());
  return parsed.status().to_string();
}

}  // namespace

TEST_SUITE("calibration") {
  TEST_CASE("CalibrationFile: every section survives a save and load bit for bit") {
    const fs::path path = temp_dir() / "round.json";
    const cal::CalibrationFile file = full_file();
    REQUIRE(cal::save_calibration(file, path.string()).ok());
    opu::Result<cal::CalibrationFile> loaded = cal::load_calibration(path.string());
    REQUIRE(loaded.ok());
    CHECK(loaded->device->model == file.device->model);
    CHECK(loaded->noise->gain_e_per_count == file.noise->gain_e_per_count);
    CHECK(loaded->exposure->masked_pixels == file.exposure->masked_pixels);
    CHECK(loaded->tm->matrix == file.tm->matrix);  // float32 base64: exact
    CHECK(loaded->tm->seed == file.tm->seed);
    CHECK(loaded->verify->relative_error == file.verify->relative_error);
    CHECK_FALSE(loaded->verify->correlation_ceiling.has_value());
    CHECK(loaded->drift->correlation == file.drift->correlation);
    const cal::DeviceSettings settings = cal::device_settings(*loaded);
    CHECK(settings.exposure_us == 321.5);
    CHECK(settings.masked_pixels == std::vector<std::int64_t>{3, 17});
    // Nothing but the file itself is left in the directory.
    std::int64_t entries = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(path.parent_path())) ++entries;
    CHECK(entries == 1);
    fs::remove_all(path.parent_path());
  }

  TEST_CASE("CalibrationFile: corrupt, newer or malformed files are clear errors") {
    using nlohmann::json;
    json good = json::parse(cal::format_calibration(full_file()));
    SUBCASE("not JSON") {
      CHECK(error_of("{\"format\": ").find("not valid JSON") != std::string::npos);
    }
    SUBCASE("not an object") {
      CHECK(error_of("[1, 2]").find("want a JSON object") != std::string::npos);
    }
    SUBCASE("wrong format") {
      json doc = good;
      doc["format"] = "something-else";
      CHECK(error_of(doc.dump()).find("format: got \"something-else\"") != std::string::npos);
    }
    SUBCASE("newer version") {
      json doc = good;
      doc["version"] = 2;
      opu::Result<cal::CalibrationFile> parsed = cal::parse_calibration(doc.dump(), "cal.json");
      REQUIRE_FALSE(parsed.ok());
      CHECK(parsed.status().code() == opu::StatusCode::kFailedPrecondition);
      CHECK(parsed.status().message().find("version 2 is newer") != std::string::npos);
    }
    SUBCASE("a field out of range names field, value and want") {
      json doc = good;
      doc["tm"]["n_in"] = -3;
      const std::string message = error_of(doc.dump());
      CHECK(message.find("INVALID_ARGUMENT") != std::string::npos);
      CHECK(message.find("cal.json: tm.n_in: got -3, want an integer in [1,") != std::string::npos);
    }
    SUBCASE("a missing field") {
      json doc = good;
      doc["noise"].erase("gain_e_per_count");
      CHECK(error_of(doc.dump()).find("noise.gain_e_per_count: got nothing (missing)") !=
            std::string::npos);
    }
    SUBCASE("a wrong type") {
      json doc = good;
      doc["exposure"]["exposure_us"] = "fast";
      CHECK(error_of(doc.dump()).find("exposure.exposure_us: got \"fast\", want a number") !=
            std::string::npos);
    }
    SUBCASE("a truncated matrix") {
      json doc = good;
      std::string re = doc["tm"]["matrix_re"];
      doc["tm"]["matrix_re"] = re.substr(0, re.size() - 16);
      CHECK(error_of(doc.dump()).find("tm.matrix_re: got 3 values, want base64 of 6 float32") !=
            std::string::npos);
    }
    SUBCASE("bad base64") {
      json doc = good;
      doc["tm"]["dark_counts"] = "!!!!!!!!!!!!";
      CHECK(error_of(doc.dump()).find("tm.dark_counts: character 0 is not base64") !=
            std::string::npos);
    }
  }

  TEST_CASE("CalibrationFile: a corrupt file is never overwritten, a failed save leaves nothing") {
    const fs::path dir = temp_dir();
    const fs::path path = dir / "corrupt.json";
    { std::ofstream(path) << "{ this is not json"; }
    opu::Result<cal::CalibrationFile> updated = cal::load_or_new(path.string());
    REQUIRE_FALSE(updated.ok());
    CHECK(updated.status().message().find("refusing to update") != std::string::npos);
    CHECK(cal::load_or_new((dir / "absent.json").string()).ok());  // a new file starts empty
    const opu::Status saved =
        cal::save_calibration(full_file(), (dir / "no" / "such" / "dir.json").string());
    CHECK_FALSE(saved.ok());
    CHECK_FALSE(fs::exists(dir / "no"));
    CHECK(cal::load_calibration((dir / "absent.json").string()).status().code() ==
          opu::StatusCode::kNotFound);
    fs::remove_all(dir);
  }
  TEST_CASE("DeviceSettings: what --calibration loads, checked against the device it is used on") {
    const fs::path dir = temp_dir();
    cal::CalibrationFile file = full_file();
    file.exposure->masked_pixels = {17, 3, 17};  // the file promises no order
    const std::string path = (dir / "settings.json").string();
    REQUIRE(cal::save_calibration(file, path).ok());
    opu::Result<cal::DeviceSettings> settings = cal::load_device_settings(path);
    REQUIRE(settings.ok());
    CHECK(settings->exposure_us == 321.5);
    CHECK(settings->masked_pixels == std::vector<std::int64_t>{3, 17});  // sorted, unique
    CHECK(settings->device_max_n_out == 50);
    const cal::DeviceLimits device{100, 50, 1000.0};
    CHECK(cal::check_device_settings(*settings, device, path).ok());

    SUBCASE("another device's shape") {
      const opu::Status status = cal::check_device_settings(*settings, {100, 64, 1000.0}, path);
      CHECK(status.code() == opu::StatusCode::kFailedPrecondition);
      CHECK(status.message() == path +
                                    ": device: got a device of 100 mirrors x 50 pixels, want "
                                    "this one's 100 x 64 (a calibration of another device; "
                                    "calibrate this one)");
    }
    SUBCASE("an exposure beyond the device's longest") {
      const opu::Status status = cal::check_device_settings(*settings, {100, 50, 300.0}, path);
      CHECK(status.code() == opu::StatusCode::kOutOfRange);
      CHECK(status.message().find(path + ": exposure.exposure_us: got 321.5") == 0);
    }
    SUBCASE("a masked pixel beyond the camera, no device recorded") {
      settings->device_max_n_in = 0;
      settings->device_max_n_out = 0;
      const opu::Status status = cal::check_device_settings(*settings, {100, 10, 0.0}, path);
      CHECK(status.code() == opu::StatusCode::kOutOfRange);
      CHECK(status.message().find("exposure.masked_pixels: got pixel 17") != std::string::npos);
    }
    SUBCASE("a file without an exposure section") {
      file.exposure.reset();
      REQUIRE(cal::save_calibration(file, path).ok());
      const opu::Status status = cal::load_device_settings(path).status();
      CHECK(status.code() == opu::StatusCode::kFailedPrecondition);
      CHECK(status.message().find(path + ": exposure: got nothing (missing)") == 0);
    }
    fs::remove_all(dir);
  }
}
