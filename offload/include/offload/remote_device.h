// The remote device: opu::sim::Device over a gRPC channel to any opu.v1.OpuDevice server
// (opu-serve, or a real device's driver).
//
// What it adds over a bare stub:
// - deadlines on every call, and retries with exponential backoff on UNAVAILABLE (the server is
//   down, restarting or draining). Transform and LinearTransform are retried too: a repeated
//   request costs device time again but its answer is as valid as the first one;
// - chunking: a batch whose request or response would exceed the message size limit (the smaller
//   of the client's and the server's) is split into chunks; frames and projections come back
//   concatenated, and FrameInfo spans from the first chunk's start to the last chunk's end.
//   Transform chunks travel over one TransformStream (pipelined, in order);
// - linear mode on devices without it: when the server answers LinearTransform with UNIMPLEMENTED
//   (or reports supports_linear = false), the client linearises from raw Transform frames with
//   sim::linear_transform_from_frames(), the same code the simulator runs;
// - several addresses: load spread with gRPC's round_robin policy (replicas with the same seed are
//   the same device).
//
// Thread-safe: any number of threads may call one RemoteDevice at once (each call is its own RPC;
// the channel multiplexes them).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "opu_sim/device.h"
#include "opu_sim/holography.h"
#include "opu_sim/status.h"

namespace opu::offload {

/// Retries of calls that failed with UNAVAILABLE. Backoff before attempt k (k >= 2) is
/// min(initial_backoff * multiplier^(k-2), max_backoff).
struct RetryPolicy {
  int max_attempts = 8;  // 1 = no retries
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{1000};
  double multiplier = 2.0;
};

struct RemoteOptions {
  /// "host:port" of each server. More than one: round_robin over them (hosts are resolved once,
  /// at connect time, to one IP family).
  std::vector<std::string> addresses;
  /// TLS (grpcs://). ca_pem: the PEM of the CA that signed the server's certificate; empty = the
  /// system's roots.
  bool tls = false;
  std::string ca_pem;
  /// TLS name to check the server's certificate against; empty = the first address's host.
  std::string server_name;
  /// Bearer token sent as "authorization: Bearer <token>"; empty = none.
  std::string token;
  /// Deadline of one RPC attempt (a stream gets this per message it carries).
  std::chrono::milliseconds deadline{60000};
  RetryPolicy retry;
  /// The client's message size limit, bytes; batches are chunked below min(this, server's limit).
  std::int64_t max_message_bytes = std::int64_t{64} << 20;
  /// Linearisation settings used when the client falls back to raw frames.
  sim::HolographyConfig holography;
};

/// What a RemoteDevice did so far (for tests, benchmarks and logs).
struct RemoteStats {
  std::int64_t rpcs = 0;              // RPC attempts started (a stream counts once)
  std::int64_t retries = 0;           // attempts repeated after UNAVAILABLE
  std::int64_t chunked_calls = 0;     // calls split into several chunks
  std::int64_t linear_fallbacks = 0;  // linear calls computed from raw frames on the client
};

class RemoteDevice final : public sim::Device {
 public:
  /// Opens a channel and asks the server for its DeviceInfo (with retries). Fails with the
  /// server's status (e.g. UNAUTHENTICATED) or UNAVAILABLE naming the address.
  static Result<std::unique_ptr<RemoteDevice>> connect(const RemoteOptions& options);
  ~RemoteDevice() override;

  /// The server's DeviceInfo, as read at connect time.
  sim::DeviceInfo info() const override;

  /// Many requests pipelined over one TransformStream; results in request order. For long runs
  /// of small requests, where one round trip per request would dominate.
  Result<std::vector<sim::Frames>> transform_many(std::span<const sim::TransformRequest> requests);

  /// Largest batch one message carries for these shapes (chunk size of transform()).
  std::int64_t transform_chunk(std::int64_t n_in, std::int64_t n_out) const;
  std::int64_t linear_chunk(std::int64_t n_in, std::int64_t n_out) const;

  RemoteStats stats() const;

  struct Impl;

 protected:
  Result<sim::Frames> do_transform(const sim::TransformRequest& request) override;
  Result<sim::Projections> do_linear_transform(const sim::LinearRequest& request) override;

 private:
  explicit RemoteDevice(std::unique_ptr<Impl> impl);
  friend struct RemoteAccess;
  std::unique_ptr<Impl> impl_;
};

}  // namespace opu::offload
