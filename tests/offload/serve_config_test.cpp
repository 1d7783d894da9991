// ServeConfig: one set of names for flags and JSON files; server names vs simulator names.
#include "offload/serve_config.h"

#include <doctest/doctest.h>

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
    CHECK(status.message().find("max_message_mb is 'lots'") != std::string::npos);
    status = opu::offload::apply_serve_params({{"serve_linear", "maybe"}}, config);
    CHECK(status.code() == opu::StatusCode::kInvalidArgument);
    status = opu::offload::apply_serve_params({{"max_inflight", "0"}}, config);
    CHECK(status.code() == opu::StatusCode::kInvalidArgument);
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

}  // TEST_SUITE
