// Helpers shared by the fuzz targets (fuzz/*_fuzz.cpp). Each target defines
// LLVMFuzzerTestOneInput; libFuzzer drives it under the `fuzz` preset, and regression_main.cpp
// feeds it the checked-in corpus and regression inputs in every ordinary test build.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace opu::fuzz {

/// A property every input must keep, checked in every build (not an assert: NDEBUG does not remove
/// it). A failure prints what broke and aborts, which libFuzzer reports as a crash and saves.
#define OPU_FUZZ_CHECK(condition, what)                                                \
  do {                                                                                 \
    if (!(condition)) ::opu::fuzz::check_failed(#condition, what, __FILE__, __LINE__); \
  } while (false)

[[noreturn]] inline void check_failed(const char* condition, const std::string& what,
                                      const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz property broken: %s\n  %s\n", file, line, condition,
               what.c_str());
  std::abort();
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Splits `text` at every occurrence of `separator` (kept out of the parts).
inline std::vector<std::string_view> split(std::string_view text, std::string_view separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + separator.size());
  }
}

/// An anonymous in-memory file (memfd) with a path, for parsers that take a file name: the fuzz
/// input goes through the same open/read code as a file on disk, without touching the disk.
class MemoryFile {
 public:
  explicit MemoryFile(const char* name) : fd_(memfd_create(name, 0)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemoryFile() { close(fd_); }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  /// Replaces the content; returns the path that opens it.
  const std::string& write(std::string_view content) {
    if (ftruncate(fd_, 0) != 0) std::abort();
    std::size_t done = 0;
    while (done < content.size()) {
      const ssize_t n =
          pwrite(fd_, content.data() + done, content.size() - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<std::size_t>(n);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

}  // namespace opu::fuzz
