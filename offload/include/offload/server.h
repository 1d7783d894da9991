// The OPU server: serves any opu::sim::Device as the gRPC service opu.v1.OpuDevice (the engine of
// opu-serve, usable in-process by tests and tools).
//
// Every RPC handler runs inside one guard: authentication, admission (RESOURCE_EXHAUSTED above
// max_inflight), wire-level validation with actionable messages, and a catch-all that turns any
// escaped exception into a status. Nothing a client sends can abort the server, and one bad
// request never harms the next. The standard health service and server reflection are on.
//
// Thread-safe. The service holds only const state (the device pointer, options) and atomic
// counters; the device serialises its own clock (one physical timeline: the frames of a request
// never interleave with another's).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "offload/remote_device.h"
#include "opu_sim/device.h"
#include "opu_sim/status.h"

namespace opu::offload {

struct ServerOptions {
  /// "HOST:PORT" to listen on; port 0 picks a free port (see Server::address()).
  std::string listen = "127.0.0.1:0";
  /// TLS: PEM contents of the certificate chain and private key; both empty = plaintext.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  /// Bearer token every OpuDevice call must carry ("authorization: Bearer <token>"); empty = none.
  /// The health and reflection services stay open (load balancers probe them).
  std::string token;
  /// Largest message received or sent, bytes. Announced in DeviceInfo.max_message_bytes so that
  /// clients chunk below it; a larger message is refused by gRPC with RESOURCE_EXHAUSTED.
  std::int64_t max_message_bytes = std::int64_t{64} << 20;
  /// Requests served at once; more are refused with RESOURCE_EXHAUSTED (clients back off).
  int max_inflight = 64;
  /// false: answer LinearTransform with UNIMPLEMENTED, like a device that only takes frames.
  bool serve_linear = true;
  /// Called at the start of every OpuDevice handler, after admission (tests use it to hold a
  /// request in flight). Must be thread-safe.
  std::function<void()> on_request_start;
};

/// Counters since start. "requests" counts Transform and LinearTransform calls and every message
/// of a TransformStream; GetInfo calls are counted apart.
struct ServerStats {
  std::int64_t requests = 0;
  std::int64_t get_info = 0;
  std::int64_t frames = 0;                 // camera frames taken for successful requests
  std::int64_t bytes_in = 0;               // payload bytes received (inputs, values)
  std::int64_t bytes_out = 0;              // payload bytes sent (frames, projections)
  std::int64_t in_flight = 0;              // handlers running now
  std::array<std::int64_t, 17> by_code{};  // outcomes of requests and GetInfo, by status code
  std::int64_t errors() const;             // all outcomes but OK
  /// "requests 1600, frames 51200, errors 3 (INVALID_ARGUMENT 2, UNAUTHENTICATED 1), ..."
  std::string summary() const;
};

class Server {
 public:
  /// Starts serving `device`. UNAVAILABLE when the address cannot be bound, INVALID_ARGUMENT for
  /// inconsistent options (a certificate without its key, ...).
  static Result<std::unique_ptr<Server>> start(std::shared_ptr<sim::Device> device,
                                               const ServerOptions& options);
  /// Shuts down (no grace) when still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound address, "HOST:PORT" with the port actually chosen.
  const std::string& address() const;
  int port() const;

  /// A client over an in-process channel (no sockets): the same service, stubs and codecs.
  /// `options.addresses` and TLS settings are ignored; the token is sent when set.
  Result<std::unique_ptr<RemoteDevice>> connect_in_process(const RemoteOptions& options = {});

  /// Graceful shutdown: health turns NOT_SERVING, new calls are refused with UNAVAILABLE (which
  /// clients retry), calls in flight get up to `grace` to finish and are cancelled after it; then
  /// connections close. Returns when that is done. Idempotent; thread-safe.
  void shutdown(std::chrono::milliseconds grace);
  /// Blocks until the server has shut down.
  void wait();

  ServerStats stats() const;

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace opu::offload
