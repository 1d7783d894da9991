// opu-train's front end: options, config files, the output contract, bad input at the edge.
#include "app.h"

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
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
    CHECK(app::finalize(wrong).message() ==
          "--method: 'backprop' is not a known value; expected one of bp, dfa, shallow");
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
          "--encoding: 'gray' is not a known value; expected one of ternary, bitplanes, "
          "stochastic");
    CHECK(finalized({"--repeats", "0"}).status().message() ==
          "--repeats: 0 is out of range; expected an integer in [1, 64]");
    CHECK(finalized({"--reference-repeats", "2000"}).status().message() ==
          "--reference-repeats: 2000 is out of range; expected an integer in [0, 1024] (0 = the "
          "device's default)");
    Result<Options> reuse = finalized({"--reference-max-age", "10"});
    REQUIRE(reuse.ok());
    CHECK(reuse->reference_max_age == 10.0);
    CHECK(finalized({"--reference-max-age", "-1"}).status().message() ==
          "--reference-max-age: -1 is out of range; expected a number >= 0 (device seconds; 0 = a "
          "fresh reference every call)");
    CHECK(finalized({"--normalize", "0.5", "0"}).status().message() ==
          "--normalize: 0 is out of range; expected a number > 0 (STD)");
    // Options set in code go through the same ranges: exactly two values, STD > 0.
    Options three;
    three.normalize = {0.1F, 0.2F, 0.3F};
    CHECK(app::finalize(three).message() ==
          "--normalize: [0.1, 0.2, 0.3] is out of range; expected two numbers MEAN STD, STD > 0");
    Options flat;
    flat.normalize = {0.5F, 0.0F};
    CHECK(app::finalize(flat).message() ==
          "--normalize: 0 is out of range; expected a number > 0 (STD)");
  }

  TEST_CASE("opu-train options: a value out of range is an error naming flag, value and range") {
    // Every flag family: integers >= 1, integers in [a, b], integers >= 0, positive reals,
    // non-negative reals, [0, 1) reals, word lists, layer-size lists, MEAN STD. Each message is
    // the flag, the value as given and the accepted range; nothing falls back to a default.
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{"--lr", "-1"}, "--lr: -1 is out of range; expected a number > 0"},
        {{"--lr=-1"}, "--lr: -1 is out of range; expected a number > 0"},
        {{"--lr", "0"}, "--lr: 0 is out of range; expected a number > 0"},
        {{"--lr", "nan"}, "--lr: nan is not a number; expected a number > 0"},
        {{"--lr", "1e39"},
         "--lr: 1e39 is out of range; expected a number > 0 that a 32-bit float holds"},
        {{"--epochs", "-3"}, "--epochs: -3 is out of range; expected an integer >= 1"},
        {{"--epochs", "0"}, "--epochs: 0 is out of range; expected an integer >= 1"},
        {{"--epochs", "2.5"}, "--epochs: 2.5 is out of range; expected an integer >= 1"},
        {{"--epochs", "many"}, "--epochs: many is not a number; expected an integer >= 1"},
        {{"--batch", "0"}, "--batch: 0 is out of range; expected an integer >= 1"},
        {{"--threads", "0"}, "--threads: 0 is out of range; expected an integer in [1, 1024]"},
        {{"--repeats", "65"}, "--repeats: 65 is out of range; expected an integer in [1, 64]"},
        {{"--bitplanes", "0"}, "--bitplanes: 0 is out of range; expected an integer in [1, 16]"},
        {{"--seed", "-1"}, "--seed: -1 is out of range; expected an integer >= 0"},
        {{"--align-every", "-1"},
         "--align-every: -1 is out of range; expected an integer >= 0 (0 = off)"},
        {{"--weight-decay", "-1"}, "--weight-decay: -1 is out of range; expected a number >= 0"},
        {{"--feedback-snr", "0"}, "--feedback-snr: 0 is out of range; expected a number > 0"},
        {{"--dropout", "1"}, "--dropout: 1 is out of range; expected a number in [0, 1)"},
        {{"--dropout", "-0.5"}, "--dropout: -0.5 is out of range; expected a number in [0, 1)"},
        {{"--input-dropout", "-1"},
         "--input-dropout: -1 is out of range; expected a number in [0, 1)"},
        {{"--momentum", "1"}, "--momentum: 1 is out of range; expected a number in [0, 1)"},
        {{"--threshold", "-0.1"},
         "--threshold: -0.1 is out of range; expected a number in [0, 1)"},
        {{"--optimizer", "rmsprop"},
         "--optimizer: 'rmsprop' is not a known value; expected one of sgd, adam"},
        {{"--model", "cnn"},
         "--model: 'cnn' is not a known value; expected one of mlp, gcn, transformer"},
        {{"--activation", "swish"},
         "--activation: 'swish' is not a known value; expected one of relu, tanh, sigmoid, gelu"},
        {{"--loss", "hinge"},
         "--loss: 'hinge' is not a known value; expected one of cross_entropy, ce, bce, mse"},
        {{"--log-level", "loud"},
         "--log-level: 'loud' is not a known value; expected one of trace, debug, info, warn, "
         "error, critical, off"},
        {{"--hidden", "256", "0"}, "--hidden: 0 is out of range; expected an integer >= 1"},
        {{"--hidden", "-5"}, "--hidden: -5 is out of range; expected an integer >= 1"},
        {{"--normalize", "nan", "1"},
         "--normalize: nan is not a number; expected a number (MEAN)"},
    };
    for (const auto& [args, message] : cases) {
      CAPTURE(args.front());
      std::vector<std::string> argv = args;
      argv.insert(argv.begin(), "opu-train");
      std::vector<char*> pointers;
      for (std::string& a : argv) pointers.push_back(a.data());
      int exit_code = -1;
      const Result<Options> parsed =
          app::parse_command_line(static_cast<int>(pointers.size()), pointers.data(), exit_code);
      CHECK(exit_code == 2);
      REQUIRE_FALSE(parsed.ok());
      CHECK(parsed.status().code() == opu::StatusCode::kInvalidArgument);
      CHECK(parsed.status().message() == message);
    }
    // Integers written otherwise are still integers; an explicit 0 is kept where 0 is allowed.
    Result<Options> written = parse({"--epochs", "1e1", "--align-every", "0", "--seed",
                                     "18446744073709551615", "--weight-decay", "0"});
    REQUIRE_MESSAGE(written.ok(), written.status().to_string());
    CHECK(written->epochs == 10);
    CHECK(written->align_every == 0);
    CHECK(written->seed == 18446744073709551615ULL);
    CHECK(written->weight_decay == 0.0F);
  }

  TEST_CASE("opu-train options: the JSON config has the same ranges, null means not set") {
    test::TempDir dir("config_ranges");
    const auto config_error = [&](const std::string& json) {
      std::ofstream(dir / "c.json") << json;
      const Result<Options> parsed = parse({"--config", dir / "c.json"});
      REQUIRE_FALSE(parsed.ok());
      CHECK(parsed.status().code() == opu::StatusCode::kInvalidArgument);
      return parsed.status().message();
    };
    const std::string where = "--config " + (dir / "c.json") + ": ";
    CHECK(config_error(R"({"lr": -1})") ==
          where + "lr: -1 is out of range; expected a number > 0");
    CHECK(config_error(R"({"epochs": -3})") ==
          where + "epochs: -3 is out of range; expected an integer >= 1");
    CHECK(config_error(R"({"epochs": 2.5})") ==
          where + "epochs: 2.5 is out of range; expected an integer >= 1");
    CHECK(config_error(R"({"epochs": "many"})") ==
          where + "epochs: \"many\" is not a number; expected an integer >= 1");
    CHECK(config_error(R"({"weight_decay": -0.001})") ==
          where + "weight_decay: -0.001 is out of range; expected a number >= 0");
    CHECK(config_error(R"({"dropout": 1})") ==
          where + "dropout: 1 is out of range; expected a number in [0, 1)");
    CHECK(config_error(R"({"input-dropout": -1})") ==
          where + "input-dropout: -1 is out of range; expected a number in [0, 1)");
    CHECK(config_error(R"({"align_every": -1})") ==
          where + "align_every: -1 is out of range; expected an integer >= 0 (0 = off)");
    CHECK(config_error(R"({"seed": -1})") ==
          where + "seed: -1 is out of range; expected an integer >= 0");
    CHECK(config_error(R"({"optimizer": ""})") ==
          where + "optimizer: '' is not a known value; expected one of sgd, adam");
    CHECK(config_error(R"({"hidden": []})") ==
          where + "hidden: [] is out of range; expected 1 to 16 layer sizes, each an integer >= 1");
    CHECK(config_error(R"({"hidden": [16, 0]})") ==
          where + "hidden: 0 is out of range; expected an integer >= 1");
    CHECK(config_error(R"({"normalize": [0.5]})") ==
          where + "normalize: [0.5] is out of range; expected two numbers MEAN STD, STD > 0");
    CHECK(config_error(R"({"share_frames": 1})") ==
          where + "share_frames: 1 is not true or false");
    // The flag still wins over the file, and is checked the same way.
    std::ofstream(dir / "ok.json") << R"({"lr": 0.5})";
    CHECK(parse({"--config", dir / "ok.json", "--lr", "-1"}).status().message() ==
          "--lr: -1 is out of range; expected a number > 0");
    CHECK(parse({"--config=" + (dir / "ok.json")})->lr == 0.5F);  // --config=FILE too

    // null (or an absent key) is "not set": the model's default applies.
    std::ofstream(dir / "null.json") << R"({"lr": null, "epochs": null, "model": "gcn",
                                           "hidden": null, "batch": null})";
    Result<Options> unset = parse({"--config", dir / "null.json"});
    REQUIRE_MESSAGE(unset.ok(), unset.status().to_string());
    CHECK_FALSE(unset->lr.has_value());
    CHECK_FALSE(unset->epochs.has_value());
    CHECK_FALSE(unset->batch.has_value());
    REQUIRE(app::finalize(*unset).ok());
    CHECK(unset->batch == 128);
    CHECK(unset->epochs == 200);
    CHECK(unset->hidden == std::vector<std::int64_t>{16});
  }

  TEST_CASE("opu-train options: defaults fill only what is not set, and a value equal to one stays") {
    // Absent: each model's own defaults (MLP 15 epochs and SGD, GCN 200 epochs and Adam; both
    // lr 0.01; GCN DFA decay 1e-4, dropout 0.1; GCN BP 5e-4, 0.5, input dropout 0.5).
    Result<Options> mlp = parse({});
    Result<Options> gcn = parse({"--model", "gcn"});
    Result<Options> gcn_bp = parse({"--model", "gcn", "--method", "bp"});
    REQUIRE((mlp.ok() && gcn.ok() && gcn_bp.ok()));
    for (Options* o : {&*mlp, &*gcn, &*gcn_bp}) {
      CHECK_FALSE(o->lr.has_value());  // parsing leaves them unset: "not set" is its own state
      CHECK_FALSE(o->epochs.has_value());
      REQUIRE(app::finalize(*o).ok());
    }
    CHECK(mlp->lr == 0.01F);
    CHECK(gcn->lr == 0.01F);
    CHECK(mlp->epochs == 15);
    CHECK(gcn->epochs == 200);
    CHECK(mlp->optimizer == "sgd");
    CHECK(gcn->optimizer == "adam");
    CHECK(mlp->align_every == 50);
    CHECK(gcn->align_every == 1);
    CHECK(gcn->weight_decay == 1e-4F);
    CHECK(gcn->dropout == 0.1F);
    CHECK(gcn_bp->weight_decay == 5e-4F);
    CHECK(gcn_bp->input_dropout == 0.5F);

    // Explicit values are kept, including those equal to a default (of this model or another).
    Result<Options> given = parse({"--model", "gcn", "--method", "bp", "--lr", "0.01",
                                   "--epochs", "15", "--weight-decay", "0", "--dropout", "0",
                                   "--input-dropout", "0", "--align-every", "50", "--optimizer",
                                   "sgd", "--hidden", "256", "256", "--bitplanes", "2"});
    REQUIRE_MESSAGE(given.ok(), given.status().to_string());
    REQUIRE(app::finalize(*given).ok());
    CHECK(given->lr == 0.01F);
    CHECK(given->epochs == 15);
    CHECK(given->weight_decay == 0.0F);
    CHECK(given->dropout == 0.0F);
    CHECK(given->input_dropout == 0.0F);
    CHECK(given->align_every == 50);
    CHECK(given->optimizer == "sgd");
    CHECK(given->hidden == std::vector<std::int64_t>{256, 256});
    CHECK(given->bitplanes == 2);

    // Values set in code are checked by finalize() with the same words.
    Options negative;
    negative.lr = -1.0F;
    CHECK(app::finalize(negative).message() == "--lr: -1 is out of range; expected a number > 0");
    negative = Options{};
    negative.epochs = -3;
    CHECK(app::finalize(negative).message() ==
          "--epochs: -3 is out of range; expected an integer >= 1");
    negative = Options{};
    negative.dropout = -0.25F;
    CHECK(app::finalize(negative).message() ==
          "--dropout: -0.25 is out of range; expected a number in [0, 1)");
    Options absent_file;
    absent_file.calibration = "/nonexistent/cal.json";
    CHECK(app::finalize(absent_file).code() == opu::StatusCode::kNotFound);
    CHECK(app::finalize(absent_file).message().find("/nonexistent/cal.json") != std::string::npos);
  }

  TEST_CASE("opu-train options: to_json and apply_json round-trip, set or not") {
    Options unset;
    const nlohmann::json blank = app::to_json(unset);
    CHECK(blank["lr"].is_null());
    CHECK(blank["epochs"].is_null());
    CHECK(blank["normalize"].is_null());
    Options back;
    REQUIRE(app::apply_json(blank, back).ok());
    CHECK(app::to_json(back) == blank);
    CHECK_FALSE(back.lr.has_value());

    Result<Options> parsed = parse({"--model", "gcn", "--lr", "0.3", "--normalize", "0.25", "2",
                                    "--seed", "18446744073709551615", "--no-share-frames"});
    REQUIRE(parsed.ok());
    REQUIRE(app::finalize(*parsed).ok());
    const nlohmann::json full = app::to_json(*parsed);
    Options again;
    REQUIRE(app::apply_json(nlohmann::json::parse(full.dump()), again).ok());  // through text
    CHECK(app::to_json(again) == full);
    CHECK(again.lr == 0.3F);
    CHECK(again.seed == 18446744073709551615ULL);
    CHECK(again.normalize == std::vector<float>{0.25F, 2.0F});
    CHECK_FALSE(again.share_frames);
    REQUIRE(app::finalize(again).ok());
    CHECK(app::to_json(again) == full);
  }

  namespace {
  struct Process {
    int status = -1;
    std::string output;  // stdout and stderr
  };
  Process run_opu_train(const std::string& arguments) {
    Process result;
    const std::string command = std::string(OPU_TRAIN_PATH) + " " + arguments + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    REQUIRE(pipe != nullptr);
    char buffer[4096];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) result.output += buffer;
    const int status = ::pclose(pipe);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
  }
  }  // namespace

  TEST_CASE("opu-train (the executable): a bad value exits 2, names it, writes nothing") {
    test::TempDir dir("cli_exit");
    test::write_idx_folder(dir.str(), test::make_blobs(64, 16, 3, 1),
                           test::make_blobs(16, 16, 3, 1), 4, 4, false);
    std::ofstream(dir / "c.json") << R"({"epochs": -3})";
    for (const auto& [arguments, named] : std::vector<std::pair<std::string, std::string>>{
             {"--lr -1", "--lr: -1 is out of range; expected a number > 0"},
             {"--lr=-1", "--lr: -1 is out of range; expected a number > 0"},
             {"--epochs -3", "--epochs: -3 is out of range; expected an integer >= 1"},
             {"--config " + (dir / "c.json"),
              "epochs: -3 is out of range; expected an integer >= 1"}}) {
      CAPTURE(arguments);
      const Process p = run_opu_train(arguments + " --data " + dir.str() + " --metrics " +
                                      (dir / "m.jsonl") + " --checkpoint " + (dir / "ckpt"));
      CHECK(p.status == 2);
      CHECK(p.output.find(named) != std::string::npos);
      CHECK(p.output.find("epoch ") == std::string::npos);  // nothing trained
      CHECK_FALSE(std::filesystem::exists(dir / "m.jsonl"));
      CHECK_FALSE(std::filesystem::exists(dir / "ckpt"));
    }
    const Process help = run_opu_train("--help");
    CHECK(help.status == 0);
    CHECK(help.output.find("a number > 0") != std::string::npos);  // the ranges are in --help
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
    auto recorded_normalization = [&](const std::optional<std::vector<float>>& normalize) {
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
    const std::vector<float> standardised = recorded_normalization(std::nullopt);
    REQUIRE(standardised.size() == 2);
    CHECK(standardised[0] == doctest::Approx(train.mean));
    CHECK(standardised[1] == doctest::Approx(train.std));
    CHECK(recorded_normalization(std::vector<float>{0.0F, 1.0F}) == std::vector<float>{0.0F, 1.0F});
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
