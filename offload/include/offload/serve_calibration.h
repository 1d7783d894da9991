// opu-serve --calibration FILE: a calibrated simulator is served as calibrated (docs/design.md §5).
//
// This header belongs to the target opu::serve_calibration, not to opu::offload: it reads the
// calibration file (opu::calibration_file), and opu::offload must not depend on calibration/,
// which depends on offload/ (docs/architecture.md). opu-serve and the offload tests link it.
#pragma once

#include <string>

#include "opu_sim/sim_device.h"
#include "opu_sim/status.h"

namespace opu::offload {

/// Loads the calibration file at `path`, checks it against the simulator `config` describes, and
/// applies it: its exposure becomes the camera's default exposure (what Transform uses when a
/// request's exposure_us is 0, and what GetInfo reports) and its masked pixels the holography
/// mask (LinearTransform projects them to exactly 0). LinearTransform keeps its automatic
/// exposure unless a request carries one. Returns a one-line account of what was applied, for
/// the log. Errors name the file and the field (load_device_settings, check_device_settings);
/// `config` is untouched on error.
Result<std::string> apply_calibration(const std::string& path, sim::SimConfig& config);

}  // namespace opu::offload
