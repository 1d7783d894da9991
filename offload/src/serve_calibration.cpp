#include "offload/serve_calibration.h"

#include <sstream>

#include "calibration/calibration_file.h"

namespace opu::offload {

Result<std::string> apply_calibration(const std::string& path, sim::SimConfig& config) {
  Result<calibration::DeviceSettings> settings = calibration::load_device_settings(path);
  if (!settings.ok()) return settings.status();
  const calibration::DeviceLimits limits{config.n_in, config.n_out, config.camera.max_exposure_us};
  OPU_RETURN_IF_ERROR(calibration::check_device_settings(*settings, limits, path));
  config.camera.exposure_us = settings->exposure_us;
  config.holography.masked_pixels = settings->masked_pixels;
  std::ostringstream applied;
  applied << "calibration " << path << ": default exposure " << settings->exposure_us << " us, "
          << settings->masked_pixels.size() << " masked pixels";
  return applied.str();
}

}  // namespace opu::offload
