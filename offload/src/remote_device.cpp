#include "offload/remote_device.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <thread>

#include "internal.h"
#include "opu_sim/packing.h"

namespace opu::offload {
namespace {

using Clock = std::chrono::steady_clock;

// Room for everything but the payload in one message (shape fields, FrameInfo, framing).
constexpr std::int64_t kMessageOverhead = 1024;
// Server limit assumed when it does not announce one: gRPC's default.
constexpr std::int64_t kDefaultServerLimit = std::int64_t{4} << 20;

// HTTP/2 settings for bulk payloads (see where they are set).
constexpr int kFlowControlWindow = 16 << 20;
constexpr int kMaxFrameSize = (1 << 24) - 1;  // the HTTP/2 maximum

int clamp_to_int(std::int64_t value) {
  return static_cast<int>(std::clamp<std::int64_t>(value, 1, INT_MAX));
}

// One address as an IP literal for a static ipv4:/ipv6: target (round_robin over a list needs one
// name per server, and gRPC's static resolvers take literals only).
Result<std::pair<int, std::string>> resolve(const HostPort& address) {
  std::string host = address.host;
  if (host.front() == '[') return std::pair{AF_INET6, host + ":" + std::to_string(address.port)};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int error = getaddrinfo(host.c_str(), nullptr, &hints, &found); error != 0) {
    return unavailable("cannot resolve host '" + host + "': " + gai_strerror(error));
  }
  std::pair<int, std::string> out{0, ""};
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET && out.first != AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      out = {AF_INET, std::string(text) + ":" + std::to_string(address.port)};
    } else if (a->ai_family == AF_INET6 && out.first == 0) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a->ai_addr);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
      out = {AF_INET6, "[" + std::string(text) + "]:" + std::to_string(address.port)};
    }
  }
  freeaddrinfo(found);
  if (out.first == 0) return unavailable("host '" + host + "' has no IPv4 or IPv6 address");
  return out;
}

// The channel target: "host:port" for one server (gRPC's DNS resolver), "ipv4:a:p,b:p" for a list.
Result<std::string> channel_target(const std::vector<std::string>& addresses) {
  if (addresses.empty()) return invalid_argument("no server address given");
  std::vector<HostPort> parsed;
  for (const std::string& address : addresses) {
    Result<HostPort> hp = split_host_port(address, /*allow_port_zero=*/false);
    if (!hp.ok()) return hp.status();
    parsed.push_back(*hp);
  }
  if (parsed.size() == 1) return addresses.front();
  int family = 0;
  std::string list;
  for (const HostPort& hp : parsed) {
    Result<std::pair<int, std::string>> literal = resolve(hp);
    if (!literal.ok()) return literal.status();
    if (family != 0 && literal->first != family) {
      return invalid_argument("address list mixes IPv4 and IPv6 hosts; use one family");
    }
    family = literal->first;
    list += (list.empty() ? "" : ",") + literal->second;
  }
  return (family == AF_INET ? "ipv4:" : "ipv6:") + list;
}

std::string describe(const RemoteOptions& options) {
  std::string text = options.tls ? "grpcs://" : "grpc://";
  for (std::size_t i = 0; i < options.addresses.size(); ++i) {
    text += (i == 0 ? "" : ",") + options.addresses[i];
  }
  return text;
}

}  // namespace

struct RemoteDevice::Impl {
  RemoteOptions options;
  std::string description;  // "grpc://host:port", for messages
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::OpuDevice::Stub> stub;
  sim::DeviceInfo info;
  std::int64_t message_limit = kDefaultServerLimit;  // min(client's, server's)
  std::atomic<std::uint64_t> next_request_id{1};
  std::atomic<bool> linear_unimplemented{false};
  std::atomic<std::int64_t> rpcs{0}, retries{0}, chunked_calls{0}, linear_fallbacks{0};
  sim::ReferenceCache reference_cache;  // the fallback's I(r) between calls, as a SimDevice's

  void prepare(grpc::ClientContext& context, std::int64_t messages = 1) const {
    context.set_deadline(std::chrono::system_clock::now() +
                         options.deadline * std::max<std::int64_t>(1, messages));
    if (!options.token.empty()) context.AddMetadata("authorization", "Bearer " + options.token);
  }

  // The backoff between attempts: waits up to `backoff` for the channel to become READY, and
  // returns as soon as it is. Watching the channel also drives its reconnection: a synchronous
  // client polls its sockets only inside calls (or in gRPC's backup poller, every 5 s), so a plain
  // sleep would leave a restarted server's accepted connection unnoticed.
  void wait_for_channel(std::chrono::milliseconds backoff) const {
    const auto deadline = std::chrono::system_clock::now() + backoff;
    grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
    while (state != GRPC_CHANNEL_READY && channel->WaitForStateChange(state, deadline)) {
      state = channel->GetState(/*try_to_connect=*/true);
    }
  }

  // Runs `attempt(context)` until it succeeds, fails with anything but UNAVAILABLE, or the policy
  // runs out of attempts; backs off exponentially between attempts.
  template <typename Attempt>
  Status with_retries(std::string_view rpc, Attempt&& attempt) {
    auto backoff = options.retry.initial_backoff;
    const int attempts = std::max(1, options.retry.max_attempts);
    for (int k = 1;; ++k) {
      rpcs.fetch_add(1, std::memory_order_relaxed);
      Status status = attempt();
      if (status.ok() || status.code() != StatusCode::kUnavailable) return status;
      if (k >= attempts) {
        return status.with_context(std::string(rpc) + " on " + description +
                                   ": unavailable after " + std::to_string(k) + " attempts");
      }
      logger().debug("{} on {}: {}; retry {} in {} ms", rpc, description, status.message(), k,
                     backoff.count());
      retries.fetch_add(1, std::memory_order_relaxed);
      wait_for_channel(backoff);
      backoff = std::min(options.retry.max_backoff,
                         std::chrono::milliseconds(static_cast<std::int64_t>(
                             static_cast<double>(backoff.count()) * options.retry.multiplier)));
    }
  }

  Status get_info() {
    pb::DeviceInfo wire;
    Status status = with_retries("GetInfo", [&] {
      grpc::ClientContext context;
      prepare(context);
      return from_grpc(stub->GetInfo(&context, pb::GetInfoRequest(), &wire));
    });
    if (!status.ok()) return status.with_context("connecting to " + description);
    info = from_wire(wire);
    const std::int64_t server_limit =
        wire.max_message_bytes() > 0 ? wire.max_message_bytes() : kDefaultServerLimit;
    message_limit = std::min(server_limit, options.max_message_bytes);
    return {};
  }

  // Largest batch whose request and response each fit one message.
  std::int64_t chunk(std::int64_t in_bytes_per_sample, std::int64_t out_bytes_per_sample) const {
    const std::int64_t per_sample =
        std::max<std::int64_t>(1, std::max(in_bytes_per_sample, out_bytes_per_sample));
    std::int64_t batch = std::max<std::int64_t>(1, (message_limit - kMessageOverhead) / per_sample);
    if (info.max_batch > 0) batch = std::min(batch, info.max_batch);
    return batch;
  }

  int bytes_per_pixel() const { return info.adc_bits <= 8 ? 1 : 2; }

  pb::TransformRequest to_message(const sim::TransformRequest& request, std::int64_t first,
                                  std::int64_t count) {
    const std::int64_t frame_bytes = sim::packed_bytes(request.n_in);
    pb::TransformRequest message;
    message.set_n_in(request.n_in);
    message.set_n_out(request.n_out);
    message.set_batch(count);
    assign_bytes(message.mutable_inputs(), request.inputs.data() + first * frame_bytes,
                 static_cast<std::size_t>(count * frame_bytes));
    message.set_exposure_us(request.exposure_us);
    message.set_request_id(next_request_id.fetch_add(1, std::memory_order_relaxed));
    return message;
  }

  // A response must answer its own request: same id, same shape, the right byte count.
  Status check(const pb::TransformRequest& request, const pb::TransformResponse& response) const {
    const int bits = response.adc_bits() > 0 ? response.adc_bits() : info.adc_bits;
    const std::int64_t want = request.batch() * request.n_out() * (bits <= 8 ? 1 : 2);
    if (response.request_id() != request.request_id() || response.batch() != request.batch() ||
        response.n_out() != request.n_out() ||
        static_cast<std::int64_t>(response.frames().size()) != want) {
      return data_loss(
          "Transform on " + description + ": response (id " +
          std::to_string(response.request_id()) + ", batch " + std::to_string(response.batch()) +
          ", " + std::to_string(response.frames().size()) + " bytes) does not answer request (id " +
          std::to_string(request.request_id()) + ", batch " + std::to_string(request.batch()) +
          ", want " + std::to_string(want) + " bytes)");
    }
    return {};
  }

  Result<pb::TransformResponse> unary(const pb::TransformRequest& message) {
    pb::TransformResponse response;
    Status status = with_retries("Transform", [&] {
      grpc::ClientContext context;
      prepare(context);
      return from_grpc(stub->Transform(&context, message, &response));
    });
    if (!status.ok()) return status;
    OPU_RETURN_IF_ERROR(check(message, response));
    return response;
  }

  // Sends `messages` over TransformStream (a writer thread, so that neither side's flow control
  // can stall the other) and reads the responses in order. On UNAVAILABLE, resumes with the
  // messages not yet answered.
  Result<std::vector<pb::TransformResponse>> stream(
      std::span<const pb::TransformRequest> messages) {
    std::vector<pb::TransformResponse> responses;
    responses.reserve(messages.size());
    Status status = with_retries("TransformStream", [&]() -> Status {
      const std::size_t first = responses.size();
      grpc::ClientContext context;
      prepare(context, static_cast<std::int64_t>(messages.size() - first));
      auto call = stub->TransformStream(&context);
      std::thread writer([&] {
        for (std::size_t i = first; i < messages.size(); ++i) {
          if (!call->Write(messages[i])) break;
        }
        call->WritesDone();
      });
      Status mismatch;
      pb::TransformResponse response;
      while (responses.size() < messages.size() && call->Read(&response)) {
        mismatch = check(messages[responses.size()], response);
        if (!mismatch.ok()) {
          context.TryCancel();
          break;
        }
        responses.push_back(std::move(response));
        response = pb::TransformResponse();
      }
      writer.join();
      Status finished = from_grpc(call->Finish());
      if (!mismatch.ok()) return mismatch;
      if (!finished.ok()) return finished;
      if (responses.size() != messages.size()) {
        return data_loss("TransformStream on " + description + ": " +
                         std::to_string(responses.size()) + " responses to " +
                         std::to_string(messages.size()) + " requests");
      }
      return {};
    });
    if (!status.ok()) return status;
    return responses;
  }

  sim::Frames to_frames(const pb::TransformResponse& response) const {
    sim::Frames frames;
    frames.n_out = response.n_out();
    frames.batch = response.batch();
    frames.adc_bits = response.adc_bits() > 0 ? response.adc_bits() : info.adc_bits;
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(response.frames().data());
    frames.data.assign(bytes, bytes + response.frames().size());
    frames.info = from_wire(response.info());
    return frames;
  }
};

namespace {

// FrameInfo of consecutive chunks: one span of device time, summed frames and saturations.
void merge(sim::FrameInfo& total, const sim::FrameInfo& chunk, bool first) {
  if (first) {
    total = chunk;
    return;
  }
  total.device_time_end_ns = chunk.device_time_end_ns;
  total.frames += chunk.frames;
  total.saturated_pixels += chunk.saturated_pixels;
}

}  // namespace

Result<std::unique_ptr<RemoteDevice>> RemoteAccess::connect(std::shared_ptr<grpc::Channel> channel,
                                                            const RemoteOptions& options,
                                                            std::string description) {
  auto impl = std::make_unique<RemoteDevice::Impl>();
  impl->options = options;
  impl->description = std::move(description);
  impl->channel = std::move(channel);
  impl->stub = pb::OpuDevice::NewStub(impl->channel);
  // Ids start at a random-ish point so that the ids of several clients of one server rarely meet
  // (they only have to be unique per client; this helps reading server logs).
  impl->next_request_id =
      (static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()) & 0xFFFFFFFFULL) << 20;
  OPU_RETURN_IF_ERROR(impl->get_info());
  return std::unique_ptr<RemoteDevice>(new RemoteDevice(std::move(impl)));
}

Result<std::unique_ptr<RemoteDevice>> RemoteDevice::connect(const RemoteOptions& options) {
  const std::string description = describe(options);
  Result<std::string> target = channel_target(options.addresses);
  if (!target.ok()) return target.status().with_context(description);
  if (options.max_message_bytes < 4096) {
    return invalid_argument(description + ": max_message_bytes is " +
                            std::to_string(options.max_message_bytes) + ", want >= 4096");
  }

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(clamp_to_int(options.max_message_bytes));
  args.SetMaxSendMessageSize(clamp_to_int(options.max_message_bytes));
  // Each RemoteDevice gets its own connections: a restarted or drained server affects only the
  // clients that talk to it, and tests with several clients measure several connections.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Reconnect quickly after a server restart: gRPC's default first backoff is one second, longer
  // than the retry policy would wait. (Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: that one is also the
  // connect timeout, and a short one fails connections to a busy server or through a slow TLS
  // handshake.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              clamp_to_int(options.retry.initial_backoff.count()));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, clamp_to_int(options.retry.max_backoff.count()));
  // HTTP/2 flow control: the default 64 KiB window would stall every response above it for a
  // WINDOW_UPDATE round trip (a DFA projection batch is 128 KiB); bulk data wants a big window.
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kFlowControlWindow);
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, kMaxFrameSize);
  if (options.addresses.size() > 1) {
    args.SetServiceConfigJSON(R"({"loadBalancingConfig":[{"round_robin":{}}]})");
  }

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.ca_pem;
    credentials = grpc::SslCredentials(ssl);
    std::string name = options.server_name;
    if (name.empty()) {
      Result<HostPort> first = split_host_port(options.addresses.front(), false);
      if (first.ok()) name = first->host;
    }
    // A static ipv4: list has no host name to check the certificate against.
    if (!name.empty()) args.SetSslTargetNameOverride(name);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return RemoteAccess::connect(grpc::CreateCustomChannel(*target, credentials, args), options,
                               description);
}

RemoteDevice::RemoteDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RemoteDevice::~RemoteDevice() = default;

sim::DeviceInfo RemoteDevice::info() const { return impl_->info; }

std::int64_t RemoteDevice::transform_chunk(std::int64_t n_in, std::int64_t n_out) const {
  return impl_->chunk(sim::packed_bytes(n_in), n_out * impl_->bytes_per_pixel());
}

std::int64_t RemoteDevice::linear_chunk(std::int64_t n_in, std::int64_t n_out) const {
  return impl_->chunk(4 * n_in, 4 * n_out);
}

RemoteStats RemoteDevice::stats() const {
  return {impl_->rpcs.load(), impl_->retries.load(), impl_->chunked_calls.load(),
          impl_->linear_fallbacks.load()};
}

Result<sim::Frames> RemoteDevice::do_transform(const sim::TransformRequest& request) {
  Impl& impl = *impl_;
  const std::int64_t chunk = transform_chunk(request.n_in, request.n_out);
  if (request.batch <= chunk) {
    Result<pb::TransformResponse> response = impl.unary(impl.to_message(request, 0, request.batch));
    if (!response.ok()) return response.status();
    return impl.to_frames(*response);
  }

  // Above the message limit: chunks over one stream, concatenated.
  impl.chunked_calls.fetch_add(1, std::memory_order_relaxed);
  std::vector<pb::TransformRequest> messages;
  for (std::int64_t first = 0; first < request.batch; first += chunk) {
    messages.push_back(impl.to_message(request, first, std::min(chunk, request.batch - first)));
  }
  Result<std::vector<pb::TransformResponse>> responses = impl.stream(messages);
  if (!responses.ok()) return responses.status();
  sim::Frames frames;
  frames.n_out = request.n_out;
  frames.batch = request.batch;
  frames.adc_bits =
      responses->front().adc_bits() > 0 ? responses->front().adc_bits() : impl.info.adc_bits;
  frames.data.reserve(
      static_cast<std::size_t>(request.batch * request.n_out * frames.bytes_per_pixel()));
  for (std::size_t i = 0; i < responses->size(); ++i) {
    const pb::TransformResponse& part = (*responses)[i];
    frames.data.insert(frames.data.end(), part.frames().begin(), part.frames().end());
    merge(frames.info, from_wire(part.info()), i == 0);
  }
  return frames;
}

Result<std::vector<sim::Frames>> RemoteDevice::transform_many(
    std::span<const sim::TransformRequest> requests) {
  Impl& impl = *impl_;
  std::vector<pb::TransformRequest> messages;
  messages.reserve(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const sim::TransformRequest& request = requests[i];
    if (Status status = sim::validate(request, impl.info); !status.ok()) {
      return status.with_context("transform_many: request " + std::to_string(i));
    }
    if (request.batch > transform_chunk(request.n_in, request.n_out)) {
      return invalid_argument("transform_many: request " + std::to_string(i) + " has batch " +
                              std::to_string(request.batch) + ", above one message (" +
                              std::to_string(transform_chunk(request.n_in, request.n_out)) +
                              "); use transform() for it");
    }
    messages.push_back(impl.to_message(request, 0, request.batch));
  }
  std::vector<sim::Frames> out;
  if (messages.empty()) return out;
  Result<std::vector<pb::TransformResponse>> responses = impl.stream(messages);
  if (!responses.ok()) return responses.status();
  out.reserve(responses->size());
  for (const pb::TransformResponse& response : *responses) out.push_back(impl.to_frames(response));
  return out;
}

Result<sim::Projections> RemoteDevice::do_linear_transform(const sim::LinearRequest& request) {
  Impl& impl = *impl_;
  auto fallback = [&]() -> Result<sim::Projections> {
    impl.linear_fallbacks.fetch_add(1, std::memory_order_relaxed);
    return sim::linear_transform_from_frames(request, impl.info, impl.options.holography,
                                             sim::device_frame_capture(*this),
                                             &impl.reference_cache);
  };
  if (!impl.info.supports_linear || impl.linear_unimplemented.load()) return fallback();

  const std::int64_t chunk = linear_chunk(request.n_in, request.n_out);
  if (request.batch > chunk) impl.chunked_calls.fetch_add(1, std::memory_order_relaxed);
  sim::Projections out;
  out.values.resize(request.n_out, request.batch);
  for (std::int64_t first = 0; first < request.batch; first += chunk) {
    const std::int64_t count = std::min(chunk, request.batch - first);
    pb::LinearTransformRequest message;
    message.set_n_in(request.n_in);
    message.set_n_out(request.n_out);
    message.set_batch(count);
    assign_bytes(message.mutable_values(), request.values.data() + first * request.n_in,
                 static_cast<std::size_t>(count * request.n_in) * sizeof(float));
    to_wire(request.options, &message);
    message.set_request_id(impl.next_request_id.fetch_add(1, std::memory_order_relaxed));

    pb::LinearTransformResponse response;
    Status status = impl.with_retries("LinearTransform", [&] {
      grpc::ClientContext context;
      impl.prepare(context);
      return from_grpc(impl.stub->LinearTransform(&context, message, &response));
    });
    if (status.code() == StatusCode::kUnimplemented && first == 0) {
      // A device that only takes frames: remember it, and linearise here from now on.
      logger().info("{}: LinearTransform unimplemented, linearising from frames on the client",
                    impl.description);
      impl.linear_unimplemented.store(true);
      return fallback();
    }
    if (!status.ok()) return status;
    const std::size_t want = static_cast<std::size_t>(count * request.n_out) * sizeof(float);
    if (response.request_id() != message.request_id() || response.batch() != count ||
        response.n_out() != request.n_out || response.projections().size() != want) {
      return data_loss(
          "LinearTransform on " + impl.description + ": response (id " +
          std::to_string(response.request_id()) + ", " +
          std::to_string(response.projections().size()) + " bytes) does not answer request (id " +
          std::to_string(message.request_id()) + ", want " + std::to_string(want) + " bytes)");
    }
    // Wire layout (batch x n_out, sample after sample) is the column-major n_out x batch matrix.
    std::memcpy(out.values.data() + first * request.n_out, response.projections().data(), want);
    merge(out.info, from_wire(response.info()), first == 0);
  }
  return out;
}

}  // namespace opu::offload
