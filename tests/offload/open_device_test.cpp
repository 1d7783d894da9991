// open_device(uri): the schemes, their parameters, and a clear INVALID_ARGUMENT naming the part of
// a malformed URI.
#include "offload/open_device.h"

#include <doctest/doctest.h>

#include "offload/server.h"
#include "offload_test_support.h"

namespace {

void check_invalid(const std::string& uri, const std::string& names) {
  CAPTURE(uri);
  auto device = opu::offload::open_device(uri);
  REQUIRE_FALSE(device.ok());
  CHECK(device.status().code() == opu::StatusCode::kInvalidArgument);
  CHECK_MESSAGE(device.status().message().find(names) != std::string::npos,
                device.status().message());
}

}  // namespace

TEST_SUITE("offload") {
  TEST_CASE("open_device: sim:// opens the in-process simulator with the URI's parameters") {
    auto device = opu::offload::open_device("sim://?seed=7&n_in=256&n_out=64&camera=ideal");
    REQUIRE_MESSAGE(device.ok(), device.status().to_string());
    const auto info = (*device)->info();
    CHECK(info.simulated);
    CHECK(info.max_n_in == 256);
    CHECK(info.max_n_out == 64);
    // The same device as one built from the same parameters.
    auto local = opu::test::make_sim();
    const auto inputs = opu::test::random_frames(256, 3, 8);
    const auto request = opu::test::transform_request(inputs, 256, 64, 3);
    CHECK((*device)->transform(request)->data == local->transform(request)->data);
    CHECK(opu::offload::open_device("sim://").ok());
    CHECK(opu::offload::open_device("sim:?n_in=64&n_out=32").ok());
  }

  TEST_CASE("open_device: malformed URIs are INVALID_ARGUMENT naming the part") {
    check_invalid("http://host:1", "scheme 'http'");
    check_invalid("no-scheme-at-all", "scheme ''");
    check_invalid("sim://?bogus=1", "bogus");
    check_invalid("sim://?n_in=abc", "n_in");
    check_invalid("sim://?seed", "seed");
    check_invalid("sim://somehost?seed=1", "takes no host");
    check_invalid("grpc://", "names no server");
    check_invalid("grpc://host", "'host' has no port");
    check_invalid("grpc://host:abc", "port 'abc'");
    check_invalid("grpc://host:0", "port '0'");
    check_invalid("grpc://host:70000", "port '70000'");
    check_invalid("grpc://:5000", "empty host");
    check_invalid("grpc://a:1,b", "'b' has no port");
    check_invalid("grpc://host:1/path", "has a path");
    check_invalid("grpc://host:1?frob=2", "unknown parameter 'frob'");
    check_invalid("grpc://host:1?ca=/x.pem", "needs grpcs://");
    check_invalid("grpc://host:1?deadline_ms=-5", "deadline_ms='-5'");
    check_invalid("grpc://host:1?retries=many", "retries='many'");
    // Values beyond what the client can honour are refused, not clamped to what it can.
    check_invalid("grpc://host:1?retries=1001",
                  "retries='1001' in 'grpc://host:1?retries=1001' is above 1000");
    check_invalid("grpc://host:1?max_message_mb=2048", "max_message_mb='2048'");
    check_invalid("grpc://host:1?max_message_mb=2048", "is above 2047");
    check_invalid("grpc://host:1?deadline_ms=86400001", "is above 86400000 (a day)");
    check_invalid("grpc://::1:5000", "IPv6 host without brackets");
  }

  TEST_CASE("open_device: files named in the URI must exist") {
    auto device = opu::offload::open_device("grpcs://host:1?ca=/nonexistent/ca.pem");
    CHECK(device.status().code() == opu::StatusCode::kNotFound);
    CHECK(device.status().message().find("/nonexistent/ca.pem") != std::string::npos);
    device = opu::offload::open_device("grpc://host:1?token=/nonexistent/token");
    CHECK(device.status().code() == opu::StatusCode::kNotFound);
  }

  TEST_CASE("open_device: remote_options_from_uri reads every parameter") {
    opu::test::TempDir dir;
    REQUIRE(opu::test::write_file(dir.file("token"), "  abc123 \n"));
    auto options = opu::offload::remote_options_from_uri(
        "grpc://10.0.0.1:5000,[::1]:5001/?token=" + dir.file("token") +
        "&deadline_ms=1500&retries=3&backoff_ms=20&max_message_mb=8&server_name=opu.lab");
    REQUIRE_MESSAGE(options.ok(), options.status().to_string());
    CHECK(options->addresses == std::vector<std::string>{"10.0.0.1:5000", "[::1]:5001"});
    CHECK_FALSE(options->tls);
    CHECK(options->token == "abc123");
    CHECK(options->deadline == std::chrono::milliseconds(1500));
    CHECK(options->retry.max_attempts == 3);
    CHECK(options->retry.initial_backoff == std::chrono::milliseconds(20));
    CHECK(options->max_message_bytes == 8 << 20);
    CHECK(options->server_name == "opu.lab");
  }

  TEST_CASE("open_device: grpc:// connects, and a token file authenticates") {
    opu::offload::ServerOptions options;
    options.token = "t0ken";
    auto server = opu::offload::Server::start(
        std::shared_ptr<opu::sim::Device>(opu::test::make_sim()), options);
    REQUIRE(server.ok());
    opu::test::TempDir dir;
    REQUIRE(opu::test::write_file(dir.file("good"), "t0ken\n"));
    REQUIRE(opu::test::write_file(dir.file("bad"), "t0kem\n"));
    const std::string base = "grpc://" + (*server)->address();
    auto device = opu::offload::open_device(base + "?token=" + dir.file("good"));
    REQUIRE_MESSAGE(device.ok(), device.status().to_string());
    CHECK((*device)->info().max_n_in == 256);
    auto wrong = opu::offload::open_device(base + "?token=" + dir.file("bad"));
    CHECK(wrong.status().code() == opu::StatusCode::kUnauthenticated);
    auto none = opu::offload::open_device(base);
    CHECK(none.status().code() == opu::StatusCode::kUnauthenticated);
  }

}  // TEST_SUITE
