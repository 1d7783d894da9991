// opu-study: sweep specs and their errors, resumable sweeps that give the same files, failures
// that are recorded while the sweep goes on.
#include "study.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "ledger.h"
#include "spec.h"
#include "test_support.h"

TEST_SUITE("trainer") {
  using namespace opu::trainer::study;
  namespace fs = std::filesystem;

  namespace {

  // The sweeps train on Cora from the repository's data/ folder; a missing file fails them.
  std::string cora_dir() { return opu::test::data_dir() + "/planetoid"; }

  // A 5-epoch GCN on Cora: about 0.1 s a run.
  StudySpec tiny_spec() {
    StudySpec spec;
    spec.train = {
        {"model", "gcn"}, {"epochs", 5}, {"data", cora_dir()}};
    spec.devices = {"sim://?n_out=64"};
    spec.seeds = {1, 2};
    spec.snr_batch = 16;
    spec.snr_repeats = 3;
    return spec;
  }

  SweepAxis axis(const std::string& text) {
    opu::Result<SweepAxis> parsed = parse_sweep(text);
    REQUIRE_MESSAGE(parsed.ok(), parsed.status().to_string());
    return *parsed;
  }

  fs::path fresh_dir(const std::string& name) {
    // The process id keeps concurrent test runs (ctest -j) out of each other's way.
    const fs::path dir =
        fs::temp_directory_path() / ("opu_study_test_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(dir);
    return dir;
  }

  std::string read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // runs.jsonl without its one wall-clock field.
  std::string runs_without_wall_time(const fs::path& dir) {
    std::istringstream in(read(dir / "runs.jsonl"));
    std::string line, out;
    while (std::getline(in, line)) {
      nlohmann::json record = nlohmann::json::parse(line);
      record.erase("wall_s");
      out += record.dump() + "\n";
    }
    return out;
  }

  void check_same_final_files(const fs::path& a, const fs::path& b) {
    CHECK(runs_without_wall_time(a) == runs_without_wall_time(b));
    CHECK(read(a / "summary.csv") == read(b / "summary.csv"));
    std::int64_t plot_files = 0;
    for (const auto& entry : fs::directory_iterator(a / "plots")) {
      CAPTURE(entry.path().filename().string());
      CHECK(read(entry.path()) == read(b / "plots" / entry.path().filename()));
      ++plot_files;
    }
    CHECK(plot_files > 0);
  }

  StudyOutcome run(const StudySpec& spec, const fs::path& dir,
                   std::optional<std::int64_t> max_runs = std::nullopt) {
    RunSettings settings;
    settings.out_dir = dir.string();
    settings.max_runs = max_runs;
    settings.gnuplot = "";  // the .dat and .gp files are compared; rendering is gnuplot's job
    opu::Result<StudyOutcome> outcome = run_study(spec, settings);
    REQUIRE_MESSAGE(outcome.ok(), outcome.status().to_string());
    return *outcome;
  }

  }  // namespace

  TEST_CASE("opu-study spec: sweep syntax, canonical points") {
    CHECK(axis("adc_bits=2,4,8").values == std::vector<std::string>{"2", "4", "8"});
    CHECK(axis("adc_bits=1:4").values == std::vector<std::string>{"1", "2", "3", "4"});
    CHECK(axis("threshold=0.05:0.15:0.05").values ==
          std::vector<std::string>{"0.05", "0.1", "0.15"});
    StudySpec spec = tiny_spec();
    spec.sweeps = {axis("adc_bits=4,8"), axis("snr=10")};
    spec.matched_control = true;
    spec.exact_control = true;
    std::vector<std::string> keys;
    for (const Point& p : expand_points(spec)) keys.push_back(p.key);
    CHECK(keys == std::vector<std::string>{"adc_bits=4", "adc_bits=4/matched", "adc_bits=8",
                                           "adc_bits=8/matched", "snr=10", "exact"});
    opu::Result<std::string> uri = point_device_uri("sim://?adc_bits=10", expand_points(spec)[2]);
    REQUIRE(uri.ok());
    CHECK(*uri == "sim://?adc_bits=8");
    // The photon budget becomes the gain at the configured bit depth.
    opu::Result<std::string> budget =
        point_device_uri("sim://?adc_bits=8", {"full_well_e=2550", "full_well_e", "2550"});
    REQUIRE(budget.ok());
    CHECK(*budget == "sim://?adc_bits=8&gain_e_per_count=10");
  }

  TEST_CASE("opu-study spec: unknown parameter, empty range, bad value are named") {
    opu::Status unknown = parse_sweep("photon_count=1,2").status();
    CHECK(unknown.code() == opu::StatusCode::kInvalidArgument);
    CHECK(unknown.message().find("unknown parameter 'photon_count'") != std::string::npos);
    for (const char* empty : {"adc_bits=", "adc_bits=,", "adc_bits=8:2"}) {
      CAPTURE(empty);
      const opu::Status status = parse_sweep(empty).status();
      CHECK(status.code() == opu::StatusCode::kInvalidArgument);
      CHECK(status.message().find("empty") != std::string::npos);
    }
    CHECK(parse_sweep("adc_bits").status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(parse_sweep("adc_bits=2:x").status().message().find("'x'") != std::string::npos);
    CHECK(parse_sweep("adc_bits=2,2").status().message().find("twice") != std::string::npos);

    auto invalid = [](const std::string& sweep) {
      StudySpec spec = tiny_spec();
      spec.sweeps = {axis(sweep)};
      return validate(spec);
    };
    for (const auto& [sweep, named] : std::vector<std::pair<std::string, std::string>>{
             {"adc_bits=8,x", "adc_bits"},    // not an integer
             {"adc_bits=20", "adc_bits"},     // out of the simulator's range
             {"threshold=1.5", "threshold"},  // opu-train's range
             {"threshold=abc", "abc"},
             {"bitplanes=2.5", "bitplanes"},
             {"encoding=gray", "encoding"},
             {"snr=0", "feedback-snr"}}) {
      CAPTURE(sweep);
      const opu::Status status = invalid(sweep);
      CHECK(status.code() == opu::StatusCode::kInvalidArgument);
      CHECK(status.message().find(named) != std::string::npos);
    }
    // A threshold only means something to the ternary code, bit-planes to the bit-plane code:
    // sweeping either selects its encoding, whatever opu-train's default encoding is.
    for (const auto& [sweep, encoding] : std::vector<std::pair<std::string, std::string>>{
             {"threshold=0.2", "ternary"}, {"bitplanes=3", "bitplanes"}}) {
      StudySpec spec = tiny_spec();
      spec.sweeps = {axis(sweep)};
      const std::vector<Point> points = expand_points(spec);
      REQUIRE(!points.empty());
      opu::Result<opu::trainer::app::Options> options =
          run_options(spec, points.front(), 1, "sim://", 0.0);
      REQUIRE_MESSAGE(options.ok(), options.status().to_string());
      CHECK(options->encoding == encoding);
    }
    StudySpec remote = tiny_spec();
    remote.devices = {"grpc://127.0.0.1:1"};
    remote.sweeps = {axis("adc_bits=4")};
    CHECK(validate(remote).message().find("not sim://") != std::string::npos);
    StudySpec bp = tiny_spec();
    bp.train["method"] = "bp";
    bp.sweeps = {axis("threshold=0.1")};
    CHECK(validate(bp).message().find("want dfa") != std::string::npos);
  }

  TEST_CASE("opu-study spec: numbers out of range are named with the value and the range") {
    StudySpec spec = tiny_spec();
    spec.sweeps = {axis("threshold=0.1")};
    REQUIRE(validate(spec).ok());
    StudySpec few = spec;
    few.snr_repeats = 1;
    CHECK(validate(few).message() ==
          "--snr-repeats: 1 is out of range; expected an integer in [2, 1024]");
    StudySpec none = spec;
    none.snr_batch = 0;
    CHECK(validate(none).message() ==
          "--snr-batch: 0 is out of range; expected an integer in [1, 65536]");
    StudySpec twice = spec;
    twice.seeds = {3, 1, 3};
    CHECK(validate(twice).message() == "--seeds: 3 is listed twice; expected distinct seeds");
    // opu-train's options (--config, --train) have opu-train's ranges: -3 epochs is no default.
    for (const auto& [train, message] : std::vector<std::pair<nlohmann::json, std::string>>{
             {{{"epochs", -3}}, "epochs: -3 is out of range; expected an integer >= 1"},
             {{{"lr", -1}}, "lr: -1 is out of range; expected a number > 0"},
             {{{"dropout", 1.5}}, "dropout: 1.5 is out of range; expected a number in [0, 1)"},
             {{{"weight_decay", -1}},
              "weight_decay: -1 is out of range; expected a number >= 0"}}) {
      StudySpec bad = spec;
      bad.train.update(train);
      CHECK(validate(bad).message() == "training options (--config, --train): " + message);
    }
    // Swept values go through the same ranges as the flags they stand for.
    for (const auto& [sweep, message] : std::vector<std::pair<std::string, std::string>>{
             {"threshold=1.5",
              "--sweep threshold=1.5: --threshold: 1.5 is out of range; expected a number in "
              "[0, 1)"},
             {"bitplanes=17",
              "--sweep bitplanes=17: --bitplanes: 17 is out of range; expected an integer in "
              "[1, 16]"},
             {"snr=-1",
              "--sweep snr=-1: --feedback-snr: -1 is out of range; expected a number > 0"},
             {"full_well_e=-5",
              "--sweep full_well_e=-5: -5 is out of range; expected a number > 0 (electrons at "
              "full scale)"}}) {
      CAPTURE(sweep);
      StudySpec bad = tiny_spec();
      bad.sweeps = {axis(sweep)};
      CHECK(validate(bad).message() == message);
    }
    RunSettings settings;
    settings.out_dir = fresh_dir("negative_max_runs").string();
    settings.max_runs = -1;
    CHECK(run_study(spec, settings).status().message() ==
          "--max-runs: -1 is out of range; expected an integer >= 0 (not given: no limit)");
    CHECK_FALSE(fs::exists(settings.out_dir));
  }

  TEST_CASE("opu-study (the executable): bad flags exit 2, name the value, create nothing") {
    const fs::path out = fresh_dir("cli");
    const auto study = [&](const std::string& arguments) {
      const std::string command =
          std::string(OPU_STUDY_PATH) + " --out " + out.string() + " " + arguments + " 2>&1";
      std::string output;
      FILE* pipe = ::popen(command.c_str(), "r");
      REQUIRE(pipe != nullptr);
      char buffer[4096];
      while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
      const int status = ::pclose(pipe);
      return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, output);
    };
    for (const auto& [arguments, message] : std::vector<std::pair<std::string, std::string>>{
             {"--sweep snr=1 --snr-repeats 1",
              "--snr-repeats: 1 is out of range; expected an integer in [2, 1024]"},
             {"--sweep snr=1 --snr-batch 0",
              "--snr-batch: 0 is out of range; expected an integer in [1, 65536]"},
             {"--sweep snr=1 --max-runs -1",
              "--max-runs: -1 is out of range; expected an integer >= 0"},
             {"--sweep snr=1 --seeds 1,-2",
              "--seeds: -2 is out of range; expected an integer >= 0"},
             {"--sweep snr=1 --controls both",
              "--controls: 'both' is not a known value; expected one of exact, matched"},
             {"--sweep snr=1 --log-level loud", "--log-level: 'loud' is not a known value"},
             {"--sweep snr=1 --train epochs=-3",
              "epochs: -3 is out of range; expected an integer >= 1"},
             {"--sweep snr=1 --train lr=-1", "lr: -1 is out of range; expected a number > 0"},
             {"--sweep threshold=1.5",
              "--threshold: 1.5 is out of range; expected a number in [0, 1)"}}) {
      CAPTURE(arguments);
      const auto [status, output] = study(arguments);
      CHECK(status == 2);
      CHECK(output.find(message) != std::string::npos);
      CHECK_FALSE(fs::exists(out));
    }
  }

  TEST_CASE("opu-study: a sweep stopped halfway and resumed writes the same files") {
    StudySpec spec = tiny_spec();
    spec.sweeps = {axis("adc_bits=3,8"), axis("threshold=0.05,0.3")};
    spec.matched_control = true;
    spec.exact_control = true;
    const fs::path whole = fresh_dir("whole");
    const StudyOutcome all = run(spec, whole);
    CHECK(all.runs == 18);  // (4 device + 4 matched + 1 exact) x 2 seeds
    CHECK(all.ran == 18);
    CHECK(all.failed == 0);
    CHECK(all.complete);

    const fs::path parts = fresh_dir("parts");
    const StudyOutcome first = run(spec, parts, 7);
    CHECK(first.ran == 7);
    CHECK_FALSE(first.complete);
    // A kill in the middle of a write leaves a torn line: it must be skipped, its run redone.
    std::ofstream(parts / "ledger.jsonl", std::ios::app) << R"({"key":"adc_bits=8#seed=1","po)";
    // The rest on two workers (replicas of the same simulated device).
    spec.devices = {"sim://?n_out=64", "sim://?n_out=64"};
    const StudyOutcome rest = run(spec, parts);
    CHECK(rest.reused == 7);
    CHECK(rest.ran == 11);
    CHECK(rest.complete);
    check_same_final_files(whole, parts);

    // Nothing is rerun once everything is in the ledger.
    const StudyOutcome again = run(spec, parts);
    CHECK(again.ran == 0);
    CHECK(again.reused == 18);
  }

  TEST_CASE("opu-study: the SNR figures of device points and matched controls") {
    StudySpec spec = tiny_spec();
    spec.seeds = {1};
    spec.sweeps = {axis("adc_bits=3,10")};
    spec.matched_control = true;
    const fs::path dir = fresh_dir("snr");
    run(spec, dir);
    std::istringstream in(read(dir / "runs.jsonl"));
    std::vector<nlohmann::json> records;
    for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
    REQUIRE(records.size() == 4);
    const double snr3 = records[0]["snr"]["measured"].get<double>();
    const double snr10 = records[2]["snr"]["measured"].get<double>();
    CHECK(snr3 < snr10);  // 3-bit quantisation is noisier
    CHECK(records[0]["snr"]["predicted"].is_number());
    CHECK(records[2]["snr"]["correlation"].get<double>() > 0.9);
    CHECK(records[0]["snr"]["correlation"] < records[2]["snr"]["correlation"]);
    // The matched control's noise is set to the device's SNR at that point.
    CHECK(records[1]["feedback"] == "digital-noisy");
    CHECK(records[1]["feedback_snr"].get<double>() == snr3);
    CHECK(records[1]["snr"]["target"].get<double>() == snr3);
    CHECK(records[0]["alignment_history"]["h1"].size() == 5);
  }

  TEST_CASE("opu-study: a device that fails marks its runs failed and the sweep goes on") {
    SUBCASE("mid-run: the device refuses the training batch") {
      // max_batch 100 passes the SNR measurement (16 vectors) and fails at the first training
      // step (Cora's 140 training nodes).
      StudySpec spec = tiny_spec();
      spec.sweeps = {axis("max_batch=100,65536")};
      const fs::path dir = fresh_dir("fail_mid");
      const StudyOutcome outcome = run(spec, dir);
      CHECK(outcome.complete);
      CHECK(outcome.failed == 2);
      const std::string runs = read(dir / "runs.jsonl");
      CHECK(runs.find("\"status\":\"failed\"") != std::string::npos);
      CHECK(runs.find("batch 140 above device max_batch 100") != std::string::npos);
      const std::string summary = read(dir / "summary.csv");
      CHECK(summary.find("max_batch=100,max_batch,100,device,0,2") != std::string::npos);
      CHECK(summary.find("max_batch=65536,max_batch,65536,device,2,0") != std::string::npos);
    }
    SUBCASE("unreachable: a closed port") {
      StudySpec spec = tiny_spec();
      spec.devices = {"grpc://127.0.0.1:1?deadline_ms=200&retries=1"};
      spec.sweeps = {axis("threshold=0.1")};
      spec.exact_control = true;
      const fs::path dir = fresh_dir("fail_closed");
      const StudyOutcome outcome = run(spec, dir);
      CHECK(outcome.complete);
      CHECK(outcome.failed == 2);  // the device point; the digital control still trains
      CHECK(read(dir / "runs.jsonl").find("UNAVAILABLE") != std::string::npos);
      CHECK(read(dir / "summary.csv").find("exact,,,exact,2,0") != std::string::npos);
    }
  }
}
