// The endpoint factory: the only way the trainer and the calibration tools obtain a device.
// Swapping the simulator for a real device is a change of URI, nothing else.
//
//   sim://?seed=7&n_in=1024&camera=ideal   in-process simulator; the query takes exactly the
//                                          parameters of SimConfig::from_params() (the names of
//                                          opu-serve's flags, with underscores)
//   grpc://host:port                       a remote OpuDevice, plaintext
//   grpc://h1:p1,h2:p2                     several replicas, round_robin
//   grpcs://host:port?ca=FILE              TLS; ca = PEM of the CA (default: system roots)
//
// Query parameters of grpc:// and grpcs://: token=FILE (bearer token, file content trimmed),
// ca=FILE (grpcs only), server_name=NAME (TLS name override), deadline_ms=N, retries=N (attempts,
// >= 1), backoff_ms=N (first backoff), max_message_mb=N.
#pragma once

#include <memory>
#include <string_view>

#include "offload/remote_device.h"
#include "opu_sim/device.h"
#include "opu_sim/sim_device.h"
#include "opu_sim/status.h"

namespace opu::offload {

/// Opens the device a URI names. The caller owns it; share it with std::shared_ptr if several
/// owners need it (every Device is thread-safe). INVALID_ARGUMENT naming the offending part for a
/// malformed URI; a remote endpoint's connection errors as RemoteDevice::connect reports them.
Result<std::unique_ptr<sim::Device>> open_device(std::string_view uri);

/// The client options a grpc:// or grpcs:// URI describes (reads the token and CA files).
Result<RemoteOptions> remote_options_from_uri(std::string_view uri);

/// The simulator a sim:// URI describes (what open_device() creates), checked but not built.
Result<sim::SimConfig> sim_config_from_uri(std::string_view uri);

}  // namespace opu::offload
