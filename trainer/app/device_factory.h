// Opens the device behind a --feedback URI. With the offload module built, every scheme it knows
// (sim://, grpc://, grpcs://) goes through opu::offload::open_device(); without it, only sim://
// is available (in-process SimDevice). The trainer library itself never sees gRPC.
#pragma once

#include <memory>
#include <string>

#include "opu_sim/device.h"
#include "opu_sim/status.h"

namespace opu::trainer::app {

/// UNAVAILABLE when the endpoint cannot be reached, INVALID_ARGUMENT for a malformed URI.
Result<std::unique_ptr<sim::Device>> open_feedback_device(const std::string& uri);

}  // namespace opu::trainer::app
