// The regression runner of a fuzz target: a plain main() that feeds every file of the directories
// (or the files) named on the command line to LLVMFuzzerTestOneInput, in sorted order, once each.
// Built in every test build (any compiler, no libFuzzer) and run by ctest (label fuzz) on
// fuzz/corpus/<target>/ and fuzz/regressions/<target>/, so every seed and every input that once
// crashed runs with the ordinary test suite. A missing directory is skipped (a target may have no
// regressions yet); no input at all is a failure. Exit 0 when every input returned; a broken
// property aborts, as under libFuzzer.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_support.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const fs::path path(argv[i]);
    std::error_code error;
    if (fs::is_directory(path, error)) {
      for (const fs::directory_entry& entry : fs::directory_iterator(path)) {
        const std::string name = entry.path().filename().string();
        if (entry.is_regular_file() && !name.starts_with('.') && !name.ends_with(".md")) {
          inputs.push_back(entry.path());
        }
      }
    } else if (fs::is_regular_file(path, error)) {
      inputs.push_back(path);
    } else {
      std::cout << "fuzz regression: " << path.string() << " does not exist, skipped\n";
    }
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::cerr << "fuzz regression: no inputs\n";
    return 1;
  }
  for (const fs::path& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    const std::vector<char> bytes{std::istreambuf_iterator<char>(in),
                                  std::istreambuf_iterator<char>()};
    if (!in.good() && !in.eof()) {
      std::cerr << "fuzz regression: cannot read " << path.string() << "\n";
      return 1;
    }
    std::cout << "fuzz regression: " << path.string() << " (" << bytes.size() << " bytes)"
              << std::endl;
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::cout << "fuzz regression: " << inputs.size() << " inputs passed\n";
  return 0;
}
