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

/// The repository's data/ folder (data/README.md), compiled in by tests/CMakeLists.txt. Tests read
/// the shipped data here and nowhere else: no environment variable redirects them, and a missing
/// file is a failure, never a skip.
inline std::string data_dir() {
#ifndef OPU_TEST_DATA_DIR
#error "tests/CMakeLists.txt defines OPU_TEST_DATA_DIR, the repository's data/ folder"
#endif
  return OPU_TEST_DATA_DIR;
}

}  // namespace opu::test
