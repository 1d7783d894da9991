// Fuzz target: the gRPC server's validation and decoding of every RPC of opu.v1.OpuDevice.
//
// The input is what a client puts on the wire: protobuf bytes, parsed by protobuf into the request
// message exactly as gRPC does, then handed to the service opu-serve runs (offload/src/service.h:
// the same guard, validation, decoding, device call and encoding), with no network in between.
//
// Input: one control byte, then the request.
//   control bits 0-1: the RPC: 0 GetInfo, 1 Transform, 2 TransformStream, 3 LinearTransform;
//   bit 2: ideal camera (else realistic); bit 3: 12-bit ADC (else 8); bit 4: --serve-linear false.
//   Transform, LinearTransform, GetInfo: the rest is one serialised request message.
//   TransformStream: the rest is a sequence of messages, each a varint length then that many bytes
//   (the stream's framing); one that does not parse ends the stream, as in gRPC.
// Properties: no crash, leak or undefined behaviour; no INTERNAL or UNKNOWN status (the handler's
// catch-all turns escaped exceptions into INTERNAL: a bug); every OK response answers its request
// (shape, byte count, request_id; finite projections of values below 1e20).
#include <google/protobuf/io/coded_stream.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "opu_sim/sim_device.h"
#include "service.h"

namespace {

namespace pb = ::opu::v1;
using opu::offload::OpuService;

// A small device: every request the checks let through costs little, and n_in = 80 is not a
// multiple of 64 (the packed frames' tail bits matter).
std::shared_ptr<opu::sim::Device> make_device(bool ideal, bool twelve_bits) {
  opu::sim::SimConfig config;
  config.seed = 7;
  config.n_in = 80;
  config.n_out = 24;
  config.medium = opu::sim::MediumKind::kDense;
  config.max_batch = 4;
  if (ideal) {
    config.camera.ideal = true;
    config.camera.shot_noise = false;
    config.camera.read_noise = false;
    config.camera.dark_offset_counts = 0.0;
  }
  if (twelve_bits) config.camera.adc_bits = 12;
  auto device = opu::sim::SimDevice::create(config);
  OPU_FUZZ_CHECK(device.ok(), device.status().to_string());
  return std::shared_ptr<opu::sim::Device>(std::move(*device));
}

// The stream side of TransformStream without a network: messages in, responses counted.
class ScriptedStream final
    : public grpc::ServerReaderWriterInterface<pb::TransformResponse, pb::TransformRequest> {
 public:
  explicit ScriptedStream(std::string_view wire) : wire_(wire) {}

  void SendInitialMetadata() override {}
  bool NextMessageSize(std::uint32_t* size) override {
    *size = static_cast<std::uint32_t>(wire_.size());
    return !wire_.empty();
  }
  bool Read(pb::TransformRequest* message) override {
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const std::uint8_t*>(wire_.data()),
                                              static_cast<int>(wire_.size()));
    std::uint32_t length = 0;
    if (wire_.empty() || !in.ReadVarint32(&length)) return false;
    const auto header = static_cast<std::size_t>(in.CurrentPosition());
    if (length > wire_.size() - header) return false;
    const bool parsed = message->ParseFromArray(wire_.data() + header, static_cast<int>(length));
    wire_.remove_prefix(header + length);
    return parsed;
  }
  bool Write(const pb::TransformResponse& response, grpc::WriteOptions /*options*/) override {
    responses_.push_back(response);
    return true;
  }

  const std::vector<pb::TransformResponse>& responses() const { return responses_; }

 private:
  std::string_view wire_;
  std::vector<pb::TransformResponse> responses_;
};

void check_status(const grpc::Status& status, const char* rpc) {
  OPU_FUZZ_CHECK(status.error_code() != grpc::StatusCode::INTERNAL &&
                     status.error_code() != grpc::StatusCode::UNKNOWN,
                 std::string(rpc) + ": " + status.error_message());
}

void check_frames(const pb::TransformRequest& request, const pb::TransformResponse& response,
                  int adc_bits) {
  const std::int64_t pixel_bytes = adc_bits <= 8 ? 1 : 2;
  OPU_FUZZ_CHECK(response.n_out() == request.n_out() && response.batch() == request.batch() &&
                     response.adc_bits() == adc_bits,
                 "Transform answered another shape");
  OPU_FUZZ_CHECK(static_cast<std::int64_t>(response.frames().size()) ==
                     request.batch() * request.n_out() * pixel_bytes,
                 "Transform: frames has " + std::to_string(response.frames().size()) + " bytes");
  OPU_FUZZ_CHECK(response.request_id() == request.request_id(), "request_id not echoed");
  OPU_FUZZ_CHECK(response.info().frames() == request.batch(), "frames != batch");
}

void fuzz_transform(OpuService& service, std::string_view bytes, int adc_bits) {
  pb::TransformRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  grpc::ServerContext context;
  pb::TransformResponse response;
  const grpc::Status status = service.Transform(&context, &request, &response);
  check_status(status, "Transform");
  if (status.ok()) check_frames(request, response, adc_bits);
}

void fuzz_stream(OpuService& service, std::string_view bytes, int adc_bits) {
  grpc::ServerContext context;
  ScriptedStream stream(bytes);
  const grpc::Status status = service.serve_stream(context, stream);
  check_status(status, "TransformStream");
  // Each response answers the message of the same rank; re-read them to compare.
  ScriptedStream again(bytes);
  for (const pb::TransformResponse& response : stream.responses()) {
    pb::TransformRequest request;
    OPU_FUZZ_CHECK(again.Read(&request), "a response without its request");
    check_frames(request, response, adc_bits);
  }
}

void fuzz_linear(OpuService& service, std::string_view bytes) {
  pb::LinearTransformRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  grpc::ServerContext context;
  pb::LinearTransformResponse response;
  const grpc::Status status = service.LinearTransform(&context, &request, &response);
  check_status(status, "LinearTransform");
  if (!status.ok()) return;
  OPU_FUZZ_CHECK(response.n_out() == request.n_out() && response.batch() == request.batch(),
                 "LinearTransform answered another shape");
  OPU_FUZZ_CHECK(static_cast<std::int64_t>(response.projections().size()) ==
                     4 * request.batch() * request.n_out(),
                 "LinearTransform: projections has " +
                     std::to_string(response.projections().size()) + " bytes");
  OPU_FUZZ_CHECK(response.request_id() == request.request_id(), "request_id not echoed");
  // Finite projections, for values well inside the float range: B·v of values near the float
  // maximum (3.4e38) overflows float32 however it is computed.
  std::vector<float> values(request.values().size() / sizeof(float));
  std::memcpy(values.data(), request.values().data(), values.size() * sizeof(float));
  float largest = 0.0F;
  for (const float v : values) largest = std::max(largest, std::abs(v));
  if (largest > 1e20F) return;
  std::vector<float> projections(response.projections().size() / sizeof(float));
  std::memcpy(projections.data(), response.projections().data(), response.projections().size());
  for (const float p : projections) {
    OPU_FUZZ_CHECK(std::isfinite(p), "LinearTransform: a projection is not finite");
  }
}

void fuzz_get_info(OpuService& service, std::string_view bytes) {
  pb::GetInfoRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  grpc::ServerContext context;
  pb::DeviceInfo response;
  const grpc::Status status = service.GetInfo(&context, &request, &response);
  check_status(status, "GetInfo");
  OPU_FUZZ_CHECK(status.ok() && response.max_n_in() == 80 && response.max_batch() == 4,
                 "GetInfo: " + status.error_message());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Quiet: the library logs INTERNAL failures at warn (which the checks report anyway).
  static const bool quiet = [] {
    auto logger = std::make_shared<spdlog::logger>("offload");
    logger->set_level(spdlog::level::off);
    spdlog::register_logger(logger);
    return true;
  }();
  (void)quiet;
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  const std::string_view bytes = opu::fuzz::as_text(data + 1, size - 1);
  const bool ideal = (control & 4U) != 0;
  const int adc_bits = (control & 8U) != 0 ? 12 : 8;
  opu::offload::ServerOptions options;
  options.serve_linear = (control & 16U) == 0;
  // A fresh device and service per input: the device clock, its reference cache and the counters
  // start from the same state every time, so an input always behaves the same.
  OpuService service(make_device(ideal, adc_bits == 12), options);
  switch (control & 3U) {
    case 0:
      fuzz_get_info(service, bytes);
      break;
    case 1:
      fuzz_transform(service, bytes, adc_bits);
      break;
    case 2:
      fuzz_stream(service, bytes, adc_bits);
      break;
    default:
      fuzz_linear(service, bytes);
      break;
  }
  return 0;
}
