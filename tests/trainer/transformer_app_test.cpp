// opu-train --model transformer: its options and defaults, the output contract (eval lines, a
// sample, a summary, one JSON last line, the metrics file), digital and device feedback, bad input.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "app.h"
#include "config.h"
#include "trainer_test_support.h"

TEST_SUITE("trainer") {
  using namespace opu::trainer;
  using opu::Result;
  using opu::trainer::app::Options;

  namespace {
  std::string last_line_of(const std::string& text) {
    std::istringstream in(text);
    std::string line, last;
    while (std::getline(in, line)) {
      if (!line.empty()) last = line;
    }
    return last;
  }

  /// A small text with structure a model can pick up quickly.
  std::string write_text(const test::TempDir& dir) {
    std::string text;
    for (int i = 0; i < 300; ++i) {
      text += (i % 3 == 0) ? "To be, or not to be: that is the question.\n"
                           : "Whether 'tis nobler in the mind to suffer.\n";
    }
    const std::string path = dir / "text.txt";
    std::ofstream(path) << text;
    return path;
  }

  Options tiny(const std::string& path, const std::string& method) {
    Options o;
    o.model = "transformer";
    o.method = method;
    o.data = path;
    o.layers = 1;
    o.d_model = 16;
    o.heads = 2;
    o.d_ff = 32;
    o.context = 16;
    o.batch = 4;
    o.steps = 20;
    o.eval_every = 10;
    o.eval_chars = 500;
    o.align_every = 5;
    return o;
  }
  }  // namespace

  TEST_CASE("opu-train transformer options: the reference defaults per method, and the checks") {
    Options bp;
    bp.model = "transformer";
    bp.method = "bp";
    REQUIRE(app::finalize(bp).ok());
    CHECK(bp.batch == 32);
    CHECK(bp.steps == 2000);
    CHECK(bp.lr == 1e-3F);
    CHECK(bp.schedule == "constant");
    CHECK(bp.warmup == 100);
    CHECK(bp.beta2 == 0.98F);
    CHECK(bp.optimizer == "adam");
    CHECK(bp.dropout == 0.1F);
    CHECK(bp.align_every == 100);
    Options dfa;
    dfa.model = "transformer";
    REQUIRE(app::finalize(dfa).ok());
    CHECK(dfa.lr == 5e-4F);
    CHECK(dfa.schedule == "constant");
    CHECK(dfa.warmup == 0);
    CHECK(dfa.beta2 == 0.999F);
    // Finalised options round-trip through JSON and finalise again unchanged.
    Options again;
    REQUIRE(app::apply_json(app::to_json(dfa), again).ok());
    REQUIRE(app::finalize(again).ok());
    CHECK(app::to_json(again) == app::to_json(dfa));
    // The MLP keeps its batch of 128.
    Options mlp;
    REQUIRE(app::finalize(mlp).ok());
    CHECK(mlp.batch == 128);

    Options bad = Options{};
    bad.model = "transformer";
    bad.heads = 3;
    CHECK(app::finalize(bad).message() == "--d-model: 128 is not a multiple of --heads 3");
    bad = Options{};
    bad.model = "transformer";
    bad.schedule = "noam";
    bad.warmup = 0;
    CHECK(app::finalize(bad).message().find("--warmup") != std::string::npos);
    bad = Options{};
    bad.model = "transformer";
    bad.checkpoint = "/tmp/x";
    CHECK(app::finalize(bad).code() == opu::StatusCode::kInvalidArgument);
    bad = Options{};
    bad.activation = "gelu";  // an MLP
    CHECK(app::finalize(bad).message().find("gelu is for the transformer") != std::string::npos);
    Options from_text;
    CHECK(app::apply_text("dfa-points", "mezzo", from_text).message().find("--dfa-points") !=
          std::string::npos);
    REQUIRE(app::apply_text("d-model", "64", from_text).ok());
    CHECK(from_text.d_model == 64);
  }

  TEST_CASE("opu-train --model transformer: bp, dfa (micro) and shallow runs, metrics, sample") {
    test::TempDir dir("transformer_app");
    const std::string path = write_text(dir);
    for (const std::string method : {"bp", "dfa", "shallow"}) {
      CAPTURE(method);
      Options o = tiny(path, method);
      o.dfa_points = "micro";
      o.sample = 40;
      o.metrics = dir / ("m_" + method + ".jsonl");
      std::ostringstream out, err;
      Result<nlohmann::json> summary = app::run_training(o, out, err, false);
      REQUIRE_MESSAGE(summary.ok(), err.str());
      const nlohmann::json last = nlohmann::json::parse(last_line_of(out.str()));
      CHECK(last == *summary);
      CHECK(last["model"] == "transformer");
      CHECK(last["method"] == method);
      CHECK(last["steps"] == 20);
      CHECK(last["feedback"] == (method == "dfa" ? "digital" : "none"));
      CHECK(last["val_loss"].get<double>() < last["unigram_nats"].get<double>() + 1.0);
      CHECK(last["val_perplexity"].get<double>() ==
            doctest::Approx(std::exp(last["val_loss"].get<double>())));
      CHECK(last["tokens_per_s"].get<double>() > 0.0);
      CHECK(last["sample"].get<std::string>().size() == 40);
      // Micro points: three per block.
      CHECK(last["alignment"].size() == 3);
      if (method == "bp") CHECK(last["alignment"]["block0"].get<double>() == doctest::Approx(1.0));
      CHECK(out.str().find("step     20/20") != std::string::npos);
      CHECK(out.str().find("summary: transformer") != std::string::npos);
      std::ifstream metrics(o.metrics);
      int evals = 0, alignments = 0, configs = 0, summaries = 0;
      std::string line;
      while (std::getline(metrics, line)) {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (j["type"] == "config") {
          ++configs;
          CHECK(j["vocabulary"].get<int>() > 10);
          CHECK(j["model"].get<std::string>().find("transformer L1 d16") == 0);
        }
        if (j["type"] == "eval") {
          ++evals;
          for (const char* key : {"step", "train_loss", "val_loss", "val_perplexity",
                                  "tokens_per_s", "lr", "alignment", "frames"}) {
            CHECK(j.contains(key));
          }
        }
        if (j["type"] == "alignment") ++alignments;
        if (j["type"] == "summary") ++summaries;
      }
      CHECK(configs == 1);
      CHECK(evals == 2);
      CHECK(alignments == 5);  // steps 1, 5, 10, 15, 20
      CHECK(summaries == 1);
    }
  }

  TEST_CASE("opu-train --model transformer: DFA with per-token errors through a simulated OPU") {
    test::TempDir dir("transformer_device");
    Options o = tiny(write_text(dir), "dfa");
    o.steps = 4;
    o.eval_every = 0;
    o.feedback = "sim://?camera=realistic&n_in=256&n_out=16";
    std::ostringstream out, err;
    Result<nlohmann::json> summary = app::run_training(o, out, err, false);
    REQUIRE_MESSAGE(summary.ok(), err.str());
    CHECK((*summary)["feedback"] == o.feedback);
    CHECK((*summary)["frames"].get<std::int64_t>() > 0);
    CHECK((*summary)["device_time_s"].get<double>() > 0.0);
    CHECK(out.str().find("feedback device") != std::string::npos);
  }

  TEST_CASE("opu-train --model transformer: bad input ends with an error and a JSON last line") {
    test::TempDir dir("transformer_bad");
    Options missing = tiny(dir / "absent.txt", "bp");
    std::ostringstream out, err;
    Result<nlohmann::json> r = app::run_training(missing, out, err, false);
    CHECK(r.status().code() == opu::StatusCode::kNotFound);
    nlohmann::json last = nlohmann::json::parse(last_line_of(out.str()));
    CHECK(last["error"].get<std::string>().find("absent.txt") != std::string::npos);
    CHECK(last["val_loss"].is_null());
    std::ofstream(dir / "short.txt") << "abcdefghijabcdefghij";
    Options short_text = tiny(dir / "short.txt", "bp");
    short_text.context = 32;  // 18 training characters
    std::ostringstream out2, err2;
    r = app::run_training(short_text, out2, err2, false);
    CHECK(r.status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(err2.str().find("--context 32") != std::string::npos);
  }
}
