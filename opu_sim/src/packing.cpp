#include "opu_sim/packing.h"

#include <bit>
#include <cmath>
#include <string>

namespace opu::sim {

std::vector<std::uint8_t> pack_frames(
    const Eigen::Ref<const Eigen::Matrix<std::uint8_t, -1, -1>>& bits) {
  const std::int64_t n = bits.rows();
  const std::int64_t bytes = packed_bytes(n);
  std::vector<std::uint8_t> packed(static_cast<std::size_t>(bytes * bits.cols()), 0);
  for (std::int64_t b = 0; b < bits.cols(); ++b) {
    std::uint8_t* frame = packed.data() + b * bytes;
    for (std::int64_t i = 0; i < n; ++i) {
      if (bits(i, b) != 0) frame[i >> 3] |= static_cast<std::uint8_t>(1U << (i & 7));
    }
  }
  return packed;
}

Eigen::Matrix<std::uint8_t, -1, -1> unpack_frames(std::span<const std::uint8_t> packed,
                                                  std::int64_t n, std::int64_t batch) {
  OPU_CHECK(static_cast<std::int64_t>(packed.size()) == batch * packed_bytes(n),
            "packed frames have the wrong size");
  Eigen::Matrix<std::uint8_t, -1, -1> bits(n, batch);
  const std::int64_t bytes = packed_bytes(n);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t i = 0; i < n; ++i) bits(i, b) = frame_bit(packed.data() + b * bytes, i);
  }
  return bits;
}

void unpack_frames_to_float(std::span<const std::uint8_t> packed, std::int64_t n,
                            std::int64_t batch, Eigen::Ref<Eigen::MatrixXf> out) {
  OPU_CHECK(static_cast<std::int64_t>(packed.size()) == batch * packed_bytes(n),
            "packed frames have the wrong size");
  OPU_CHECK(out.rows() == n && out.cols() == batch, "output has the wrong shape");
  const std::int64_t bytes = packed_bytes(n);
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::uint8_t* frame = packed.data() + b * bytes;
    float* column = out.col(b).data();
    for (std::int64_t i = 0; i < n; ++i) {
      column[i] = static_cast<float>((frame[i >> 3] >> (i & 7)) & 1U);
    }
  }
}

std::int64_t count_ones(std::span<const std::uint8_t> frame, std::int64_t n) {
  std::int64_t ones = 0;
  const std::int64_t full_bytes = n / 8;
  for (std::int64_t i = 0; i < full_bytes; ++i) ones += std::popcount(frame[i]);
  if (n % 8 != 0) {
    ones += std::popcount(static_cast<unsigned>(frame[full_bytes] & ((1U << (n % 8)) - 1U)));
  }
  return ones;
}

Result<std::vector<std::uint8_t>> binarize(const Eigen::Ref<const Eigen::MatrixXf>& values,
                                           float threshold) {
  if (!std::isfinite(threshold)) {
    return invalid_argument("binarize: threshold is " + std::to_string(threshold) +
                            ", want a finite number");
  }
  const std::int64_t n = values.rows();
  const std::int64_t bytes = packed_bytes(n);
  std::vector<std::uint8_t> packed(static_cast<std::size_t>(bytes * values.cols()), 0);
  for (std::int64_t b = 0; b < values.cols(); ++b) {
    for (std::int64_t i = 0; i < n; ++i) {
      const float value = values(i, b);
      if (std::isnan(value)) {
        return invalid_argument("binarize: value (" + std::to_string(i) + ", " + std::to_string(b) +
                                ") is NaN, want a number");
      }
      if (value > threshold) {
        packed[static_cast<std::size_t>(b * bytes + (i >> 3))] |=
            static_cast<std::uint8_t>(1U << (i & 7));
      }
    }
  }
  return packed;
}

Result<Formatting> Formatting::fit(std::int64_t n_features, std::int64_t n_mirrors) {
  if (n_features < 1 || n_features > n_mirrors) {
    return out_of_range("formatting: " + std::to_string(n_features) + " features do not fit on " +
                        std::to_string(n_mirrors) + " mirrors, want 1 <= features <= mirrors");
  }
  return Formatting{n_features, n_mirrors, n_mirrors / n_features, 0};
}

std::vector<std::uint8_t> Formatting::apply(std::span<const std::uint8_t> features,
                                            std::int64_t batch) const {
  const std::int64_t in_bytes = packed_bytes(n_features);
  const std::int64_t out_bytes = packed_bytes(n_mirrors);
  OPU_CHECK(static_cast<std::int64_t>(features.size()) == batch * in_bytes,
            "feature frames have the wrong size");
  OPU_CHECK(offset + n_features * factor <= n_mirrors, "formatting overflows the mirrors");
  std::vector<std::uint8_t> mirrors(static_cast<std::size_t>(batch * out_bytes), 0);
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::uint8_t* in = features.data() + b * in_bytes;
    std::uint8_t* out = mirrors.data() + b * out_bytes;
    for (std::int64_t k = 0; k < n_features; ++k) {
      if (!frame_bit(in, k)) continue;
      const std::int64_t first = offset + k * factor;
      for (std::int64_t m = first; m < first + factor; ++m) {
        out[m >> 3] |= static_cast<std::uint8_t>(1U << (m & 7));
      }
    }
  }
  return mirrors;
}

}  // namespace opu::sim
