// opu-train --calibration FILE: the feedback device used as calibrated, on the trainer's side.
//
// The calibrated exposure travels in each request's LinearOptions (app.cpp); the masked pixels
// are applied here, after the device answers, so that the mask holds whatever the device does
// with masks: a remote server started without the file, a real device's driver, a simulator.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "opu_sim/device.h"
#include "opu_sim/status.h"

namespace opu::trainer::app {

/// A Device that forwards to `inner` and zeroes the projections of `masked_pixels` (sorted pixel
/// indices; those at or beyond a request's n_out do not apply). Frames pass through unchanged.
/// Thread-safe when `inner` is (it holds only immutable state).
class MaskedDevice final : public sim::Device {
 public:
  MaskedDevice(std::unique_ptr<sim::Device> inner, std::vector<std::int64_t> masked_pixels);

  sim::DeviceInfo info() const override { return inner_->info(); }

 protected:
  Result<sim::Frames> do_transform(const sim::TransformRequest& request) override;
  Result<sim::Projections> do_linear_transform(const sim::LinearRequest& request) override;

 private:
  std::unique_ptr<sim::Device> inner_;
  std::vector<std::int64_t> masked_pixels_;
};

/// What --calibration applied to a feedback device, for the metrics file and the log.
struct AppliedCalibration {
  std::string file;
  double exposure_us = 0.0;
  std::int64_t masked_pixels = 0;
};

/// Loads the calibration file, checks it against `device` (its shape, longest exposure, camera),
/// sets `linear.exposure_us` and wraps `device` in a MaskedDevice. Errors name the file and the
/// field; nothing changes on error.
Result<AppliedCalibration> use_calibration(const std::string& path,
                                           std::unique_ptr<sim::Device>& device,
                                           sim::LinearOptions& linear);

}  // namespace opu::trainer::app
