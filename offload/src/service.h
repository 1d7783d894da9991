// The opu.v1.OpuDevice service that Server registers with gRPC (defined in server.cpp). Private to
// offload/; declared in a header of its own so that its handlers can also be called with no
// server or network around them: fuzz/server_fuzz.cpp feeds them requests that protobuf parsed
// from arbitrary bytes, through the same guard, validation, decoding and device calls as a served
// request.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

#include "internal.h"
#include "offload/server.h"

namespace opu::offload {

// Sizes and outcome of one request, for the debug log and the counters.
struct RequestLog {
  std::uint64_t request_id = 0;
  std::int64_t batch = 0;
  std::int64_t frames = 0;
  std::int64_t bytes_in = 0;
  std::int64_t bytes_out = 0;
  bool recorded = false;  // already counted and logged (a stream's failing message)
};

// Counters. Atomics only: handlers run concurrently and must not contend on a lock for this.
class Counters {
 public:
  void record(bool is_request, const Status& status, const RequestLog& log) {
    (is_request ? requests_ : get_info_).fetch_add(1, std::memory_order_relaxed);
    const auto code = static_cast<std::size_t>(status.code());
    by_code_[code < by_code_.size() ? code : static_cast<std::size_t>(StatusCode::kUnknown)]
        .fetch_add(1, std::memory_order_relaxed);
    bytes_in_.fetch_add(log.bytes_in, std::memory_order_relaxed);
    if (status.ok()) {
      frames_.fetch_add(log.frames, std::memory_order_relaxed);
      bytes_out_.fetch_add(log.bytes_out, std::memory_order_relaxed);
    }
  }
  std::atomic<std::int64_t>& in_flight() { return in_flight_; }

  ServerStats snapshot() const {
    ServerStats out;
    out.requests = requests_.load();
    out.get_info = get_info_.load();
    out.frames = frames_.load();
    out.bytes_in = bytes_in_.load();
    out.bytes_out = bytes_out_.load();
    out.in_flight = in_flight_.load();
    for (std::size_t i = 0; i < by_code_.size(); ++i) out.by_code[i] = by_code_[i].load();
    return out;
  }

 private:
  std::atomic<std::int64_t> requests_{0}, get_info_{0}, frames_{0}, bytes_in_{0}, bytes_out_{0};
  std::atomic<std::int64_t> in_flight_{0};
  std::array<std::atomic<std::int64_t>, 17> by_code_{};
};

class OpuService final : public pb::OpuDevice::Service {
 public:
  OpuService(std::shared_ptr<sim::Device> device, const ServerOptions& options);

  ServerStats stats() const { return counters_.snapshot(); }

  // Graceful part of a shutdown: from now on new calls are refused with UNAVAILABLE (clients retry
  // elsewhere or later); returns when the calls in flight have finished or `grace` has passed.
  // gRPC's own Shutdown(deadline) would also wait for every idle client to acknowledge its GOAWAY,
  // which a synchronous client does only when its backup poller runs (every 5 s).
  void drain(std::chrono::milliseconds grace);

  grpc::Status GetInfo(grpc::ServerContext* context, const pb::GetInfoRequest* request,
                       pb::DeviceInfo* response) override;
  grpc::Status Transform(grpc::ServerContext* context, const pb::TransformRequest* request,
                         pb::TransformResponse* response) override;
  grpc::Status TransformStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<pb::TransformResponse, pb::TransformRequest>* stream) override;
  grpc::Status LinearTransform(grpc::ServerContext* context,
                               const pb::LinearTransformRequest* request,
                               pb::LinearTransformResponse* response) override;

  // TransformStream over any stream: gRPC's (TransformStream above), or one with no network.
  grpc::Status serve_stream(
      grpc::ServerContext& context,
      grpc::ServerReaderWriterInterface<pb::TransformResponse, pb::TransformRequest>& stream);

 private:
  Status serve(const pb::TransformRequest& request, pb::TransformResponse* response,
               std::string_view rpc, RequestLog& log);
  Status serve(const pb::LinearTransformRequest& request, pb::LinearTransformResponse* response,
               RequestLog& log);
  Status authenticate(const grpc::ServerContext& context) const;
  // Runs one handler: authentication, admission, the body, and a catch-all, so that no exception
  // reaches gRPC (it would become UNKNOWN) and nothing aborts the server.
  template <typename Body>
  grpc::Status guarded(std::string_view rpc, const grpc::ServerContext& context, bool is_request,
                       Body&& body);
  void finish(std::string_view rpc, bool is_request, const Status& status, const RequestLog& log,
              std::chrono::steady_clock::time_point start);

  const std::shared_ptr<sim::Device> device_;
  sim::DeviceInfo info_;  // const after construction
  pb::DeviceInfo wire_info_;
  const ServerOptions options_;
  Counters counters_;
  std::atomic<bool> draining_{false};
  std::mutex idle_mutex_;  // only for waiting on idle_ during a drain
  std::condition_variable idle_;
};

}  // namespace opu::offload
