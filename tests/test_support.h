// Helpers shared by the test executables.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

namespace opu::test {

/// The seed a statistical test uses: `fallback`, or OPU_TEST_SEED when set (to re-run a test
/// under other randomness). Tests INFO() it so a failure names the seed.
inline std::uint64_t test_seed(std::uint64_t fallback) {
  if (const char* text = std::getenv("OPU_TEST_SEED"); text != nullptr && *text != '\0') {
    return std::strtoull(text, nullptr, 10);
  }
  return fallback;
}

/// Where ../shared/data lives (set by CMake; OPU_SHARED_DATA overrides).
inline std::string shared_data_dir() {
  if (const char* dir = std::getenv("OPU_SHARED_DATA"); dir != nullptr && *dir != '\0') return dir;
#ifdef OPU_SHARED_DATA_DIR
  return OPU_SHARED_DATA_DIR;
#else
  return "../shared/data";
#endif
}

}  // namespace opu::test
