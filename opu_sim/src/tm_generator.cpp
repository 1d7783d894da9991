#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "gaussian.h"
#include "hash.h"
#include "opu_sim/transmission_matrix.h"

namespace opu::sim {
namespace {

using detail::gaussian_pair;
using detail::lowbias32;
using detail::splitmix64;

constexpr std::uint32_t kRowSalt = 0x5BD1E995U;  // separates the row hash from the column hash
constexpr std::uint32_t kSecondDraw = 0x1B873593U;

// The per-row half of an entry's counter. Row and column hashes use different functions so that
// R is not symmetric when the two keys happen to coincide.
inline std::uint32_t row_hash(std::uint32_t row_key, std::int64_t row) {
  return lowbias32(lowbias32(static_cast<std::uint32_t>(row) ^ row_key) ^ kRowSalt);
}
inline std::uint32_t col_hash(std::uint32_t col_key, std::int64_t col) {
  return lowbias32(static_cast<std::uint32_t>(col) ^ col_key);
}

inline void entry_from_counter(std::uint32_t counter, float sigma, float* re, float* im) {
  const std::uint32_t b1 = lowbias32(counter);
  const std::uint32_t b2 = lowbias32(b1 + kSecondDraw);
  gaussian_pair(b1, b2, sigma, re, im);
}

}  // namespace

TransmissionMatrixGenerator::TransmissionMatrixGenerator(std::uint64_t seed, std::int64_t n_in,
                                                         std::uint64_t realisation)
    : n_in_(n_in), sigma_(static_cast<float>(std::sqrt(1.0 / static_cast<double>(n_in)))) {
  const std::uint64_t key =
      splitmix64(splitmix64(seed ^ (static_cast<std::uint64_t>(kGeneratorVersion) << 48)) ^
                 splitmix64(realisation));
  row_key_ = static_cast<std::uint32_t>(key);
  col_key_ = static_cast<std::uint32_t>(key >> 32);
}

std::complex<float> TransmissionMatrixGenerator::entry(std::int64_t row, std::int64_t col) const {
  float re = 0.0F;
  float im = 0.0F;
  entry_from_counter(row_hash(row_key_, row) + col_hash(col_key_, col), sigma_, &re, &im);
  return {re, im};
}

void TransmissionMatrixGenerator::fill_tile(std::int64_t row0, std::int64_t rows, std::int64_t col0,
                                            std::int64_t cols, std::complex<float>* out,
                                            std::int64_t ld) const {
  // Row hashes once per tile; the loops over rows are then branch-free integer and float
  // arithmetic that the compiler vectorises (8 lanes with AVX2). One entry is a long chain of
  // dependent operations (two hashes, a division, a square root, polynomials): done in stages over
  // the column (each hash, the log's two halves, the radius, the angle, the direction, the
  // interleave), each stage's loop is short enough for the CPU to overlap many iterations, while
  // a single fused loop is bound by the chain's latency. Each entry gets the same operations as
  // entry_from_counter(), so the bits are the same.
  thread_local std::vector<std::uint32_t> row_hashes;
  thread_local std::vector<std::uint32_t> b1_buffer;
  thread_local std::vector<std::uint32_t> b2_buffer;
  thread_local std::vector<float> re_buffer;
  thread_local std::vector<float> im_buffer;
  for (auto* buffer : {&row_hashes, &b1_buffer, &b2_buffer}) {
    buffer->resize(static_cast<std::size_t>(rows));
  }
  re_buffer.resize(static_cast<std::size_t>(rows));
  im_buffer.resize(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) row_hashes[r] = row_hash(row_key_, row0 + r);

  const float sigma = sigma_;
  std::uint32_t* __restrict hashes = row_hashes.data();
  std::uint32_t* __restrict b1 = b1_buffer.data();
  std::uint32_t* __restrict b2 = b2_buffer.data();
  float* __restrict re = re_buffer.data();
  float* __restrict im = im_buffer.data();
  for (std::int64_t c = 0; c < cols; ++c) {
    const std::uint32_t column = col_hash(col_key_, col0 + c);
    for (std::int64_t r = 0; r < rows; ++r) b1[r] = lowbias32(hashes[r] + column);
    for (std::int64_t r = 0; r < rows; ++r) b2[r] = lowbias32(b1[r] + kSecondDraw);
    detail::gaussian_radii(b1, rows, sigma, re);
    // im holds each entry's angle until the direction stage overwrites it.
    for (std::int64_t r = 0; r < rows; ++r) im[r] = detail::phasor_angle(b2[r]);
    for (std::int64_t r = 0; r < rows; ++r) {
      float x = 0.0F;
      float y = 0.0F;
      detail::unit_phasor_at(b2[r], im[r], &x, &y);
      im[r] = re[r] * y;
      re[r] = re[r] * x;
    }
    // Interleave into complex layout (a separate pass keeps the loop above vectorisable).
    float* destination = reinterpret_cast<float*>(out + c * ld);
    for (std::int64_t r = 0; r < rows; ++r) {
      destination[2 * r] = re[r];
      destination[2 * r + 1] = im[r];
    }
  }
}

}  // namespace opu::sim
