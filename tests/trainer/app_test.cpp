// opu-train's front end: options, config files, the output contract, bad input at the edge.
#include "app.h"

#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "calibrated_device.h"
#include "config.h"
#include "opu_sim/sim_device.h"
#include "test_support.h"
#include "trainer_test_support.h"

TEST_SUITE("trainer") {
  using namespace opu::trainer;
  using opu::Result;
  using opu::trainer::app::Options;

  namespace {
  std::string last_line(const std::string& text) {
    std::istringstream in(text);
    std::string line, last;
    while (std::getline(in, line)) {
      if (!line.empty()) last = line;
    }
    return last;
  }

  Result<Options> parse(std::vector<std::string> args) {
    args.insert(args.begin(), "opu-train");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    int exit_code = -1;
    return app::parse_command_line(static_cast<int>(argv.size()), argv.data(), exit_code);
  }
  }  // namespace

  TEST_CASE("opu-train options: model defaults, config file, flags override it") {
    Options mlp;
    REQUIRE(app::finalize(mlp).ok());
    CHECK(mlp.epochs == 15);
    CHECK(mlp.hidden == std::vector<std::int64_t>{256, 256});
    CHECK(mlp.optimizer == "sgd");
    CHECK(mlp.lr == doctest::Approx(0.01));
    Options gcn;
    gcn.model = "gcn";
    REQUIRE(app::finalize(gcn).ok());
    CHECK(gcn.epochs == 200);
    CHECK(gcn.hidden == std::vector<std::int64_t>{16});
    CHECK(gcn.optimizer == "adam");
    CHECK(gcn.weight_decay == doctest::Approx(1e-4));  // the paper's DFA recipe (default method)
    CHECK(gcn.dropout == doctest::Approx(0.1));
    CHECK(gcn.input_dropout == 0.0F);
    Options gcn_bp;
    gcn_bp.model = "gcn";
    gcn_bp.method = "bp";
    REQUIRE(app::finalize(gcn_bp).ok());
    CHECK(gcn_bp.weight_decay == doctest::Approx(5e-4));  // Kipf & Welling
    CHECK(gcn_bp.dropout == doctest::Approx(0.5));
    CHECK(gcn_bp.input_dropout == doctest::Approx(0.5));

    test::TempDir dir("config");
    std::ofstream(dir / "c.json") << R"({"method": "bp", "lr": 0.5, "weight_decay": 0.1,
                                       "hidden": [10, 20]})";
    Result<Options> o = parse({"--config", dir / "c.json", "--lr", "0.25"});
    REQUIRE(o.ok());
    CHECK(o->method == "bp");
    CHECK(o->lr == doctest::Approx(0.25));  // the flag wins
    CHECK(o->weight_decay == doctest::Approx(0.1));
    CHECK(o->hidden == std::vector<std::int64_t>{10, 20});

    std::ofstream(dir / "bad.json") << R"({"learning_rate": 0.5})";
    Result<Options> bad = parse({"--config", dir / "bad.json"});
    CHECK(bad.status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(bad.status().message().find("learning_rate") != std::string::npos);
    std::ofstream(dir / "type.json") << R"({"epochs": "many"})";
    CHECK(parse({"--config", dir / "type.json"}).status().message().find("epochs") !=
          std::string::npos);
    CHECK(parse({"--config", dir / "absent.json"}).status().code() == opu::StatusCode::kNotFound);

    Options wrong;
    wrong.method = "backprop";
    CHECK(app::finalize(wrong).message() == "--method is 'backprop', want bp, dfa or shallow");
    Options threshold;
    threshold.threshold = 1.5F;
    CHECK(app::finalize(threshold).code() == opu::StatusCode::kInvalidArgument);
    Options resume;
    resume.resume = true;
    CHECK(app::finalize(resume).message().find("--checkpoint") != std::string::npos);
  }

  TEST_CASE("opu-train options: device feedback defaults to the camera-gap remedies") {
    Options o;
    REQUIRE(app::finalize(o).ok());
    CHECK(o.encoding == "stochastic");
    CHECK(o.bitplanes == 2);
    CHECK(o.share_frames);
    CHECK(o.repeats == 4);
    CHECK(o.reference_repeats == 256);
    CHECK(o.reference_max_age == 0.0);  // a fresh reference in every call
    // Flags, then finalize() (as run_training does): the literal scheme, bit-planes keeping their
    // own default plane count, and out-of-range values named.
    const auto finalized = [&](std::vector<std::string> args) -> Result<Options> {
      Result<Options> parsed = parse(std::move(args));
      if (!parsed.ok()) return parsed.status();
      OPU_RETURN_IF_ERROR(app::finalize(*parsed));
      return parsed;
    };
    Result<Options> literal = finalized({"--encoding", "ternary", "--no-share-frames", "--repeats",
                                         "1", "--reference-repeats", "0"});
    REQUIRE(literal.ok());
    CHECK(literal->encoding == "ternary");
    CHECK(!literal->share_frames);
    CHECK(literal->repeats == 1);
    CHECK(literal->reference_repeats == 0);
    Result<Options> planes = finalized({"--encoding", "bitplanes"});
    REQUIRE(planes.ok());
    CHECK(planes->bitplanes == 4);
    CHECK(finalized({"--encoding", "gray"}).status().message() ==
          "--encoding is 'gray', want ternary, bitplanes or stochastic");
    CHECK(finalized({"--repeats", "0"}).status().message() == "--repeats is 0, want in [1, 64]");
    CHECK(finalized({"--reference-repeats", "2000"}).status().message() ==
          "--reference-repeats is 2000, want in [0, 1024]");
    Result<Options> reuse = finalized({"--reference-max-age", "10"});
    REQUIRE(reuse.ok());
    CHECK(reuse->reference_max_age == 10.0);
    CHECK(finalized({"--reference-max-age", "-1"}).status().message() ==
          "--reference-max-age is -1.000000, want device seconds >= 0 (0 = a fresh reference in "
          "every call)");
    CHECK(finalized({"--normalize", "0.5", "0"}).status().message() ==
          "--normalize is STD 0.000000, want STD > 0");
    // A config file can give any number of values; the command line takes exactly two.
    Options three;
    three.normalize = {0.1F, 0.2F, 0.3F};
    CHECK(app::finalize(three).message() == "--normalize wants two numbers MEAN STD, got 3");
  }

  TEST_CASE("opu-train: a short run prints epoch lines, a summary and a final JSON line") {
    test::TempDir dir("app_run");
    test::write_idx_folder(dir.str(), test::make_blobs(512, 16, 3, 1),
                           test::make_blobs(96, 16, 3, 1), 4, 4, true);
    for (const std::string method : {"bp", "dfa", "shallow"}) {
      Options o;
      o.method = method;
      o.data = dir.str();
      o.epochs = 2;
      o.batch = 16;
      o.hidden = {20, 20};
      o.lr = 0.05F;
      o.metrics = dir / ("m_" + method + ".jsonl");
      std::ostringstream out, err;
      Result<nlohmann::json> summary = app::run_training(o, out, err, false);
      REQUIRE_MESSAGE(summary.ok(), err.str());
      const nlohmann::json last = nlohmann::json::parse(last_line(out.str()));
      CHECK(last == *summary);
      CHECK(last["method"] == method);
      CHECK(last["epochs"] == 2);
      CHECK(last["feedback"] == (method == "dfa" ? "digital" : "none"));
      // Chance is 1/3; shallow (random hidden features) learns slowest.
      CHECK(last["test_accuracy"].get<double>() > (method == "shallow" ? 0.4 : 0.6));
      CHECK(out.str().find("epoch   2/2") != std::string::npos);
      CHECK(out.str().find("summary:") != std::string::npos);
      // Metrics: a config line, alignment lines, one line per epoch, a summary.
      std::ifstream metrics(o.metrics);
      int epochs = 0, alignments = 0;
      std::string line;
      while (std::getline(metrics, line)) {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (j["type"] == "epoch") {
          ++epochs;
          CHECK(j.contains("alignment"));
          CHECK(j.contains("wall_s"));
          CHECK(j.contains("device_time_s"));
          CHECK(j.contains("frames"));
          CHECK(j.contains("test_accuracy"));
        }
        if (j["type"] == "alignment") ++alignments;
      }
      CHECK(epochs == 2);
      CHECK(alignments > 0);
    }
  }

  TEST_CASE("opu-train: inputs are standardised with the training split's statistics") {
    test::TempDir dir("app_standardise");
    test::write_idx_folder(dir.str(), test::make_blobs(128, 16, 3, 1),
                           test::make_blobs(32, 16, 3, 2), 4, 4, false);
    Result<ImageDataset> images = load_idx_folder(dir.str());
    REQUIRE(images.ok());
    const FeatureStats train = feature_stats(images->train);
    REQUIRE(std::abs(train.mean - feature_stats(images->test).mean) >
            1e-4F);  // would be told apart
    auto recorded_normalization = [&](const std::vector<float>& normalize) {
      Options o;
      o.data = dir.str();
      o.epochs = 1;
      o.batch = 32;
      o.hidden = {8};
      o.normalize = normalize;
      o.metrics = dir / "m.jsonl";
      std::ostringstream out, err;
      REQUIRE_MESSAGE(app::run_training(o, out, err, false).ok(), err.str());
      std::ifstream metrics(o.metrics);
      std::string header;
      std::getline(metrics, header);
      return nlohmann::json::parse(header)["options"]["normalize"].get<std::vector<float>>();
    };
    const std::vector<float> standardised = recorded_normalization({});
    REQUIRE(standardised.size() == 2);
    CHECK(standardised[0] == doctest::Approx(train.mean));
    CHECK(standardised[1] == doctest::Approx(train.std));
    CHECK(recorded_normalization({0.0F, 1.0F}) == std::vector<float>{0.0F, 1.0F});
  }

  TEST_CASE("opu-train: --checkpoint then --resume ends where a straight run ends") {
    test::TempDir dir("app_resume");
    test::write_idx_folder(dir.str(), test::make_blobs(256, 16, 3, 1),
                           test::make_blobs(48, 16, 3, 1), 4, 4, false);
    Options o;
    o.data = dir.str();
    o.hidden = {12, 12};
    o.batch = 32;
    o.epochs = 3;
    std::ostringstream out, err;
    Result<nlohmann::json> straight = app::run_training(o, out, err, false);
    REQUIRE(straight.ok());
    o.checkpoint = dir / "ckpt";
    o.epochs = 1;
    REQUIRE(app::run_training(o, out, err, false).ok());
    o.epochs = 3;
    o.resume = true;
    std::ostringstream resumed_out;
    Result<nlohmann::json> resumed = app::run_training(o, resumed_out, err, false);
    REQUIRE(resumed.ok());
    CHECK(resumed_out.str().find("resuming after epoch 1") != std::string::npos);
    CHECK((*resumed)["epochs"] == 3);
    CHECK((*resumed)["final_loss"] == (*straight)["final_loss"]);  // bit for bit
    CHECK((*resumed)["test_accuracy"] == (*straight)["test_accuracy"]);
    // Another method cannot resume this checkpoint.
    o.method = "bp";
    std::ostringstream other;
    const Result<nlohmann::json> refused = app::run_training(o, other, err, false);
    CHECK(refused.status().code() == opu::StatusCode::kFailedPrecondition);
  }

  TEST_CASE("opu-train: bad input ends with an error naming it, and a JSON last line") {
    test::TempDir dir("app_bad");
    test::write_idx_folder(dir.str(), test::make_blobs(64, 16, 3, 1),
                           test::make_blobs(16, 16, 3, 1), 4, 4, false);
    auto run = [&](Options o) {
      std::ostringstream out, err;
      Result<nlohmann::json> r = app::run_training(std::move(o), out, err, false);
      const nlohmann::json last = nlohmann::json::parse(last_line(out.str()));
      CHECK(last.contains("error"));
      CHECK(last.contains("test_accuracy"));
      return std::make_pair(r.status(), err.str());
    };
    SUBCASE("missing data folder") {
      Options o;
      o.data = dir / "absent";
      const auto [status, err] = run(o);
      CHECK(status.code() == opu::StatusCode::kNotFound);
      CHECK(err.find("absent") != std::string::npos);
    }
    SUBCASE("unreachable or unknown device") {
      Options o;
      o.data = dir.str();
      o.feedback = "grpc://127.0.0.1:1";
      o.epochs = 1;
      const auto [status, err] = run(o);
      CHECK(status.code() == opu::StatusCode::kUnavailable);
      CHECK(err.find("grpc://127.0.0.1:1") != std::string::npos);
      o.feedback = "carrier-pigeon";
      CHECK(run(o).first.code() == opu::StatusCode::kInvalidArgument);
    }
    SUBCASE("NaN loss") {
      Options o;
      o.data = dir.str();
      o.lr = 1e30F;
      o.epochs = 3;
      o.method = "bp";
      const auto [status, err] = run(o);
      CHECK(status.code() == opu::StatusCode::kFailedPrecondition);
      CHECK(err.find("lower --lr") != std::string::npos);
    }
    SUBCASE("constant training images cannot be standardised") {
      test::TempDir flat("app_flat");
      LabelledData constant = test::make_blobs(16, 16, 3, 1);
      constant.features.setConstant(0.5F);
      test::write_idx_folder(flat.str(), constant, constant, 4, 4, false);
      Options o;
      o.data = flat.str();
      const auto [status, err] = run(o);
      CHECK(status.code() == opu::StatusCode::kInvalidArgument);
      CHECK(err.find("--normalize 0 1") != std::string::npos);
    }
    SUBCASE("gcn without a planetoid folder") {
      Options o;
      o.model = "gcn";
      o.data = dir.str();
      const auto [status, err] = run(o);
      CHECK(status.code() == opu::StatusCode::kNotFound);
      CHECK(err.find("cora.content") != std::string::npos);
    }
  }

  namespace {
  // What `opu-calibrate exposure` writes, in its smallest form: the exposure section only.
  void write_calibration(const std::string& path, double exposure_us,
                         const std::vector<std::int64_t>& masked) {
    const nlohmann::json exposure = {{"exposure_us", exposure_us},
                                     {"percentile", 99.9},
                                     {"target_fraction", 0.9},
                                     {"achieved_fraction", 0.9},
                                     {"saturated_fraction", 0.0},
                                     {"density", 0.5},
                                     {"n_in", 1024},
                                     {"n_out", 1024},
                                     {"dark_level_counts", 2.0},
                                     {"masked_pixels", masked},
                                     {"frames", 20},
                                     {"device_time_s", 0.01}};
    std::ofstream(path) << nlohmann::json{
        {"format", "opu-calibration"},
        {"version", 1},
        {"exposure", exposure}}.dump();
  }

  std::unique_ptr<opu::sim::Device> sim_device() {
    auto config = opu::sim::SimConfig::from_params({{"seed", "3"}});
    REQUIRE(config.ok());
    auto device = opu::sim::SimDevice::create(*config);
    REQUIRE(device.ok());
    return std::move(*device);
  }
  }  // namespace

  TEST_CASE("opu-train --calibration: the exposure travels, masked pixels project to 0") {
    test::TempDir dir("app_calibration");
    write_calibration(dir / "cal.json", 600.0, {1, 7, 500});
    std::unique_ptr<opu::sim::Device> device = sim_device();
    opu::sim::LinearOptions linear;
    Result<app::AppliedCalibration> applied =
        app::use_calibration(dir / "cal.json", device, linear);
    REQUIRE_MESSAGE(applied.ok(), applied.status().to_string());
    CHECK(applied->exposure_us == 600.0);
    CHECK(applied->masked_pixels == 3);
    CHECK(linear.exposure_us == 600.0);

    // The same calls to a device without the calibration's mask: pixels 1 and 7 differ only.
    Eigen::MatrixXf errors(10, 4);
    for (Eigen::Index i = 0; i < errors.size(); ++i) {
      errors.data()[i] = std::sin(1.7F * static_cast<float>(i));  // fixed, signs mixed
    }
    const opu::sim::LinearRequest request{
        10, 20, 4, {errors.data(), static_cast<std::size_t>(errors.size())}, linear};
    Result<opu::sim::Projections> masked = device->linear_transform(request);
    Result<opu::sim::Projections> plain = sim_device()->linear_transform(request);
    REQUIRE((masked.ok() && plain.ok()));
    CHECK(masked->info.exposure_us == 600.0);
    Eigen::MatrixXf want = plain->values;
    want.row(1).setZero();
    want.row(7).setZero();
    CHECK((plain->values.row(1).array() != 0.0F).any());
    CHECK((masked->values.array() == want.array()).all());
  }

  TEST_CASE("opu-train --calibration: a short run on sim:// uses it and records it") {
    test::TempDir dir("app_calibrated_run");
    test::write_idx_folder(dir.str(), test::make_blobs(64, 16, 3, 1),
                           test::make_blobs(16, 16, 3, 1), 4, 4, false);
    write_calibration(dir / "cal.json", 600.0, {1, 7, 500});
    Result<Options> o = parse({"--calibration", dir / "cal.json"});
    REQUIRE(o.ok());
    CHECK(o->calibration == dir / "cal.json");
    o->data = dir.str();
    o->feedback = "sim://?seed=3";
    o->epochs = 1;
    o->batch = 32;
    o->hidden = {20, 20};
    o->metrics = dir / "m.jsonl";
    std::ostringstream out, err;
    Result<nlohmann::json> summary = app::run_training(*o, out, err, false);
    REQUIRE_MESSAGE(summary.ok(), err.str());
    // Every frame took the calibrated exposure: frame time max(600, readout 400) + 100 us.
    const double per_frame_s =
        (*summary)["device_time_s"].get<double>() / (*summary)["frames"].get<double>();
    CHECK(per_frame_s == doctest::Approx(700e-6).epsilon(1e-6));
    std::ifstream metrics(o->metrics);
    std::string line;
    REQUIRE(std::getline(metrics, line));
    const nlohmann::json config = nlohmann::json::parse(line);
    CHECK(config["options"]["calibration"] == dir / "cal.json");
    CHECK(config["calibration"]["exposure_us"] == 600.0);
    CHECK(config["calibration"]["masked_pixels"] == 3);
  }

  TEST_CASE("opu-train --calibration: a bad file is an error naming the file and the field") {
    test::TempDir dir("app_bad_calibration");
    test::write_idx_folder(dir.str(), test::make_blobs(64, 16, 3, 1),
                           test::make_blobs(16, 16, 3, 1), 4, 4, false);
    Options o;
    o.data = dir.str();
    o.feedback = "sim://?seed=3";
    o.epochs = 1;
    const auto error = [&](const std::string& path) {
      o.calibration = path;
      std::ostringstream out, err;
      Result<nlohmann::json> r = app::run_training(o, out, err, false);
      REQUIRE_FALSE(r.ok());
      CHECK(nlohmann::json::parse(last_line(out.str())).contains("error"));
      CHECK(err.str().find(path) != std::string::npos);
      return r.status();
    };
    CHECK(error(dir / "absent.json").code() == opu::StatusCode::kNotFound);
    write_calibration(dir / "negative.json", -1.0, {});
    const opu::Status negative = error(dir / "negative.json");
    CHECK(negative.code() == opu::StatusCode::kInvalidArgument);
    CHECK(negative.message().find("exposure.exposure_us: got -1") != std::string::npos);
    write_calibration(dir / "long.json", 1e9, {});  // the simulator's longest is 1e5 us
    CHECK(error(dir / "long.json").code() == opu::StatusCode::kOutOfRange);
    write_calibration(dir / "pixels.json", 600.0, {2000});
    CHECK(error(dir / "pixels.json").code() == opu::StatusCode::kInvalidArgument);
  }
}
