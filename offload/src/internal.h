// Private helpers of opu::offload: the logger, status conversion at the RPC edge, and the
// conversions between opu::sim types and their opu.v1 wire messages.
#pragma once

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "offload/remote_device.h"
#include "opu/v1/opu.grpc.pb.h"
#include "opu/v1/opu.pb.h"
#include "opu_sim/device.h"
#include "opu_sim/status.h"

// Bulk data crosses the wire as raw bytes: float32 and uint16 are little-endian on the wire and
// copied with memcpy, which is right only on a little-endian host.
static_assert(std::endian::native == std::endian::little, "opu::offload assumes little-endian");

namespace opu::offload {

namespace pb = ::opu::v1;

/// The library's logger, "offload". Uses the one the executable registered under that name, or
/// a clone of the default logger.
spdlog::logger& logger();

/// Raw bytes into a protobuf `bytes` field with a single copy. The generated set_x(data, size)
/// builds a temporary std::string and copies it again (protobuf 3.21, seen in the server's
/// profile): twice the memory traffic for every projection or frame block on the wire.
inline void assign_bytes(std::string* field, const void* data, std::size_t size) {
  field->assign(static_cast<const char*>(data), size);
}

/// The codes are the same numbers: the edge is a cast.
inline grpc::Status to_grpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return {static_cast<grpc::StatusCode>(status.code()), status.message()};
}
inline Status from_grpc(const grpc::Status& status) {
  if (status.ok()) return {};
  return {static_cast<StatusCode>(status.error_code()), status.error_message()};
}

void to_wire(const sim::DeviceInfo& info, pb::DeviceInfo* out);
sim::DeviceInfo from_wire(const pb::DeviceInfo& info);
void to_wire(const sim::FrameInfo& info, pb::FrameInfo* out);
sim::FrameInfo from_wire(const pb::FrameInfo& info);

/// sim::Encoding <-> opu.v1.Encoding (same numbers; the wire's 0 is "unset").
pb::Encoding to_wire(sim::Encoding encoding);
/// The wire's encoding as the simulator's; an unknown or unset value keeps its number, which
/// sim::validate() rejects naming it.
sim::Encoding from_wire(pb::Encoding encoding);
/// A LinearTransformRequest's code options, both ways: every field the wire carries, in one place.
void to_wire(const sim::LinearOptions& options, pb::LinearTransformRequest* out);
sim::LinearOptions linear_options_from_wire(const pb::LinearTransformRequest& request);

/// Builds a RemoteDevice over an existing channel (Server::connect_in_process).
struct RemoteAccess {
  static Result<std::unique_ptr<RemoteDevice>> connect(std::shared_ptr<grpc::Channel> channel,
                                                       const RemoteOptions& options,
                                                       std::string description);
};

/// Splits "host:port" (host may be a bracketed IPv6 literal); INVALID_ARGUMENT naming the part.
struct HostPort {
  std::string host;
  int port = 0;
};
Result<HostPort> split_host_port(std::string_view address, bool allow_port_zero);

}  // namespace opu::offload
