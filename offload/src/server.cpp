#include "offload/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <new>
#include <sstream>
#include <vector>

#include "internal.h"
#include "opu_sim/packing.h"
#include "service.h"

namespace opu::offload {
namespace {

using Clock = std::chrono::steady_clock;

std::string str(std::int64_t value) { return std::to_string(value); }

// Constant-time comparison: the time a wrong token takes must not reveal how much of it matched.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// Wire-level checks of a TransformRequest: what the bytes must look like before anything reads
// them. Device limits come next (sim::validate, inside Device::transform()).
Status check_request(const pb::TransformRequest& r, const sim::DeviceInfo& info,
                     std::string_view rpc) {
  const std::string at(rpc);
  if (r.n_in() <= 0) return invalid_argument(at + ": n_in is " + str(r.n_in()) + ", want >= 1");
  if (r.n_out() <= 0) return invalid_argument(at + ": n_out is " + str(r.n_out()) + ", want >= 1");
  if (r.batch() <= 0) return invalid_argument(at + ": batch is " + str(r.batch()) + ", want >= 1");
  if (r.n_in() > info.max_n_in) {
    return out_of_range(at + ": n_in " + str(r.n_in()) + " above device max_n_in " +
                        str(info.max_n_in));
  }
  if (r.n_out() > info.max_n_out) {
    return out_of_range(at + ": n_out " + str(r.n_out()) + " above device max_n_out " +
                        str(info.max_n_out));
  }
  if (info.max_batch > 0 && r.batch() > info.max_batch) {
    return out_of_range(at + ": batch " + str(r.batch()) + " above device max_batch " +
                        str(info.max_batch) + "; split it or use TransformStream");
  }
  // Both factors are bounded by the device limits above: no overflow.
  const std::int64_t want = r.batch() * sim::packed_bytes(r.n_in());
  if (static_cast<std::int64_t>(r.inputs().size()) != want) {
    return invalid_argument(at + ": inputs has " +
                            str(static_cast<std::int64_t>(r.inputs().size())) +
                            " bytes, want batch*ceil(n_in/8) = " + str(want));
  }
  if (!std::isfinite(r.exposure_us()) || r.exposure_us() < 0.0) {
    return invalid_argument(at + ": exposure_us is " + std::to_string(r.exposure_us()) +
                            ", want a finite value >= 0 (0 = device default)");
  }
  if (info.max_exposure_us > 0.0 && r.exposure_us() > info.max_exposure_us) {
    return out_of_range(at + ": exposure_us " + std::to_string(r.exposure_us()) +
                        " above device max_exposure_us " + std::to_string(info.max_exposure_us));
  }
  return {};
}

Status check_request(const pb::LinearTransformRequest& r, const sim::DeviceInfo& info) {
  const std::string at = "LinearTransform";
  if (r.n_in() <= 0) return invalid_argument(at + ": n_in is " + str(r.n_in()) + ", want >= 1");
  if (r.n_out() <= 0) return invalid_argument(at + ": n_out is " + str(r.n_out()) + ", want >= 1");
  if (r.batch() <= 0) return invalid_argument(at + ": batch is " + str(r.batch()) + ", want >= 1");
  if (r.n_in() > info.max_n_in) {
    return out_of_range(at + ": n_in " + str(r.n_in()) + " above device max_n_in " +
                        str(info.max_n_in));
  }
  if (r.n_out() > info.max_n_out) {
    return out_of_range(at + ": n_out " + str(r.n_out()) + " above device max_n_out " +
                        str(info.max_n_out));
  }
  if (info.max_batch > 0 && r.batch() > info.max_batch) {
    return out_of_range(at + ": batch " + str(r.batch()) + " above device max_batch " +
                        str(info.max_batch) + "; split it");
  }
  const std::int64_t want = 4 * r.batch() * r.n_in();
  if (static_cast<std::int64_t>(r.values().size()) != want) {
    return invalid_argument(at + ": values has " +
                            str(static_cast<std::int64_t>(r.values().size())) +
                            " bytes, want 4*batch*n_in = " + str(want));
  }
  // The encoding's own parameters (threshold, bitplanes) are checked by sim::validate().
  if (r.encoding() == pb::ENCODING_UNSPECIFIED || !pb::Encoding_IsValid(r.encoding())) {
    return invalid_argument(at + ": encoding " + str(r.encoding()) +
                            " unknown, want TERNARY (1), BITPLANES (2) or STOCHASTIC (3)");
  }
  return {};
}

// The one copy of a linear request: wire bytes into aligned floats (reading a std::string's bytes
// through a float pointer would be undefined), checking every value on the way.
Result<std::vector<float>> unpack_values(const pb::LinearTransformRequest& r) {
  std::vector<float> values(r.values().size() / sizeof(float));
  std::memcpy(values.data(), r.values().data(), values.size() * sizeof(float));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      const auto n_in = static_cast<std::size_t>(r.n_in());
      return invalid_argument("LinearTransform: values[" + std::to_string(i) + "] (sample " +
                              std::to_string(i / n_in) + ", feature " + std::to_string(i % n_in) +
                              ") is " + std::to_string(values[i]) + ", want a finite number");
    }
  }
  return values;
}

// `status` with the RPC's name in front, unless the device's message already starts with it (the
// simulator names the RPC in each of its errors: "LinearTransform: LinearTransform: ..." otherwise).
Status naming_rpc(std::string_view rpc, const Status& status) {
  const std::string_view message = status.message();
  if (message.starts_with(rpc) && message.substr(rpc.size()).starts_with(":")) return status;
  return status.with_context(rpc);
}

}  // namespace

OpuService::OpuService(std::shared_ptr<sim::Device> device, const ServerOptions& options)
    : device_(std::move(device)), info_(device_->info()), options_(options) {
  info_.supports_linear = info_.supports_linear && options_.serve_linear;
  to_wire(info_, &wire_info_);
  wire_info_.set_max_message_bytes(options_.max_message_bytes);
}

void OpuService::drain(std::chrono::milliseconds grace) {
  draining_.store(true);
  std::unique_lock<std::mutex> lock(idle_mutex_);
  idle_.wait_for(lock, grace, [&] { return counters_.in_flight().load() == 0; });
}

Status OpuService::authenticate(const grpc::ServerContext& context) const {
  if (options_.token.empty()) return {};
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  if (found == metadata.end()) {
    return {StatusCode::kUnauthenticated,
            "missing authorization metadata, want 'authorization: Bearer <token>'"};
  }
  const std::string_view value(found->second.data(), found->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (!value.starts_with(kBearer)) {
    return {StatusCode::kUnauthenticated, "authorization metadata is not 'Bearer <token>'"};
  }
  if (!same_secret(value.substr(kBearer.size()), options_.token)) {
    return {StatusCode::kUnauthenticated, "wrong bearer token"};
  }
  return {};
}

template <typename Body>
grpc::Status OpuService::guarded(std::string_view rpc, const grpc::ServerContext& context,
                                 bool is_request, Body&& body) {
  const auto start = Clock::now();
  RequestLog log;
  Status status = authenticate(context);
  if (status.ok()) {
    // Count first, then look at draining_: with both sequentially consistent, either drain()
    // sees this call in flight or this call sees the drain.
    const std::int64_t running = counters_.in_flight().fetch_add(1) + 1;
    if (draining_.load()) {
      status = unavailable(std::string(rpc) + ": server shutting down");
    } else if (running > options_.max_inflight) {
      status = {StatusCode::kResourceExhausted, std::string(rpc) + ": server busy, " +
                                                    str(running) + " requests in flight, limit " +
                                                    str(options_.max_inflight) + "; retry later"};
    } else {
      try {
        if (options_.on_request_start) options_.on_request_start();
        // A call whose client gave up (deadline passed, cancelled) while it waited for a thread
        // is not worth device time.
        if (context.IsCancelled()) {
          status = {StatusCode::kCancelled,
                    std::string(rpc) + ": cancelled or past its deadline before it started"};
        } else {
          status = body(log);
        }
      } catch (const StatusError& e) {
        status = e.status().with_context(rpc);
      } catch (const std::bad_alloc&) {
        status = {StatusCode::kResourceExhausted, std::string(rpc) + ": out of memory"};
      } catch (const std::exception& e) {
        status = internal_error(std::string(rpc) + ": unexpected exception: " + e.what());
      } catch (...) {
        status = internal_error(std::string(rpc) + ": unexpected non-standard exception");
      }
    }
    counters_.in_flight().fetch_sub(1);
    if (draining_.load()) {
      const std::lock_guard<std::mutex> lock(idle_mutex_);
      idle_.notify_all();
    }
  }
  // A stream's messages are counted one by one; the stream itself only when it fails on its own
  // (authentication, admission, an exception).
  const bool stream = rpc == "TransformStream";
  if (!stream || (!status.ok() && !log.recorded)) finish(rpc, is_request, status, log, start);
  return to_grpc(status);
}

void OpuService::finish(std::string_view rpc, bool is_request, const Status& status,
                        const RequestLog& log, Clock::time_point start) {
  counters_.record(is_request, status, log);
  auto& out = logger();
  if (status.code() == StatusCode::kInternal || status.code() == StatusCode::kUnknown) {
    out.warn("{} id={} failed: {}", rpc, log.request_id, status.to_string());  // a bug
  } else if (out.should_log(spdlog::level::debug)) {
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    out.debug("{} id={} batch={} bytes_in={} bytes_out={} frames={} latency_us={} {}", rpc,
              log.request_id, log.batch, log.bytes_in, log.bytes_out, log.frames, us,
              status_code_name(status.code()));
  }
}

grpc::Status OpuService::GetInfo(grpc::ServerContext* context,
                                 const pb::GetInfoRequest* /*request*/, pb::DeviceInfo* response) {
  return guarded("GetInfo", *context, /*is_request=*/false, [&](RequestLog&) {
    *response = wire_info_;
    return Status{};
  });
}

grpc::Status OpuService::Transform(grpc::ServerContext* context,
                                   const pb::TransformRequest* request,
                                   pb::TransformResponse* response) {
  return guarded("Transform", *context, /*is_request=*/true,
                 [&](RequestLog& log) { return serve(*request, response, "Transform", log); });
}

grpc::Status OpuService::TransformStream(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pb::TransformResponse, pb::TransformRequest>* stream) {
  return serve_stream(*context, *stream);
}

grpc::Status OpuService::serve_stream(
    grpc::ServerContext& context,
    grpc::ServerReaderWriterInterface<pb::TransformResponse, pb::TransformRequest>& stream) {
  // The guard covers the stream as a whole (authentication, admission, exceptions); each message
  // is counted and logged as a request of its own.
  return guarded("TransformStream", context, /*is_request=*/true, [&](RequestLog& stream_log) {
    pb::TransformRequest request;
    pb::TransformResponse response;
    while (stream.Read(&request)) {
      if (context.IsCancelled()) return Status(StatusCode::kCancelled, "stream cancelled");
      RequestLog log;
      const auto start = Clock::now();
      Status status = serve(request, &response, "TransformStream", log);
      finish("TransformStream", /*is_request=*/true, status, log, start);
      if (!status.ok()) {
        stream_log.recorded = true;
        return status;
      }
      if (!stream.Write(response)) {
        return Status(StatusCode::kCancelled, "TransformStream: client went away");
      }
      response.Clear();
    }
    return Status{};
  });
}

grpc::Status OpuService::LinearTransform(grpc::ServerContext* context,
                                         const pb::LinearTransformRequest* request,
                                         pb::LinearTransformResponse* response) {
  return guarded("LinearTransform", *context, /*is_request=*/true,
                 [&](RequestLog& log) { return serve(*request, response, log); });
}

Status OpuService::serve(const pb::TransformRequest& request, pb::TransformResponse* response,
                         std::string_view rpc, RequestLog& log) {
  log.request_id = request.request_id();
  log.batch = request.batch();
  log.bytes_in = static_cast<std::int64_t>(request.inputs().size());
  OPU_RETURN_IF_ERROR(check_request(request, info_, rpc));
  sim::TransformRequest call;
  call.n_in = request.n_in();
  call.n_out = request.n_out();
  call.batch = request.batch();
  // Read in place: the request's bytes are the frames.
  call.inputs = {reinterpret_cast<const std::uint8_t*>(request.inputs().data()),
                 request.inputs().size()};
  call.exposure_us = request.exposure_us();
  Result<sim::Frames> frames = device_->transform(call);
  if (!frames.ok()) return frames.status().with_context(rpc);
  response->set_n_out(frames->n_out);
  response->set_batch(frames->batch);
  response->set_adc_bits(frames->adc_bits);
  assign_bytes(response->mutable_frames(), frames->data.data(), frames->data.size());
  to_wire(frames->info, response->mutable_info());
  response->set_request_id(request.request_id());
  log.frames = frames->info.frames;
  log.bytes_out = static_cast<std::int64_t>(frames->data.size());
  return {};
}

Status OpuService::serve(const pb::LinearTransformRequest& request,
                         pb::LinearTransformResponse* response, RequestLog& log) {
  log.request_id = request.request_id();
  log.batch = request.batch();
  log.bytes_in = static_cast<std::int64_t>(request.values().size());
  if (!options_.serve_linear) {
    return unimplemented(
        "LinearTransform: this device takes frames only (supports_linear = false); linearise "
        "from Transform frames on the client side");
  }
  OPU_RETURN_IF_ERROR(check_request(request, info_));
  Result<std::vector<float>> values = unpack_values(request);
  if (!values.ok()) return values.status();
  sim::LinearRequest call;
  call.n_in = request.n_in();
  call.n_out = request.n_out();
  call.batch = request.batch();
  call.values = *values;
  call.options = linear_options_from_wire(request);
  Result<sim::Projections> projections = device_->linear_transform(call);
  if (!projections.ok()) return naming_rpc("LinearTransform", projections.status());
  const Eigen::MatrixXf& p = projections->values;
  OPU_CHECK(p.rows() == request.n_out() && p.cols() == request.batch(),
            "device returned projections of the wrong shape");
  response->set_n_out(p.rows());
  response->set_batch(p.cols());
  // n_out x batch column-major is batch x n_out sample after sample: the wire layout.
  assign_bytes(response->mutable_projections(), p.data(),
               static_cast<std::size_t>(p.size()) * sizeof(float));
  to_wire(projections->info, response->mutable_info());
  response->set_request_id(request.request_id());
  log.frames = projections->info.frames;
  log.bytes_out = static_cast<std::int64_t>(response->projections().size());
  return {};
}

namespace {

int clamp_to_int(std::int64_t value) {
  return static_cast<int>(std::clamp<std::int64_t>(value, 1, INT_MAX));
}

}  // namespace

std::int64_t ServerStats::errors() const {
  std::int64_t total = 0;
  for (std::size_t i = 1; i < by_code.size(); ++i) total += by_code[i];
  return total;
}

std::string ServerStats::summary() const {
  std::ostringstream text;
  text << "requests " << requests << ", get_info " << get_info << ", frames " << frames << ", in "
       << bytes_in << " B, out " << bytes_out << " B, errors " << errors();
  if (errors() > 0) {
    text << " (";
    bool first = true;
    for (std::size_t i = 1; i < by_code.size(); ++i) {
      if (by_code[i] == 0) continue;
      text << (first ? "" : ", ") << status_code_name(static_cast<StatusCode>(i)) << " "
           << by_code[i];
      first = false;
    }
    text << ")";
  }
  text << ", in flight " << in_flight;
  return text.str();
}

namespace {

// A request that does not parse as its protobuf message never reaches a handler: gRPC answers it
// INTERNAL with an empty message, the code docs/offload.md keeps for bugs. It is a malformed
// request, so it becomes INVALID_ARGUMENT saying what is wrong. Unary calls only: in a stream, a
// message that does not parse ends Read() like the client's half-close, indistinguishably, and the
// stream ends OK after the answers to the messages before it (docs/offload.md, "Soak").
class UnparsedRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit UnparsedRequestInterceptor(grpc::experimental::ServerRpcInfo* info) : info_(info) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using Hook = grpc::experimental::InterceptionHookPoints;
    if (info_->type() == grpc::experimental::ServerRpcInfo::Type::UNARY) {
      if (methods->QueryInterceptionHookPoint(Hook::POST_RECV_MESSAGE) &&
          methods->GetRecvMessage() == nullptr) {
        unparsed_ = true;
      }
      if (unparsed_ && methods->QueryInterceptionHookPoint(Hook::PRE_SEND_STATUS) &&
          methods->GetSendStatus().error_code() == grpc::StatusCode::INTERNAL) {
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            std::string(info_->method()) + ": the request is not a valid protobuf message of "
                                           "its type (opu/v1/opu.proto)"));
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  bool unparsed_ = false;
};

class UnparsedRequestInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new UnparsedRequestInterceptor(info);
  }
};

}  // namespace

struct Server::Impl {
  std::unique_ptr<OpuService> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
  int port = 0;
  std::int64_t max_message_bytes = 0;
  std::once_flag shutdown_once;
};

Result<std::unique_ptr<Server>> Server::start(std::shared_ptr<sim::Device> device,
                                              const ServerOptions& options) {
  if (!device) return invalid_argument("Server: no device to serve");
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return invalid_argument("Server: TLS needs both a certificate and its key, got only the " +
                            std::string(options.tls_cert_pem.empty() ? "key" : "certificate"));
  }
  if (options.max_message_bytes < 4096) {
    return invalid_argument("Server: max_message_bytes is " + str(options.max_message_bytes) +
                            ", want >= 4096");
  }
  if (options.max_inflight < 1) {
    return invalid_argument("Server: max_inflight is " + str(options.max_inflight) + ", want >= 1");
  }
  Result<HostPort> listen = split_host_port(options.listen, /*allow_port_zero=*/true);
  if (!listen.ok()) return listen.status().with_context("Server: --listen");

  auto impl = std::make_unique<Impl>();
  impl->max_message_bytes = options.max_message_bytes;
  impl->service = std::make_unique<OpuService>(std::move(device), options);

  // Process-wide switches of gRPC; both must be set before a builder is made.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (options.tls_cert_pem.empty()) {
    credentials = grpc::InsecureServerCredentials();
  } else {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &impl->port);
  builder.RegisterService(impl->service.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<UnparsedRequestInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.SetMaxReceiveMessageSize(clamp_to_int(options.max_message_bytes));
  builder.SetMaxSendMessageSize(clamp_to_int(options.max_message_bytes));
  // HTTP/2 flow control sized for bulk payloads: with the default 64 KiB window every larger
  // response waits a WINDOW_UPDATE round trip.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, (1 << 24) - 1);
  // A port another server holds is an error, not a silent share (gRPC sets SO_REUSEPORT by
  // default).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return unavailable("Server: cannot listen on '" + options.listen +
                       "' (address in use, not local, or a bad certificate/key)");
  }
  impl->address = listen->host + ":" + std::to_string(impl->port);
  if (auto* health = impl->server->GetHealthCheckService()) {
    health->SetServingStatus(true);
  }
  logger().info("serving opu.v1.OpuDevice on {}{}{}", impl->address,
                options.tls_cert_pem.empty() ? " (plaintext)" : " (TLS)",
                options.token.empty() ? "" : " with bearer token");
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  shutdown(std::chrono::milliseconds(0));
  wait();
}

const std::string& Server::address() const { return impl_->address; }
int Server::port() const { return impl_->port; }

Result<std::unique_ptr<RemoteDevice>> Server::connect_in_process(const RemoteOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(clamp_to_int(options.max_message_bytes));
  args.SetMaxSendMessageSize(clamp_to_int(options.max_message_bytes));
  return RemoteAccess::connect(impl_->server->InProcessChannel(args), options,
                               "in-process " + impl_->address);
}

void Server::shutdown(std::chrono::milliseconds grace) {
  std::call_once(impl_->shutdown_once, [&] {
    if (auto* health = impl_->server->GetHealthCheckService()) health->Shutdown();
    const auto end = std::chrono::system_clock::now() + grace;
    impl_->service->drain(grace);
    // No handler runs any more (or the grace is over). Their last responses may still be on their
    // way out: give them what is left of the grace, at most kFlushWindow, then close connections
    // and cancel the rest rather than wait for idle clients to acknowledge a GOAWAY.
    constexpr auto kFlushWindow = std::chrono::seconds(2);
    impl_->server->Shutdown(std::min(end, std::chrono::system_clock::now() + kFlushWindow));
  });
}

void Server::wait() { impl_->server->Wait(); }

ServerStats Server::stats() const { return impl_->service->stats(); }

}  // namespace opu::offload
