// Bit-packed binary frames (docs/design.md §2.1) and the helpers that make them: pack/unpack,
// threshold binarisation, and formatting of few features onto many mirrors.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <span>
#include <vector>

#include "opu_sim/status.h"

namespace opu::sim {

/// Bytes one packed frame of n bits occupies: ceil(n / 8).
constexpr std::int64_t packed_bytes(std::int64_t n_bits) { return (n_bits + 7) / 8; }

/// Packs a 0/1 matrix (n x batch, one frame per column; any non-zero is 1) into frames.
std::vector<std::uint8_t> pack_frames(const Eigen::Ref<const Eigen::Matrix<std::uint8_t, -1, -1>>& bits);

/// Unpacks `batch` frames of n bits into an n x batch 0/1 matrix.
Eigen::Matrix<std::uint8_t, -1, -1> unpack_frames(std::span<const std::uint8_t> packed,
                                                  std::int64_t n, std::int64_t batch);

/// Unpacks into floats 0.0/1.0, n x batch (the operand of a float GEMM).
void unpack_frames_to_float(std::span<const std::uint8_t> packed, std::int64_t n,
                            std::int64_t batch, Eigen::Ref<Eigen::MatrixXf> out);

/// Bit `i` of one packed frame.
inline bool frame_bit(const std::uint8_t* frame, std::int64_t i) {
  return ((frame[i >> 3] >> (i & 7)) & 1U) != 0;
}

/// Number of ones in one packed frame of n bits.
std::int64_t count_ones(std::span<const std::uint8_t> frame, std::int64_t n);

/// Threshold binarisation of data (n x batch floats): bit = value > threshold. Rejects NaN.
Result<std::vector<std::uint8_t>> binarize(const Eigen::Ref<const Eigen::MatrixXf>& values,
                                           float threshold);

/// Lined formatting of few features onto a mirror array: feature k drives the `factor` mirrors
/// [offset + k*factor, offset + (k+1)*factor), so its effective matrix column is the sum of
/// `factor` columns (still Gaussian, `factor` times the variance).
struct Formatting {
  std::int64_t n_features = 0;
  std::int64_t n_mirrors = 0;  // size of the mirror frames produced
  std::int64_t factor = 1;     // mirrors per feature
  std::int64_t offset = 0;     // first mirror of feature 0

  /// The largest factor that fits n_features into n_mirrors, starting at mirror 0.
  static Result<Formatting> fit(std::int64_t n_features, std::int64_t n_mirrors);
  /// Expands packed feature frames (batch x packed_bytes(n_features)) into mirror frames.
  std::vector<std::uint8_t> apply(std::span<const std::uint8_t> features, std::int64_t batch) const;
};

}  // namespace opu::sim
