// Helpers shared by the trainer's tests: synthetic datasets, temporary folders, IDX writers.
#pragma once

#include <unistd.h>
#include <zlib.h>

#include <Eigen/Core>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "trainer/datasets.h"
#include "trainer/random.h"

namespace opu::trainer::test {

/// A fresh empty directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("opu_trainer_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// Gaussian blobs: class k centred at a random point fixed by `seed`, `n` samples (the noise
/// depends on n, so a test set of another size from the same seed has the same classes).
inline LabelledData make_blobs(std::int64_t n, std::int64_t features, std::int32_t classes,
                               std::uint64_t seed, float spread = 0.15F) {
  const CounterRng centres(seed, "test/centres");
  const CounterRng noise(seed, "test/noise" + std::to_string(n));
  LabelledData d;
  d.n_classes = classes;
  d.features.resize(features, n);
  d.labels.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int32_t>(i % classes);
    d.labels[static_cast<std::size_t>(i)] = label;
    for (std::int64_t f = 0; f < features; ++f) {
      const float c = centres.uniform(static_cast<std::uint64_t>(label * features + f));
      const float v = c + spread * noise.normal(static_cast<std::uint64_t>(i * features + f));
      d.features(f, i) = std::min(1.0F, std::max(0.0F, v));
    }
  }
  return d;
}

/// Writes an IDX ubyte file (gzip-compressed when `gzip`).
inline void write_idx(const std::string& path, const std::vector<std::int64_t>& dims,
                      const std::vector<std::uint8_t>& data, bool gzip) {
  std::string bytes = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (std::int64_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>(d >> shift));
  }
  bytes.append(reinterpret_cast<const char*>(data.data()), data.size());
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
}

/// Writes `data` as the four standard IDX files of a folder (images rows x cols).
inline void write_idx_folder(const std::string& dir, const LabelledData& train,
                             const LabelledData& test, std::int64_t rows, std::int64_t cols,
                             bool gzip) {
  auto write_pair = [&](const std::string& prefix, const LabelledData& d) {
    std::vector<std::uint8_t> pixels(static_cast<std::size_t>(d.features.size()));
    for (std::size_t i = 0; i < pixels.size(); ++i) {
      pixels[i] = static_cast<std::uint8_t>(d.features.data()[i] * 255.0F + 0.5F);
    }
    std::vector<std::uint8_t> labels(d.labels.begin(), d.labels.end());
    const std::string suffix = gzip ? ".gz" : "";
    write_idx(dir + "/" + prefix + "-images-idx3-ubyte" + suffix, {d.features.cols(), rows, cols},
              pixels, gzip);
    write_idx(dir + "/" + prefix + "-labels-idx1-ubyte" + suffix, {d.features.cols()}, labels,
              gzip);
  };
  write_pair("train", train);
  write_pair("t10k", test);
}

}  // namespace opu::trainer::test
