// Fuzz target: IDX files (trainer/src/datasets.cpp), as opu-train reads Fashion-MNIST: gzip or not.
//
// Input: the content of one IDX file. A gzip stream (1f 8b) goes through read_idx() from an
// in-memory file (fuzz_support.h's MemoryFile), so zlib's file reading is the one opu-train uses;
// anything else through parse_idx(), read_idx() without the file.
// Properties: no crash, leak or undefined behaviour; an accepted array holds exactly the product
// of its dimensions.
#include <cstdint>
#include <span>
#include <string>

#include "fuzz_support.h"
#include "trainer/datasets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const opu::Result<opu::trainer::IdxArray> array = [&]() -> opu::Result<opu::trainer::IdxArray> {
    if (size >= 2 && data[0] == 0x1F && data[1] == 0x8B) {
      static opu::fuzz::MemoryFile file("idx.gz");
      return opu::trainer::read_idx(file.write(opu::fuzz::as_text(data, size)));
    }
    return opu::trainer::parse_idx(std::span<const std::uint8_t>(data, size), "fuzz.idx");
  }();
  if (!array.ok()) return 0;
  std::int64_t count = 1;
  for (const std::int64_t dim : array->dims) count *= dim;
  OPU_FUZZ_CHECK(count == static_cast<std::int64_t>(array->data.size()),
                 "accepted an array of " + std::to_string(array->data.size()) + " bytes");
  return 0;
}
