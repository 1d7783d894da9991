#include "device_factory.h"

#include <map>

#include "opu_sim/sim_device.h"

#if defined(OPU_TRAINER_HAVE_OFFLOAD)
#include "offload/open_device.h"
#endif

namespace opu::trainer::app {
namespace {

#if !defined(OPU_TRAINER_HAVE_OFFLOAD)
// sim://?name=value&... without the offload module: the in-process simulator built here, as
// offload::open_device would build it. With the module, every URI goes through open_device
// (docs/design.md §1: the one way the trainer obtains a device).
Result<std::unique_ptr<sim::Device>> open_sim(const std::string& uri) {
  std::string query = uri.substr(std::string("sim://").size());
  if (!query.empty() && query.front() == '/') query.erase(0, 1);
  if (!query.empty() && query.front() != '?') {
    return invalid_argument("--feedback '" + uri + "': sim:// takes only ?name=value parameters");
  }
  if (!query.empty()) query.erase(0, 1);
  Result<std::map<std::string, std::string>> params = sim::parse_query(query);
  if (!params.ok()) return params.status().with_context("--feedback " + uri);
  Result<sim::SimConfig> config = sim::SimConfig::from_params(*params);
  if (!config.ok()) return config.status().with_context("--feedback " + uri);
  Result<std::unique_ptr<sim::SimDevice>> device = sim::SimDevice::create(*config);
  if (!device.ok()) return device.status().with_context("--feedback " + uri);
  return std::unique_ptr<sim::Device>(std::move(*device));
}
#endif

}  // namespace

Result<std::unique_ptr<sim::Device>> open_feedback_device(const std::string& uri) {
  if (uri.find("://") == std::string::npos) {
    return invalid_argument(
        "--feedback '" + uri +
        "': want digital, digital-gaussian, digital-noisy or a device URI (sim://?..., "
        "grpc://host:port)");
  }
#if defined(OPU_TRAINER_HAVE_OFFLOAD)
  Result<std::unique_ptr<sim::Device>> device = offload::open_device(uri);
  if (!device.ok()) return device.status().with_context("--feedback " + uri);
  return std::move(*device);
#else
  if (uri.rfind("sim://", 0) == 0) return open_sim(uri);
  return unavailable("--feedback " + uri +
                     ": this build has no offload module (only sim:// URIs are served)");
#endif
}

}  // namespace opu::trainer::app
