// RemoteDevice: local == remote (in-process channel and loopback port), chunking, streaming,
// client-side linearisation when the server lacks LinearTransform, TLS, round_robin replicas.
#include "offload/remote_device.h"

#include <doctest/doctest.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>

#include "offload/open_device.h"
#include "offload/serve_config.h"
#include "offload/server.h"
#include "offload_test_support.h"
#include "opu/v1/opu.grpc.pb.h"

namespace {

using opu::offload::RemoteDevice;
using opu::offload::RemoteOptions;
using opu::offload::Server;
using opu::offload::ServerOptions;

constexpr std::int64_t kNIn = 256;
constexpr std::int64_t kNOut = 64;

std::unique_ptr<Server> start_server(
    ServerOptions options = {},
    const std::map<std::string, std::string>& params = opu::test::small_params()) {
  auto server = Server::start(std::shared_ptr<opu::sim::Device>(opu::test::make_sim(params)),
                              std::move(options));
  REQUIRE_MESSAGE(server.ok(), server.status().to_string());
  return std::move(server).value();
}

std::unique_ptr<RemoteDevice> connect(const std::string& address, RemoteOptions options = {}) {
  options.addresses = {address};
  auto device = RemoteDevice::connect(options);
  REQUIRE_MESSAGE(device.ok(), device.status().to_string());
  return std::move(device).value();
}

void check_same(const opu::sim::FrameInfo& a, const opu::sim::FrameInfo& b) {
  CHECK(a.device_time_start_ns == b.device_time_start_ns);
  CHECK(a.device_time_end_ns == b.device_time_end_ns);
  CHECK(a.frames == b.frames);
  CHECK(a.saturated_pixels == b.saturated_pixels);
  CHECK(a.exposure_us == b.exposure_us);
}

double correlation(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  const Eigen::ArrayXd x = a.reshaped().cast<double>().array() - a.cast<double>().mean();
  const Eigen::ArrayXd y = b.reshaped().cast<double>().array() - b.cast<double>().mean();
  return (x * y).sum() / std::sqrt((x * x).sum() * (y * y).sum());
}

// The same linear request to both devices: the same projections bit for bit, the same cost.
opu::sim::FrameInfo check_same_projections(opu::sim::Device& local, opu::sim::Device& remote,
                                           const opu::sim::LinearRequest& request) {
  auto want = local.linear_transform(request);
  auto got = remote.linear_transform(request);
  REQUIRE_MESSAGE(want.ok(), want.status().to_string());
  REQUIRE_MESSAGE(got.ok(), got.status().to_string());
  CHECK((got->values.array() == want->values.array()).all());
  check_same(got->info, want->info);
  return got->info;
}

// The same sequence of requests through a local device and through a remote one must give the
// same bytes: frames, projections, and device times.
void run_same_sequence(opu::sim::Device& local, opu::sim::Device& remote) {
  for (const std::int64_t batch : {1, 7, 64}) {
    CAPTURE(batch);
    const auto inputs = opu::test::random_frames(kNIn, batch, 100 + batch);
    const auto request = opu::test::transform_request(inputs, kNIn, kNOut, batch);
    auto want = local.transform(request);
    auto got = remote.transform(request);
    REQUIRE(want.ok());
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    CHECK(got->data == want->data);
    CHECK(got->adc_bits == want->adc_bits);
    check_same(got->info, want->info);
  }
  for (const auto encoding : {opu::sim::Encoding::kTernary, opu::sim::Encoding::kBitplanes,
                              opu::sim::Encoding::kStochastic}) {
    CAPTURE(opu::sim::encoding_name(encoding));
    auto values = opu::test::random_values(10, 16, 77);
    // Repeated vectors, so that shared frames are exercised over the wire too.
    std::copy(values.begin(), values.begin() + 40, values.begin() + 40);
    auto request = opu::test::linear_request(values, 10, kNOut, 16, encoding);
    request.options.dither_seed = 99;
    request.options.share_frames = encoding == opu::sim::Encoding::kStochastic;
    if (encoding == opu::sim::Encoding::kStochastic) {  // every code option crosses the wire
      request.options.repeats = 2;
      request.options.reference_repeats = 3;
    }
    // A calibrated exposure travels with the request (one encoding), else the automatic one.
    request.options.exposure_us = encoding == opu::sim::Encoding::kBitplanes ? 300.0 : 0.0;
    const opu::sim::FrameInfo info = check_same_projections(local, remote, request);
    if (request.options.exposure_us > 0.0) CHECK(info.exposure_us == 300.0);
  }
  // A reference measured by one request and reused by the next, on either side of the wire.
  auto values = opu::test::random_values(10, 16, 78);
  auto request = opu::test::linear_request(values, 10, kNOut, 16, opu::sim::Encoding::kStochastic);
  request.options.reference_max_age_s = 60.0;
  std::vector<std::int64_t> frames;
  for (int call = 0; call < 2; ++call) {
    CAPTURE(call);
    frames.push_back(check_same_projections(local, remote, request).frames);
  }
  CHECK(frames[1] < frames[0]);  // the second request measured no reference
}

}  // namespace

TEST_SUITE("offload") {
  TEST_CASE("RemoteDevice: local == remote, frames and projections bit for bit") {
    for (const std::string camera : {"ideal", "realistic"}) {
      CAPTURE(camera);
      const auto params = opu::test::small_params(camera);
      {
        INFO("in-process channel");
        auto server = start_server({}, params);
        auto local = opu::test::make_sim(params);
        auto remote = server->connect_in_process();
        REQUIRE_MESSAGE(remote.ok(), remote.status().to_string());
        run_same_sequence(*local, **remote);
      }
      {
        INFO("loopback port");
        auto server = start_server({}, params);
        auto local = opu::test::make_sim(params);
        auto remote = connect(server->address());
        CHECK(remote->info().model == local->info().model);
        CHECK(remote->info().max_n_in == kNIn);
        CHECK(remote->info().simulated);
        run_same_sequence(*local, *remote);
      }
    }
  }

  TEST_CASE("RemoteDevice: validates before sending, with the simulator's messages") {
    auto server = start_server();
    auto remote = connect(server->address());
    const auto inputs = opu::test::random_frames(kNIn, 4, 1);
    auto request = opu::test::transform_request(inputs, kNIn, kNOut, 3);  // 128 bytes for batch 3
    auto frames = remote->transform(request);
    CHECK(frames.status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(server->stats().requests == 0);  // never reached the wire
  }

  TEST_CASE("RemoteDevice: batches above the message limit are chunked and concatenated") {
    ServerOptions options;
    options.max_message_bytes = 16 << 10;
    auto server = start_server(options, opu::test::small_params("realistic"));
    auto local = opu::test::make_sim(opu::test::small_params("realistic"));
    auto remote = connect(server->address());
    constexpr std::int64_t kBatch = 1000;  // 64 KB of frames back: 5 chunks of 240
    CHECK(remote->transform_chunk(kNIn, kNOut) == 240);
    const auto inputs = opu::test::random_frames(kNIn, kBatch, 5);
    const auto request = opu::test::transform_request(inputs, kNIn, kNOut, kBatch);
    auto want = local->transform(request);
    auto got = remote->transform(request);
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    CHECK(remote->stats().chunked_calls == 1);
    CHECK(server->stats().requests == 5);
    // Chunks are consecutive frames on one timeline: the same frames and times as one big call.
    CHECK(got->data == want->data);
    check_same(got->info, want->info);

    // Linear chunks: 300 vectors of 10 -> 64 floats (256 B each way per vector).
    const auto values = opu::test::random_values(10, 300, 9);
    const auto linear = opu::test::linear_request(values, 10, kNOut, 300);
    auto projections = remote->linear_transform(linear);
    REQUIRE_MESSAGE(projections.ok(), projections.status().to_string());
    CHECK(remote->stats().chunked_calls == 2);
    CHECK(projections->values.rows() == kNOut);
    CHECK(projections->values.cols() == 300);
    auto exact = local->exact_linear(linear);
    REQUIRE(exact.ok());
    CHECK(correlation(projections->values, *exact) > 0.9);
    CHECK(projections->info.device_time_end_ns > projections->info.device_time_start_ns);
  }

  TEST_CASE("RemoteDevice: transform_many pipelines requests over one stream, in order") {
    auto server = start_server();
    auto local = opu::test::make_sim();
    auto remote = connect(server->address());
    std::vector<std::vector<std::uint8_t>> inputs;
    std::vector<opu::sim::TransformRequest> requests;
    for (int i = 0; i < 50; ++i)
      inputs.push_back(opu::test::random_frames(kNIn, 1 + i % 5, 300 + i));
    for (int i = 0; i < 50; ++i) {
      requests.push_back(opu::test::transform_request(inputs[i], kNIn, kNOut, 1 + i % 5));
    }
    auto got = remote->transform_many(requests);
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    REQUIRE(got->size() == requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
      auto want = local->transform(requests[i]);
      REQUIRE(want.ok());
      CHECK((*got)[i].data == want->data);
      check_same((*got)[i].info, want->info);
    }
    CHECK(remote->stats().rpcs == 2);  // GetInfo and one stream
    // An invalid request is refused before anything is sent.
    requests[3].n_out = 0;
    CHECK(remote->transform_many(requests).status().code() == opu::StatusCode::kInvalidArgument);
  }

  TEST_CASE("RemoteDevice: LinearTransform UNIMPLEMENTED falls back to client-side linearisation") {
    // 12-bit camera: frames travel as little-endian uint16, and quantisation (which the wire adds
    // to an ideal camera, whose in-process path hands over float intensities) stays small.
    auto params = opu::test::small_params();
    params["adc_bits"] = "12";
    ServerOptions options;
    options.serve_linear = false;
    auto server = start_server(options, params);
    auto remote = connect(server->address());
    CHECK_FALSE(remote->info().supports_linear);
    CHECK(remote->info().adc_bits == 12);
    auto local = opu::test::make_sim(params);
    const auto values = opu::test::random_values(10, 32, 21);
    const auto request = opu::test::linear_request(values, 10, kNOut, 32);
    auto got = remote->linear_transform(request);
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    CHECK(remote->stats().linear_fallbacks == 1);
    CHECK(server->stats().requests >= 1);  // frames came over Transform
    // Same maths, same frames: identical to the same fallback run against a local device.
    auto want =
        opu::sim::linear_transform_from_frames(request, local->info(), opu::sim::HolographyConfig{},
                                               opu::sim::device_frame_capture(*local));
    REQUIRE(want.ok());
    CHECK((got->values.array() == want->values.array()).all());
    // And the device's own linear mode (float intensities in-process, so this bounds only the
    // quantisation the wire adds) gives nearly the same projection.
    auto direct = opu::test::make_sim(params)->linear_transform(request);
    REQUIRE(direct.ok());
    CHECK(correlation(got->values, direct->values) > 0.98);  // measured 0.988 (seed 7)
  }

  TEST_CASE("RemoteDevice: a driver that implements only GetInfo and Transform") {
    // What a real device's driver may look like: the generated base class answers every RPC it does
    // not override with UNIMPLEMENTED, and this one even claims supports_linear.
    class FramesOnly final : public opu::v1::OpuDevice::Service {
     public:
      grpc::Status GetInfo(grpc::ServerContext*, const opu::v1::GetInfoRequest*,
                           opu::v1::DeviceInfo* info) override {
        const auto local = device_->info();
        info->set_model("frames-only driver");
        info->set_max_n_in(local.max_n_in);
        info->set_max_n_out(local.max_n_out);
        info->set_adc_bits(local.adc_bits);
        info->set_exposure_us(local.exposure_us);
        info->set_frametime_us(local.frametime_us);
        info->set_max_batch(local.max_batch);
        info->set_max_exposure_us(local.max_exposure_us);
        info->set_supports_linear(true);
        return grpc::Status::OK;
      }
      grpc::Status Transform(grpc::ServerContext*, const opu::v1::TransformRequest* request,
                             opu::v1::TransformResponse* response) override {
        opu::sim::TransformRequest call;
        call.n_in = request->n_in();
        call.n_out = request->n_out();
        call.batch = request->batch();
        call.inputs = {reinterpret_cast<const std::uint8_t*>(request->inputs().data()),
                       request->inputs().size()};
        call.exposure_us = request->exposure_us();
        auto frames = device_->transform(call);
        if (!frames.ok()) return {grpc::StatusCode::INVALID_ARGUMENT, frames.status().message()};
        response->set_n_out(frames->n_out);
        response->set_batch(frames->batch);
        response->set_frames(frames->data.data(), frames->data.size());
        response->set_request_id(request->request_id());
        response->set_adc_bits(frames->adc_bits);
        auto* info = response->mutable_info();
        info->set_device_time_start_ns(frames->info.device_time_start_ns);
        info->set_device_time_end_ns(frames->info.device_time_end_ns);
        info->set_frames(frames->info.frames);
        info->set_saturated_pixels(frames->info.saturated_pixels);
        info->set_exposure_us(frames->info.exposure_us);
        return grpc::Status::OK;
      }

     private:
      std::unique_ptr<opu::sim::SimDevice> device_ = opu::test::make_sim();
    };
    FramesOnly service;
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    auto server = builder.BuildAndStart();
    REQUIRE(server);
    auto remote = connect("127.0.0.1:" + std::to_string(port));
    CHECK(remote->info().supports_linear);
    const auto values = opu::test::random_values(10, 8, 2);
    const auto request = opu::test::linear_request(values, 10, kNOut, 8);
    auto got = remote->linear_transform(request);
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    CHECK(remote->stats().linear_fallbacks == 1);
    auto again = remote->linear_transform(request);  // remembered: no second LinearTransform try
    REQUIRE(again.ok());
    CHECK(remote->stats().linear_fallbacks == 2);
    auto local = opu::test::make_sim();
    auto want =
        opu::sim::linear_transform_from_frames(request, local->info(), opu::sim::HolographyConfig{},
                                               opu::sim::device_frame_capture(*local));
    REQUIRE(want.ok());
    CHECK((got->values.array() == want->values.array()).all());
    server->Shutdown();
  }

  TEST_CASE("RemoteDevice: TLS with a self-signed certificate, and plaintext to it fails cleanly") {
    // One certificate for all subcases (RSA key generation is the slow part of this test).
    static opu::test::TempDir dir;
    REQUIRE(dir.ok());
    const std::string cert = dir.file("cert.pem");
    const std::string key = dir.file("key.pem");
    static const bool made = opu::test::make_self_signed_cert(cert, key);
    REQUIRE_MESSAGE(made, "openssl failed");
    auto cert_pem = opu::offload::read_text_file(cert, "cert");
    auto key_pem = opu::offload::read_text_file(key, "key");
    REQUIRE(cert_pem.ok());
    REQUIRE(key_pem.ok());
    ServerOptions options;
    options.tls_cert_pem = *cert_pem;
    options.tls_key_pem = *key_pem;
    options.token = "tls-token";
    REQUIRE(opu::test::write_file(dir.file("token"), "tls-token\n"));
    auto server = start_server(options);
    const std::string port = std::to_string(server->port());

    SUBCASE("grpcs:// with the CA and the token") {
      for (const std::string host : {"127.0.0.1", "localhost"}) {
        CAPTURE(host);
        auto device = opu::offload::open_device("grpcs://" + host + ":" + port + "?ca=" + cert +
                                                "&token=" + dir.file("token"));
        REQUIRE_MESSAGE(device.ok(), device.status().to_string());
        const auto inputs = opu::test::random_frames(kNIn, 2, 3);
        auto frames = (*device)->transform(opu::test::transform_request(inputs, kNIn, kNOut, 2));
        REQUIRE_MESSAGE(frames.ok(), frames.status().to_string());
        auto want =
            opu::test::make_sim()->transform(opu::test::transform_request(inputs, kNIn, kNOut, 2));
        CHECK(frames->data == want->data);
      }
    }
    SUBCASE("plaintext to the TLS port") {
      auto device =
          opu::offload::open_device("grpc://127.0.0.1:" + port + "?retries=1&deadline_ms=5000");
      REQUIRE_FALSE(device.ok());
      CHECK(device.status().code() == opu::StatusCode::kUnavailable);
    }
    SUBCASE("TLS without trusting the CA") {
      RemoteOptions client;
      client.tls = true;
      client.ca_pem = "";  // system roots do not include our self-signed certificate
      client.retry.max_attempts = 1;
      client.addresses = {"127.0.0.1:" + port};
      auto device = RemoteDevice::connect(client);
      REQUIRE_FALSE(device.ok());
      CHECK(device.status().code() == opu::StatusCode::kUnavailable);
    }
    SUBCASE("TLS with the CA but no token") {
      auto device = opu::offload::open_device("grpcs://127.0.0.1:" + port + "?ca=" + cert);
      REQUIRE_FALSE(device.ok());
      CHECK(device.status().code() == opu::StatusCode::kUnauthenticated);
    }
  }

  TEST_CASE("RemoteDevice: two replicas with the same seed behind round_robin answer as one") {
    auto first = start_server();
    auto second = start_server();
    RemoteOptions options;
    options.addresses = {first->address(), second->address()};
    auto remote = RemoteDevice::connect(options);
    REQUIRE_MESSAGE(remote.ok(), remote.status().to_string());
    auto local = opu::test::make_sim();
    constexpr int kCalls = 40;
    for (int i = 0; i < kCalls; ++i) {
      const auto inputs = opu::test::random_frames(kNIn, 3, 500 + i);
      const auto request = opu::test::transform_request(inputs, kNIn, kNOut, 3);
      auto got = (*remote)->transform(request);
      REQUIRE_MESSAGE(got.ok(), got.status().to_string());
      CHECK(got->data == local->transform(request)->data);
    }
    const auto values = opu::test::random_values(10, 8, 4);
    auto a = (*remote)->linear_transform(opu::test::linear_request(values, 10, kNOut, 8));
    auto b = (*remote)->linear_transform(opu::test::linear_request(values, 10, kNOut, 8));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK((a->values.array() == b->values.array()).all());
    const std::int64_t on_first = first->stats().requests;
    const std::int64_t on_second = second->stats().requests;
    CHECK(on_first + on_second == kCalls + 2);
    CHECK(on_first > 0);  // the load really was spread
    CHECK(on_second > 0);
  }

  TEST_CASE("RemoteDevice: connecting to nothing fails with UNAVAILABLE naming the address") {
    RemoteOptions options;
    options.addresses = {"127.0.0.1:1"};
    options.retry.max_attempts = 2;
    options.retry.initial_backoff = std::chrono::milliseconds(1);
    auto device = RemoteDevice::connect(options);
    REQUIRE_FALSE(device.ok());
    CHECK(device.status().code() == opu::StatusCode::kUnavailable);
    CHECK(device.status().message().find("grpc://127.0.0.1:1") != std::string::npos);
    CHECK(device.status().message().find("after 2 attempts") != std::string::npos);
  }

}  // TEST_SUITE
