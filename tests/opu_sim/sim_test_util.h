// Small builders shared by the simulator's tests.
#pragma once

#include <memory>
#include <string>

#include "opu_sim/packing.h"
#include "opu_sim/sim_device.h"

namespace opu::test {

using Bits = Eigen::Matrix<std::uint8_t, -1, -1>;

/// A reproducible pseudo-random 0/1 matrix (LCG; the tests' own generator).
inline Bits random_bits(std::int64_t n, std::int64_t batch, std::uint64_t seed,
                        double density = 0.5) {
  Bits bits(n, batch);
  std::uint64_t state = seed * 2654435761ULL + 1;
  for (std::int64_t i = 0; i < bits.size(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    bits.data()[i] = static_cast<double>(state >> 11) * 0x1.0p-53 < density ? 1 : 0;
  }
  return bits;
}

/// Standard-normal-ish floats (sum of 12 uniforms - 6), n x batch.
inline Eigen::MatrixXf random_values(std::int64_t n, std::int64_t batch, std::uint64_t seed) {
  Eigen::MatrixXf values(n, batch);
  std::uint64_t state = seed * 2654435761ULL + 3;
  for (std::int64_t i = 0; i < values.size(); ++i) {
    double sum = 0;
    for (int k = 0; k < 12; ++k) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      sum += static_cast<double>(state >> 11) * 0x1.0p-53;
    }
    values.data()[i] = static_cast<float>(sum - 6.0);
  }
  return values;
}

/// A simulator from "name=value&..." parameters; fails the test on a bad configuration.
inline std::unique_ptr<sim::SimDevice> make_sim(const std::string& query) {
  auto params = sim::parse_query(query);
  if (!params.ok()) throw opu::StatusError(params.status());
  auto config = sim::SimConfig::from_params(*params);
  if (!config.ok()) throw opu::StatusError(config.status());
  auto device = sim::SimDevice::create(*config);
  if (!device.ok()) throw opu::StatusError(device.status());
  return std::move(*device);
}

}  // namespace opu::test
