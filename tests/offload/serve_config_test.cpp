// ServeConfig: one set of names for flags and JSON files; server names vs simulator names.
#include "offload/serve_config.h"

#include <doctest/doctest.h>

#include <string>
#include <tuple>
#include <vector>

#include "offload/open_device.h"
#include "offload_test_support.h"
#include "opu_sim/sim_device.h"

TEST_SUITE("offload") {
  TEST_CASE("ServeConfig: server names set server fields, the rest are simulator parameters") {
    opu::offload::ServeConfig config;
    const auto status = opu::offload::apply_serve_params({{"listen", "0.0.0.0:7000"},
                                                          {"max-message-mb", "8"},
                                                          {"serve_linear", "false"},
                                                          {"n-in", "512"},
                                                          {"camera", "ideal"},
                                                          {"summary_interval_s", "0"}},
                                                         config);
    REQUIRE(status.ok());
    CHECK(config.listen == "0.0.0.0:7000");
    CHECK(config.max_message_mb == 8.0);
    CHECK_FALSE(config.serve_linear);
    CHECK(config.summary_interval_s == 0.0);
    CHECK(config.sim_params ==
          std::map<std::string, std::string>{{"n_in", "512"}, {"camera", "ideal"}});
    auto sim = opu::sim::SimConfig::from_params(config.sim_params);
    REQUIRE(sim.ok());
    CHECK(sim->n_in == 512);
    CHECK(sim->camera.ideal);
    auto options = config.server_options();
    REQUIRE(options.ok());
    CHECK(options->max_message_bytes == 8 << 20);
    CHECK_FALSE(options->serve_linear);
  }

  TEST_CASE("ServeConfig: malformed values name the parameter") {
    opu::offload::ServeConfig config;
    auto status = opu::offload::apply_serve_params({{"max_message_mb", "lots"}}, config);
    CHECK(status.code() == opu::StatusCode::kInvalidArgument);
    CHECK(status.message() ==
          "max_message_mb (--max-message-mb): lots is not a number; expected a number in "
          "[0.004, 2047] (MiB)");
    status = opu::offload::apply_serve_params({{"serve_linear", "maybe"}}, config);
    CHECK(status.code() == opu::StatusCode::kInvalidArgument);
    status = opu::offload::apply_serve_params({{"max_inflight", "0"}}, config);
    CHECK(status.code() == opu::StatusCode::kInvalidArgument);
  }

  TEST_CASE("ServeConfig: every value out of range is refused, never clamped or replaced") {
    // One case per kind of range: integers in [a, b], reals in [a, b], booleans, words. The
    // message names the parameter (as JSON and --param write it, and as a flag), the value and
    // the range; the setting keeps its old value.
    for (const auto& [name, value, message] :
         std::vector<std::tuple<std::string, std::string, std::string>>{
             {"max_inflight", "0",
              "max_inflight (--max-inflight): 0 is out of range; expected an integer in [1, "
              "1000000]"},
             {"max-inflight", "2.5",
              "max_inflight (--max-inflight): 2.5 is out of range; expected an integer in [1, "
              "1000000]"},
             {"max_inflight", "2000000",  // was clamped to 1e6
              "max_inflight (--max-inflight): 2000000 is out of range; expected an integer in "
              "[1, 1000000]"},
             {"max_message_mb", "5000",  // was clamped to 2047
              "max_message_mb (--max-message-mb): 5000 is out of range; expected a number in "
              "[0.004, 2047] (MiB)"},
             {"max_message_mb", "-1",
              "max_message_mb (--max-message-mb): -1 is out of range; expected a number in "
              "[0.004, 2047] (MiB)"},
             {"summary_interval_s", "-1",
              "summary_interval_s (--summary-interval-s): -1 is out of range; expected a number "
              "in [0, 86400] (seconds)"},
             {"shutdown_grace_s", "1e300",
              "shutdown_grace_s (--shutdown-grace-s): 1e300 is out of range; expected a number in "
              "[0, 86400] (seconds)"},
             {"shutdown_grace_s", "nan",
              "shutdown_grace_s (--shutdown-grace-s): nan is not a number; expected a number in "
              "[0, 86400] (seconds)"},
             {"serve_linear", "maybe",
              "serve_linear (--serve-linear): 'maybe' is not a known value; expected one of true, "
              "false, 1, 0, yes, no, on, off"},
             {"log_level", "loud",
              "log_level (--log-level): 'loud' is not a known value; expected one of trace, "
              "debug, info, warn, error, off"}}) {
      CAPTURE(name);
      opu::offload::ServeConfig config;
      const opu::Status status = opu::offload::apply_serve_params({{name, value}}, config);
      CHECK(status.code() == opu::StatusCode::kInvalidArgument);
      CHECK(status.message() == message);
      CHECK(config.max_inflight == 64);
      CHECK(config.max_message_mb == 64.0);
    }
    // The edges of the ranges are accepted as given.
    opu::offload::ServeConfig edges;
    REQUIRE(
        opu::offload::apply_serve_params(
            {{"max_inflight", "1000000"}, {"max_message_mb", "2047"}, {"shutdown_grace_s", "0"}},
            edges)
            .ok());
    CHECK(edges.max_inflight == 1000000);
    CHECK(edges.max_message_mb == 2047.0);
    CHECK(edges.shutdown_grace_s == 0.0);
    // --help shows the ranges.
    for (const auto& [name, description] : opu::offload::describe_serve_params()) {
      if (name == "max_inflight")
        CHECK(description.find("[an integer in [1, 1000000]]") != std::string::npos);
    }
  }

  TEST_CASE("ServeConfig: a JSON config's values have the same ranges, one value per name") {
    opu::test::TempDir dir;
    REQUIRE(opu::test::write_file(dir.file("inflight.json"), R"({"max_inflight": 0})"));
    auto params = opu::offload::read_json_params(dir.file("inflight.json"));
    REQUIRE(params.ok());
    opu::offload::ServeConfig config;
    CHECK(opu::offload::apply_serve_params(*params, config).message() ==
          "max_inflight (--max-inflight): 0 is out of range; expected an integer in [1, 1000000]");
    REQUIRE(opu::test::write_file(dir.file("twice.json"), R"({"n-in": 64, "n_in": 128})"));
    const opu::Status twice = opu::offload::read_json_params(dir.file("twice.json")).status();
    CHECK(twice.code() == opu::StatusCode::kInvalidArgument);
    CHECK(twice.message().find("'n_in' is given twice") != std::string::npos);
    // Simulator parameters are checked by the simulator's own table, with its words.
    REQUIRE(opu::test::write_file(dir.file("seed.json"), R"({"seed": -1, "adc_bits": 8})"));
    params = opu::offload::read_json_params(dir.file("seed.json"));
    REQUIRE(params.ok());
    config = {};
    REQUIRE(opu::offload::apply_serve_params(*params, config).ok());
    CHECK(opu::sim::SimConfig::from_params(config.sim_params).status().message() ==
          "sim parameter 'seed': value '-1' is not an integer in [0, 18446744073709551615]");
  }

  TEST_CASE("ServeConfig: JSON files, TLS and token files") {
    opu::test::TempDir dir;
    REQUIRE(opu::test::write_file(dir.file("serve.json"),
                                  R"({"listen": "127.0.0.1:0", "seed": 11, "drift_tau_s": 2.5,
                                    "shot-noise": false, "token_file": ")" +
                                      dir.file("token") + R"("})"));
    REQUIRE(opu::test::write_file(dir.file("token"), "abc\n"));
    auto params = opu::offload::read_json_params(dir.file("serve.json"));
    REQUIRE_MESSAGE(params.ok(), params.status().to_string());
    CHECK(params->at("seed") == "11");
    CHECK(params->at("drift_tau_s") == "2.5");
    CHECK(params->at("shot_noise") == "false");
    opu::offload::ServeConfig config;
    REQUIRE(opu::offload::apply_serve_params(*params, config).ok());
    auto options = config.server_options();
    REQUIRE(options.ok());
    CHECK(options->token == "abc");
    auto sim = opu::sim::SimConfig::from_params(config.sim_params);
    REQUIRE_MESSAGE(sim.ok(), sim.status().to_string());
    CHECK(sim->seed == 11);
    CHECK(sim->drift_tau_s == 2.5);
    CHECK_FALSE(sim->camera.shot_noise);

    REQUIRE(opu::test::write_file(dir.file("bad.json"), "[1, 2]"));
    CHECK(opu::offload::read_json_params(dir.file("bad.json")).status().code() ==
          opu::StatusCode::kInvalidArgument);
    REQUIRE(opu::test::write_file(dir.file("broken.json"), "{\"seed\": "));
    CHECK(opu::offload::read_json_params(dir.file("broken.json")).status().code() ==
          opu::StatusCode::kInvalidArgument);
    REQUIRE(opu::test::write_file(dir.file("nested.json"), R"({"camera": {"ideal": true}})"));
    CHECK(opu::offload::read_json_params(dir.file("nested.json"))
              .status()
              .message()
              .find("'camera' must be") != std::string::npos);
    CHECK(opu::offload::read_json_params(dir.file("missing.json")).status().code() ==
          opu::StatusCode::kNotFound);

    config = {};
    config.tls_cert_file = dir.file("token");
    auto half_tls = config.server_options();
    CHECK(half_tls.status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(half_tls.status().message().find("--tls-key") != std::string::npos);
  }

  TEST_CASE("Simulator parameters (sim://, --param, flags): field, value and range, once each") {
    const auto error = [](const std::map<std::string, std::string>& params) {
      const opu::Status status = opu::sim::SimConfig::from_params(params).status();
      CHECK(status.code() == opu::StatusCode::kInvalidArgument);
      return status.message();
    };
    // Integers in a range, integers the type cannot hold, reals in a range, fractions,
    // booleans, words.
    CHECK(error({{"adc_bits", "0"}}) == "sim parameter 'adc_bits' is 0, want a value in [1, 16]");
    CHECK(error({{"n_out", "0"}}) == "sim parameter 'n_out' is 0, want a value in [1, 2147483648]");
    CHECK(error({{"seed", "-1"}}) ==
          "sim parameter 'seed': value '-1' is not an integer in [0, 18446744073709551615]");
    CHECK(error({{"threads", "99999999999"}}) ==
          "sim parameter 'threads': value '99999999999' is not an integer in [-2147483648, "
          "2147483647]");
    CHECK(error({{"threads", "0"}}) == "sim parameter 'threads' is 0, want a value in [1, 1024]");
    CHECK(error({{"exposure_us", "-5"}}) ==
          "sim parameter 'exposure_us' is -5, want a value in [1, 100000]");
    CHECK(error({{"read_noise_e", "nan"}}) ==
          "sim parameter 'read_noise_e': value 'nan' is not a finite number");
    CHECK(error({{"target_fill", "1.5"}}) ==
          "sim parameter 'target_fill' is 1.5, want a value in [0, 1]");
    CHECK(error({{"shot_noise", "maybe"}}) ==
          "sim parameter 'shot_noise': value 'maybe' is not a boolean (true/false, 1/0, on/off)");
    CHECK(error({{"fft_planning", "fast"}}) ==
          "sim parameter 'fft_planning': value 'fast' is not one of estimate, measure");
    // A name given twice in a URI is an error, not "the last one wins".
    const opu::Status twice = opu::sim::parse_query("seed=1&n_in=64&seed=2").status();
    CHECK(twice.code() == opu::StatusCode::kInvalidArgument);
    CHECK(twice.message() ==
          "query: 'seed' is given twice ('1' and '2'), want each parameter once");
    CHECK(opu::offload::open_device("sim://?seed=1&seed=2")
              .status()
              .message()
              .find("'seed' is given twice") != std::string::npos);
  }

}  // TEST_SUITE
