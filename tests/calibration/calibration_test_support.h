// Helpers shared by the calibration tests.
#pragma once

#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>

#include "opu_sim/sim_device.h"

/// A simulator from name -> value parameters (SimConfig names); fails the test on a bad one.
inline std::unique_ptr<opu::sim::SimDevice> make_sim(std::map<std::string, std::string> params) {
  opu::Result<opu::sim::SimConfig> config = opu::sim::SimConfig::from_params(params);
  REQUIRE(config.ok());
  opu::Result<std::unique_ptr<opu::sim::SimDevice>> device = opu::sim::SimDevice::create(*config);
  REQUIRE(device.ok());
  return std::move(*device);
}
