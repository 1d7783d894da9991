#include "calibrated_device.h"

#include <utility>

#include "calibration/calibration_file.h"

namespace opu::trainer::app {

MaskedDevice::MaskedDevice(std::unique_ptr<sim::Device> inner,
                           std::vector<std::int64_t> masked_pixels)
    : inner_(std::move(inner)), masked_pixels_(std::move(masked_pixels)) {}

Result<sim::Frames> MaskedDevice::do_transform(const sim::TransformRequest& request) {
  return inner_->transform(request);
}

Result<sim::Projections> MaskedDevice::do_linear_transform(const sim::LinearRequest& request) {
  Result<sim::Projections> projections = inner_->linear_transform(request);
  if (!projections.ok()) return projections;
  for (const std::int64_t pixel : masked_pixels_) {
    if (pixel >= projections->values.rows()) break;  // sorted: none of the rest applies either
    projections->values.row(pixel).setZero();
  }
  return projections;
}

Result<AppliedCalibration> use_calibration(const std::string& path,
                                           std::unique_ptr<sim::Device>& device,
                                           sim::LinearOptions& linear) {
  Result<calibration::DeviceSettings> settings = calibration::load_device_settings(path);
  if (!settings.ok()) return settings.status().with_context("--calibration");
  const sim::DeviceInfo info = device->info();
  const calibration::DeviceLimits limits{info.max_n_in, info.max_n_out, info.max_exposure_us};
  OPU_RETURN_IF_ERROR(
      calibration::check_device_settings(*settings, limits, path).with_context("--calibration"));
  AppliedCalibration applied{path, settings->exposure_us,
                             static_cast<std::int64_t>(settings->masked_pixels.size())};
  linear.exposure_us = settings->exposure_us;
  device = std::make_unique<MaskedDevice>(std::move(device), std::move(settings->masked_pixels));
  return applied;
}

}  // namespace opu::trainer::app
