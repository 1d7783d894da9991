#include "device_factory.h"

#include "opu_sim/sim_device.h"

#if defined(OPU_TRAINER_HAVE_OFFLOAD)
#include "offload/open_device.h"
#endif

namespace opu::trainer::app {

Result<std::unique_ptr<sim::Device>> open_feedback_device(const std::string& uri) {
#if defined(OPU_TRAINER_HAVE_OFFLOAD)
  Result<std::unique_ptr<sim::Device>> device = offload::open_device(uri);
  if (!device.ok()) return device.status().with_context("--feedback " + uri);
  return device;
#else
  const std::string scheme = "sim://";
  if (uri.rfind(scheme, 0) != 0) {
    if (uri.find("://") != std::string::npos) {
      return unavailable("--feedback " + uri +
                         ": this build has no offload module (only sim:// URIs are served)");
    }
    return invalid_argument("--feedback '" + uri +
                            "': want digital, digital-gaussian or a device URI (sim://?..., "
                            "grpc://host:port)");
  }
  std::string query = uri.substr(scheme.size());
  if (!query.empty() && query.front() == '?') query.erase(0, 1);
  Result<std::map<std::string, std::string>> params = sim::parse_query(query);
  if (!params.ok()) return params.status().with_context("--feedback " + uri);
  Result<sim::SimConfig> config = sim::SimConfig::from_params(*params);
  if (!config.ok()) return config.status().with_context("--feedback " + uri);
  Result<std::unique_ptr<sim::SimDevice>> device = sim::SimDevice::create(*config);
  if (!device.ok()) return device.status().with_context("--feedback " + uri);
  return std::unique_ptr<sim::Device>(std::move(*device));
#endif
}

}  // namespace opu::trainer::app
