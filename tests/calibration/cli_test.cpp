// opu-calibrate as a user runs it: --help, the JSON last line, the file, and errors.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "calibration/calibration_file.h"

namespace fs = std::filesystem;

namespace {

struct Run {
  int status = 0;
  std::string out;
};

Run run(const std::string& arguments) {
  const std::string command = std::string(OPU_CALIBRATE_PATH) + " " + arguments + " 2>/dev/null";
  Run result;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) result.out += buffer.data();
  result.status = ::pclose(pipe);
  return result;
}

nlohmann::json last_line(const std::string& out) {
  std::string text = out;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const std::size_t newline = text.rfind('\n');
  return nlohmann::json::parse(newline == std::string::npos ? text : text.substr(newline + 1));
}

}  // namespace

TEST_SUITE("calibration") {
  TEST_CASE("opu-calibrate: subcommands write their sections and print one JSON line") {
    const fs::path dir = fs::temp_directory_path() / ("opu_cal_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string file = (dir / "cal.json").string();
    const std::string device = "'sim://?seed=5&n_in=64&n_out=256'";

    for (const char* command : {"noise", "exposure", "tm", "verify", "drift"}) {
      CAPTURE(command);
      const Run help = run(std::string(command) + " --help");
      CHECK(help.status == 0);
      CHECK(help.out.find("--device") != std::string::npos);
    }

    Run noise = run("noise --quiet --device " + device + " --out " + file);
    CHECK(noise.status == 0);
    CHECK(last_line(noise.out)["command"] == "noise");
    CHECK(last_line(noise.out)["gain_e_per_count"].get<double>() > 30.0);
    Run tm = run("tm --quiet --device " + device + " --n-in 32 --n-out 128 --out " + file);
    CHECK(tm.status == 0);
    const nlohmann::json tm_line = last_line(tm.out);
    CHECK(tm_line["command"] == "tm");
    CHECK(tm_line["correlation"].get<double>() > 0.95);
    Run verify = run("verify --quiet --device " + device + " --calibration " + file);
    CHECK(verify.status == 0);
    CHECK(last_line(verify.out)["relative_error"].get<double>() < 0.2);
    Run drift = run("drift --quiet --device " + device + " --duration-s 0.2 --interval-s 0.02 " +
                    "--out " + file);
    CHECK(drift.status == 0);

    opu::Result<opu::calibration::CalibrationFile> loaded =
        opu::calibration::load_calibration(file);
    REQUIRE(loaded.ok());
    CHECK(loaded->noise.has_value());
    CHECK(loaded->tm.has_value());
    CHECK(loaded->verify.has_value());
    CHECK(loaded->drift.has_value());
    CHECK(loaded->device->uri == "sim://?seed=5&n_in=64&n_out=256");

    fs::remove_all(dir);
  }

  TEST_CASE("opu-calibrate: bad input is reported on the JSON line, no file left behind") {
    const fs::path dir = fs::temp_directory_path() / ("opu_cal_bad_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string file = (dir / "cal.json").string();
    const std::string device = "'sim://?seed=5&n_in=64&n_out=256'";
    SUBCASE("a corrupt file is reported and left as it was") {
      { std::ofstream(file) << "{\"format\": \"opu-calibration\", \"version\": 9}"; }
      Run bad = run("noise --quiet --device " + device + " --out " + file);
      CHECK(bad.status != 0);
      CHECK(last_line(bad.out)["code"] == "FAILED_PRECONDITION");
      CHECK(last_line(bad.out)["error"].get<std::string>().find("version 9") != std::string::npos);
      std::ifstream in(file);
      std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      CHECK(content == "{\"format\": \"opu-calibration\", \"version\": 9}");
    }
    SUBCASE("verify without a tm section") {
      const std::string empty = (dir / "empty.json").string();
      Run bad = run("verify --quiet --device " + device + " --calibration " + empty);
      CHECK(bad.status != 0);
      CHECK(last_line(bad.out)["error"].get<std::string>().find("no tm section") !=
            std::string::npos);
      CHECK_FALSE(fs::exists(empty));
    }
    SUBCASE("an unreachable device") {
      Run bad = run("noise --quiet --device 'grpc://127.0.0.1:1?deadline_ms=300&retries=1' --out " +
                    (dir / "unreachable.json").string());
      CHECK(bad.status != 0);
      CHECK(last_line(bad.out)["code"] == "UNAVAILABLE");
      CHECK_FALSE(fs::exists(dir / "unreachable.json"));
    }
    SUBCASE("a flag out of range: flag, value and range named, exit 2, no file") {
      // One case per kind of range: counts with a minimum, sizes where 0 means "all", (0, 1]
      // and (0, 1) fractions, open intervals, positive lists, seeds, a flag whose default is
      // not a number (--random-frames), 0-or-at-least-2, words.
      for (const auto& [arguments, message] : std::vector<std::pair<std::string, std::string>>{
               {"noise --repeats 3",
                "--repeats: 3 is out of range; expected an integer >= 4 (a variance needs several "
                "frames)"},
               {"noise --n-out -5",
                "--n-out: -5 is out of range; expected an integer >= 0 (0 = up to 4096)"},
               {"noise --density 0", "--density: 0 is out of range; expected a number in (0, 1]"},
               {"noise --exposures-us 100 -5",
                "--exposures-us: -5 is out of range; expected a number > 0"},
               {"exposure --percentile 100",
                "--percentile: 100 is out of range; expected a number in (0, 100)"},
               {"exposure --n-in -1",
                "--n-in: -1 is out of range; expected an integer >= 0 (0 = all)"},
               {"tm --random-frames -1",
                "--random-frames: -1 is out of range; expected an integer >= 0 (default: --n-in)"},
               {"tm --held-out 1",
                "--held-out: 1 is out of range; expected 0 (no check) or an integer >= 2"},
               {"tm --exposure-us -3",
                "--exposure-us: -3 is out of range; expected a number >= 0 (us; 0 = automatic)"},
               {"tm --fill 1", "--fill: 1 is out of range; expected a number in (0, 1)"},
               {"verify --held-out 1", "--held-out: 1 is out of range; expected an integer >= 2"},
               {"drift --interval-s 0", "--interval-s: 0 is out of range; expected a number > 0"},
               {"drift --seed -1", "--seed: -1 is out of range; expected an integer >= 0"},
               {"noise --log-level loud",
                "--log-level: 'loud' is not a known value; expected one of trace, debug, info, "
                "warn, error, critical, off"}}) {
        CAPTURE(arguments);
        const Run bad = run(arguments + " --quiet --device " + device + " --out " + file);
        CHECK(WIFEXITED(bad.status));
        CHECK(WEXITSTATUS(bad.status) == 2);
        const nlohmann::json line = last_line(bad.out);
        CHECK(line["code"] == "INVALID_ARGUMENT");
        CHECK(line["error"] == message);
        CHECK(line["command"] == arguments.substr(0, arguments.find(' ')));
        CHECK_FALSE(fs::exists(file));
      }
    }
    SUBCASE("a malformed device URI") {
      Run bad = run("noise --quiet --device 'sim://?n_in=abc' --out " + file);
      CHECK(bad.status != 0);
      CHECK(last_line(bad.out)["code"] == "INVALID_ARGUMENT");
    }
    fs::remove_all(dir);
  }
}
