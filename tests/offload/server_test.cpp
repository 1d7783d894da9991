// Server: validation codes and messages, authentication, size limits, admission, the exception
// guard, graceful shutdown, and a concurrent hammer whose counts must match the server's summary.
#include "offload/server.h"

#include <doctest/doctest.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cmath>
#include <future>
#include <latch>
#include <limits>
#include <thread>

#include "offload_test_support.h"
#include "opu/v1/opu.grpc.pb.h"

namespace {

namespace pb = ::opu::v1;
using opu::offload::Server;
using opu::offload::ServerOptions;

constexpr std::int64_t kNIn = 256;
constexpr std::int64_t kNOut = 64;

std::unique_ptr<Server> start_server(ServerOptions options = {},
                                     std::shared_ptr<opu::sim::Device> device = nullptr) {
  if (!device) device = opu::test::make_sim();
  auto server = Server::start(std::move(device), std::move(options));
  REQUIRE_MESSAGE(server.ok(), server.status().to_string());
  return std::move(server).value();
}

std::unique_ptr<pb::OpuDevice::Stub> raw_stub(const Server& server) {
  return pb::OpuDevice::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
}

pb::TransformRequest good_transform(std::int64_t batch = 4, std::uint64_t seed = 11) {
  pb::TransformRequest request;
  request.set_n_in(kNIn);
  request.set_n_out(kNOut);
  request.set_batch(batch);
  const auto frames = opu::test::random_frames(kNIn, batch, seed);
  request.set_inputs(frames.data(), frames.size());
  request.set_request_id(42);
  return request;
}

pb::LinearTransformRequest good_linear(std::int64_t batch = 3) {
  pb::LinearTransformRequest request;
  request.set_n_in(10);
  request.set_n_out(kNOut);
  request.set_batch(batch);
  const auto values = opu::test::random_values(10, batch, 5);
  request.set_values(values.data(), values.size() * sizeof(float));
  request.set_encoding(pb::TERNARY);
  request.set_threshold(0.1F);
  request.set_request_id(43);
  return request;
}

grpc::Status call(pb::OpuDevice::Stub& stub, const pb::TransformRequest& request,
                  pb::TransformResponse* response, const std::string& token = "") {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!token.empty()) context.AddMetadata("authorization", token);
  return stub.Transform(&context, request, response);
}

grpc::Status call(pb::OpuDevice::Stub& stub, const pb::LinearTransformRequest& request,
                  pb::LinearTransformResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return stub.LinearTransform(&context, request, response);
}

// The server still answers a valid request correctly: the same frames a local device gives (ideal
// camera, no drift: frames do not depend on device time).
void check_still_serves(pb::OpuDevice::Stub& stub, const std::string& token = "") {
  const pb::TransformRequest request = good_transform(4, 99);
  pb::TransformResponse response;
  const grpc::Status status = call(stub, request, &response, token);
  REQUIRE_MESSAGE(status.ok(), status.error_message());
  auto local = opu::test::make_sim();
  const auto inputs = opu::test::random_frames(kNIn, 4, 99);
  auto want = local->transform(opu::test::transform_request(inputs, kNIn, kNOut, 4));
  REQUIRE(want.ok());
  CHECK(response.request_id() == 42);
  CHECK(response.frames() == std::string(want->data.begin(), want->data.end()));
}

struct BadTransform {
  const char* name;
  std::function<void(pb::TransformRequest&)> mutate;
  grpc::StatusCode code;
  const char* message;
};

}  // namespace

TEST_SUITE("offload") {
  TEST_CASE("Server: every malformed Transform gets its code and an actionable message") {
    auto server = start_server();
    auto stub = raw_stub(*server);
    const std::vector<BadTransform> cases = {
        {"short inputs", [](auto& r) { r.mutable_inputs()->resize(96); },
         grpc::StatusCode::INVALID_ARGUMENT,
         "Transform: inputs has 96 bytes, want batch*ceil(n_in/8) = 128"},
        {"long inputs", [](auto& r) { r.mutable_inputs()->append("x"); },
         grpc::StatusCode::INVALID_ARGUMENT, "inputs has 129 bytes"},
        {"n_in zero", [](auto& r) { r.set_n_in(0); }, grpc::StatusCode::INVALID_ARGUMENT,
         "Transform: n_in is 0, want >= 1"},
        {"n_out zero", [](auto& r) { r.set_n_out(0); }, grpc::StatusCode::INVALID_ARGUMENT,
         "Transform: n_out is 0, want >= 1"},
        {"batch zero", [](auto& r) { r.set_batch(0); }, grpc::StatusCode::INVALID_ARGUMENT,
         "Transform: batch is 0, want >= 1"},
        {"negative batch", [](auto& r) { r.set_batch(-3); }, grpc::StatusCode::INVALID_ARGUMENT,
         "batch is -3"},
        {"n_in above max", [](auto& r) { r.set_n_in(70000); }, grpc::StatusCode::OUT_OF_RANGE,
         "Transform: n_in 70000 above device max_n_in 256"},
        {"n_out above max", [](auto& r) { r.set_n_out(65); }, grpc::StatusCode::OUT_OF_RANGE,
         "Transform: n_out 65 above device max_n_out 64"},
        {"negative exposure", [](auto& r) { r.set_exposure_us(-1.0); },
         grpc::StatusCode::INVALID_ARGUMENT, "exposure_us"},
        {"NaN exposure", [](auto& r) { r.set_exposure_us(std::nan("")); },
         grpc::StatusCode::INVALID_ARGUMENT, "exposure_us"},
        {"exposure above max", [](auto& r) { r.set_exposure_us(1e12); },
         grpc::StatusCode::OUT_OF_RANGE, "above device max_exposure_us"},
    };
    for (const BadTransform& bad : cases) {
      CAPTURE(bad.name);
      pb::TransformRequest request = good_transform();
      bad.mutate(request);
      pb::TransformResponse response;
      const grpc::Status status = call(*stub, request, &response);
      CHECK(status.error_code() == bad.code);
      CHECK_MESSAGE(status.error_message().find(bad.message) != std::string::npos,
                    status.error_message());
      check_still_serves(*stub);
    }
    const auto stats = server->stats();
    CHECK(stats.by_code[static_cast<int>(opu::StatusCode::kInvalidArgument)] == 8);
    CHECK(stats.by_code[static_cast<int>(opu::StatusCode::kOutOfRange)] == 3);
  }

  TEST_CASE("Server: every malformed LinearTransform gets its code and an actionable message") {
    auto server = start_server();
    auto stub = raw_stub(*server);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    struct Bad {
      const char* name;
      std::function<void(pb::LinearTransformRequest&)> mutate;
      grpc::StatusCode code;
      const char* message;
    };
    const std::vector<Bad> cases = {
        {"NaN value", [&](auto& r) { std::memcpy(r.mutable_values()->data() + 4 * 13, &nan, 4); },
         grpc::StatusCode::INVALID_ARGUMENT, "values[13] (sample 1, feature 3) is nan"},
        {"infinite value", [&](auto& r) { std::memcpy(r.mutable_values()->data(), &inf, 4); },
         grpc::StatusCode::INVALID_ARGUMENT, "values[0] (sample 0, feature 0) is inf"},
        {"wrong byte count", [](auto& r) { r.mutable_values()->resize(100); },
         grpc::StatusCode::INVALID_ARGUMENT, "values has 100 bytes, want 4*batch*n_in = 120"},
        {"unset encoding", [](auto& r) { r.set_encoding(pb::ENCODING_UNSPECIFIED); },
         grpc::StatusCode::INVALID_ARGUMENT,
         "encoding 0 unknown, want TERNARY (1), BITPLANES (2) or STOCHASTIC (3)"},
        {"unknown encoding", [](auto& r) { r.set_encoding(static_cast<pb::Encoding>(7)); },
         grpc::StatusCode::INVALID_ARGUMENT, "encoding 7 unknown"},
        {"bitplanes zero",
         [](auto& r) {
           r.set_encoding(pb::BITPLANES);
           r.set_bitplanes(0);
         },
         grpc::StatusCode::INVALID_ARGUMENT, "bitplanes is 0, want 1..16"},
        {"threshold above 1", [](auto& r) { r.set_threshold(1.5F); },
         grpc::StatusCode::INVALID_ARGUMENT, "threshold"},
        {"n_in zero", [](auto& r) { r.set_n_in(0); }, grpc::StatusCode::INVALID_ARGUMENT,
         "LinearTransform: n_in is 0"},
        {"batch zero", [](auto& r) { r.set_batch(0); }, grpc::StatusCode::INVALID_ARGUMENT,
         "LinearTransform: batch is 0"},
        {"n_out above max", [](auto& r) { r.set_n_out(1000); }, grpc::StatusCode::OUT_OF_RANGE,
         "n_out 1000 above device max_n_out 64"},
        {"n_in above max", [](auto& r) { r.set_n_in(100000); }, grpc::StatusCode::OUT_OF_RANGE,
         "n_in 100000 above device max_n_in 256"},
        {"negative exposure", [](auto& r) { r.set_exposure_us(-5.0); },
         grpc::StatusCode::INVALID_ARGUMENT, "LinearTransform: exposure_us is -5"},
        {"exposure above max", [](auto& r) { r.set_exposure_us(1e12); },
         grpc::StatusCode::OUT_OF_RANGE, "above device max_exposure_us"},
        {"negative reference age", [](auto& r) { r.set_reference_max_age_s(-2.0); },
         grpc::StatusCode::INVALID_ARGUMENT,
         "LinearTransform: reference_max_age_s is -2.000000, want device seconds >= 0"},
    };
    for (const Bad& bad : cases) {
      CAPTURE(bad.name);
      pb::LinearTransformRequest request = good_linear();
      bad.mutate(request);
      pb::LinearTransformResponse response;
      const grpc::Status status = call(*stub, request, &response);
      CHECK(status.error_code() == bad.code);
      CHECK_MESSAGE(status.error_message().find(bad.message) != std::string::npos,
                    status.error_message());
      // The RPC is named once: the simulator's messages already start with it.
      CHECK_MESSAGE(status.error_message().find("LinearTransform: LinearTransform") ==
                        std::string::npos,
                    status.error_message());
      check_still_serves(*stub);
    }
    // And a good linear request still works.
    pb::LinearTransformResponse response;
    const grpc::Status status = call(*stub, good_linear(), &response);
    REQUIRE_MESSAGE(status.ok(), status.error_message());
    CHECK(response.projections().size() == 3 * kNOut * sizeof(float));
    CHECK(response.request_id() == 43);
  }

  TEST_CASE("Server: TransformStream answers in order and ends at the first bad message") {
    auto server = start_server();
    auto stub = raw_stub(*server);
    grpc::ClientContext context;
    auto stream = stub->TransformStream(&context);
    for (std::uint64_t i = 0; i < 3; ++i) {
      pb::TransformRequest request = good_transform(2, 10 + i);
      request.set_request_id(100 + i);
      REQUIRE(stream->Write(request));
    }
    pb::TransformRequest bad = good_transform();
    bad.set_batch(0);
    stream->Write(bad);
    stream->WritesDone();
    pb::TransformResponse response;
    std::vector<std::uint64_t> ids;
    while (stream->Read(&response)) ids.push_back(response.request_id());
    const grpc::Status status = stream->Finish();
    CHECK(ids == std::vector<std::uint64_t>{100, 101, 102});
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(status.error_message().find("TransformStream: batch is 0") != std::string::npos);
    const auto stats = server->stats();
    CHECK(stats.requests == 4);
    CHECK(stats.get_info == 0);
    CHECK(stats.errors() == 1);
    CHECK(stats.frames == 6);
    check_still_serves(*stub);
  }

  TEST_CASE("Server: missing or wrong token is UNAUTHENTICATED, the right one is served") {
    ServerOptions options;
    options.token = "s3cret";
    auto server = start_server(options);
    auto stub = raw_stub(*server);
    pb::TransformResponse response;
    SUBCASE("missing") {
      const auto status = call(*stub, good_transform(), &response);
      CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
      CHECK(status.error_message().find("missing authorization") != std::string::npos);
    }
    SUBCASE("wrong") {
      const auto status = call(*stub, good_transform(), &response, "Bearer s3cre7");
      CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
      CHECK(status.error_message().find("wrong bearer token") != std::string::npos);
    }
    SUBCASE("not a bearer token") {
      const auto status = call(*stub, good_transform(), &response, "Basic s3cret");
      CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    }
    check_still_serves(*stub, "Bearer s3cret");
    CHECK(server->stats().by_code[static_cast<int>(opu::StatusCode::kUnauthenticated)] == 1);
  }

  TEST_CASE("Server: a message above the size limit is RESOURCE_EXHAUSTED, the next is served") {
    ServerOptions options;
    options.max_message_bytes = 64 << 10;
    auto server = start_server(options);
    auto stub = raw_stub(*server);
    pb::TransformResponse response;
    const pb::TransformRequest big = good_transform(4096);  // 128 KiB of inputs
    const auto status = call(*stub, big, &response);
    CHECK(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    check_still_serves(*stub);
    // The limit is announced, so that clients chunk below it.
    grpc::ClientContext context;
    pb::DeviceInfo info;
    REQUIRE(stub->GetInfo(&context, pb::GetInfoRequest(), &info).ok());
    CHECK(info.max_message_bytes() == 64 << 10);
    CHECK(info.api_version() == "opu.v1");
    CHECK(info.max_n_in() == kNIn);
    CHECK(info.supports_linear());
  }

  // A device whose compute throws: what a bug in a driver looks like from the server.
  class ThrowingDevice final : public opu::sim::Device {
   public:
    ThrowingDevice() : inner_(opu::test::make_sim()) {}
    opu::sim::DeviceInfo info() const override { return inner_->info(); }

   protected:
    opu::Result<opu::sim::Frames> do_transform(const opu::sim::TransformRequest& request) override {
      if (request.batch == 13) throw std::runtime_error("driver bug");
      if (request.batch == 14) throw 7;  // not even a std::exception
      return inner_->transform(request);
    }
    opu::Result<opu::sim::Projections> do_linear_transform(
        const opu::sim::LinearRequest& request) override {
      return inner_->linear_transform(request);
    }

   private:
    std::unique_ptr<opu::sim::SimDevice> inner_;
  };

  TEST_CASE("Server: an exception inside the device becomes INTERNAL and the server serves on") {
    auto server = start_server({}, std::make_shared<ThrowingDevice>());
    auto stub = raw_stub(*server);
    for (const int batch : {13, 14}) {
      pb::TransformResponse response;
      const auto status = call(*stub, good_transform(batch), &response);
      CHECK(status.error_code() == grpc::StatusCode::INTERNAL);
      CHECK(status.error_message().find("Transform: unexpected") != std::string::npos);
      check_still_serves(*stub);
    }
  }

  TEST_CASE("Server: above max_inflight a request is RESOURCE_EXHAUSTED, not queued") {
    std::latch entered(1);
    std::latch release(1);
    std::atomic<bool> first{true};
    ServerOptions options;
    options.max_inflight = 1;
    options.on_request_start = [&] {
      if (first.exchange(false)) {
        entered.count_down();
        release.wait();
      }
    };
    auto server = start_server(options);
    auto held_stub = raw_stub(*server);
    auto stub = raw_stub(*server);
    grpc::Status held_status;
    std::thread held([&] {
      pb::TransformResponse response;
      held_status = call(*held_stub, good_transform(), &response);
    });
    entered.wait();
    pb::TransformResponse response;
    const auto status = call(*stub, good_transform(), &response);
    CHECK(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK(status.error_message().find("server busy") != std::string::npos);
    release.count_down();
    held.join();
    CHECK(held_status.ok());
    check_still_serves(*stub);
  }

  TEST_CASE("Server: shutdown lets the request in flight finish, then refuses new ones") {
    std::latch entered(1);
    std::latch release(1);
    std::atomic<bool> first{true};
    ServerOptions options;
    options.on_request_start = [&] {
      if (first.exchange(false)) {
        entered.count_down();
        release.wait();
      }
    };
    auto server = start_server(options);
    auto stub = raw_stub(*server);
    grpc::Status held_status;
    pb::TransformResponse held_response;
    std::thread held([&] { held_status = call(*stub, good_transform(), &held_response); });
    entered.wait();
    std::thread stopper([&] { server->shutdown(std::chrono::seconds(30)); });
    // Wait (by polling with RPCs, no sleeps) until the server refuses new calls: shutdown has begun
    // while our first request is still held inside its handler.
    auto probe = raw_stub(*server);
    bool refused = false;
    for (int i = 0; i < 100000 && !refused; ++i) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      pb::DeviceInfo info;
      refused = !probe->GetInfo(&context, pb::GetInfoRequest(), &info).ok();
    }
    CHECK(refused);
    release.count_down();
    held.join();
    stopper.join();
    CHECK_MESSAGE(held_status.ok(), held_status.error_message());
    CHECK(held_response.frames().size() == 4 * kNOut);
  }

  TEST_CASE("Server: 8 concurrent clients x 200 requests, nothing lost, mixed or reordered") {
    constexpr int kClients = 8;
    constexpr int kRequests = 200;
    constexpr std::int64_t kBatch = 4;
    auto server = start_server();
    // Each client sends its own inputs; the expected frames come from a local device (ideal camera,
    // no drift: frames depend on the inputs only).
    auto local = opu::test::make_sim();
    std::vector<std::vector<std::uint8_t>> inputs(kClients * 4);
    std::vector<std::vector<std::uint8_t>> expected(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      inputs[i] = opu::test::random_frames(kNIn, kBatch, 1000 + i);
      auto frames = local->transform(opu::test::transform_request(inputs[i], kNIn, kNOut, kBatch));
      REQUIRE(frames.ok());
      expected[i] = frames->data;
    }
    std::atomic<int> wrong{0}, failed{0}, not_increasing{0};
    std::atomic<std::int64_t> frames_seen{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        opu::offload::RemoteOptions options;
        options.addresses = {server->address()};
        auto device = opu::offload::RemoteDevice::connect(options);
        if (!device.ok()) {
          failed += kRequests;
          return;
        }
        std::int64_t last_start = -1;
        std::int64_t last_end = -1;
        for (int r = 0; r < kRequests; ++r) {
          const std::size_t which = static_cast<std::size_t>(c * 4 + r % 4);
          auto frames = (*device)->transform(
              opu::test::transform_request(inputs[which], kNIn, kNOut, kBatch));
          if (!frames.ok()) {
            ++failed;
            continue;
          }
          if (frames->data != expected[which]) ++wrong;
          if (frames->info.device_time_start_ns <= last_start ||
              frames->info.device_time_start_ns < last_end ||
              frames->info.device_time_end_ns <= frames->info.device_time_start_ns) {
            ++not_increasing;
          }
          last_start = frames->info.device_time_start_ns;
          last_end = frames->info.device_time_end_ns;
          frames_seen += frames->info.frames;
        }
      });
    }
    for (auto& client : clients) client.join();
    CHECK(failed == 0);
    CHECK(wrong == 0);
    CHECK(not_increasing == 0);
    CHECK(frames_seen == kClients * kRequests * kBatch);
    const opu::offload::ServerStats stats = server->stats();
    INFO(stats.summary());
    CHECK(stats.requests == kClients * kRequests);
    CHECK(stats.get_info == kClients);
    CHECK(stats.frames == kClients * kRequests * kBatch);
    CHECK(stats.errors() == 0);
    CHECK(stats.by_code[0] == kClients * kRequests + kClients);
    CHECK(stats.bytes_in == kClients * kRequests * kBatch * kNIn / 8);
    CHECK(stats.bytes_out == kClients * kRequests * kBatch * kNOut);
    CHECK(stats.in_flight == 0);
  }

  TEST_CASE("Server: the standard health service answers SERVING") {
    auto server = start_server();
    auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
    grpc::GenericStub stub(channel);
    // grpc.health.v1.HealthCheckRequest{service: ""} is the empty message; the response
    // HealthCheckResponse{status: SERVING} is field 1, varint 1: bytes 08 01.
    grpc::Slice empty;
    const grpc::ByteBuffer request(&empty, 1);  // a default ByteBuffer is not a valid message
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    std::promise<grpc::Status> done;
    stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                   &response, [&](grpc::Status status) { done.set_value(std::move(status)); });
    const grpc::Status status = done.get_future().get();
    REQUIRE_MESSAGE(status.ok(), status.error_message());
    std::vector<grpc::Slice> slices;
    REQUIRE(response.Dump(&slices).ok());
    std::string bytes;
    for (const auto& slice : slices)
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    CHECK(bytes == std::string("\x08\x01", 2));
  }

  TEST_CASE("Server: bad options are refused with a reason") {
    auto device = std::shared_ptr<opu::sim::Device>(opu::test::make_sim());
    ServerOptions options;
    options.tls_cert_pem = "-----BEGIN CERTIFICATE-----";
    auto server = Server::start(device, options);
    CHECK(server.status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(server.status().message().find("only the certificate") != std::string::npos);
    options = {};
    options.listen = "127.0.0.1";
    server = Server::start(device, options);
    CHECK(server.status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(server.status().message().find("no port") != std::string::npos);
    // A port already taken.
    auto first = start_server();
    options.listen = first->address();
    server = Server::start(device, options);
    CHECK(server.status().code() == opu::StatusCode::kUnavailable);
  }

  TEST_CASE("Server: the summary names counts by code") {
    opu::offload::ServerStats stats;
    stats.requests = 10;
    stats.frames = 40;
    stats.by_code[0] = 7;
    stats.by_code[3] = 2;
    stats.by_code[16] = 1;
    CHECK(stats.errors() == 3);
    const std::string text = stats.summary();
    CHECK(text.find("requests 10") != std::string::npos);
    CHECK(text.find("INVALID_ARGUMENT 2, UNAUTHENTICATED 1") != std::string::npos);
  }

}  // TEST_SUITE
