// Backends of the scattering medium: fields E = R x for batches of bit-packed binary frames.
//
// - dense: R materialised once (n_out x n_in complex, column-major); fastest for small and medium
//   sizes.
// - streamed: tiles of R regenerated on the fly and never stored; memory independent of the
//   matrix size.
// - structured: an FFT-based operator with the same statistics (not the same entries), for device
//   scale (1e6 x 2e6), where neither storing nor regenerating a dense R is possible.
// Both share the generator's bit-identical entries and the same kernels. With the column-sum
// kernels (batches below kGemmMinBatch) they add the same entries in the same order, so their
// fields are bit-identical; with the GEMM kernel (large batches) they agree to float rounding.
//
// Kernels exploit binary inputs: a field is a sum of selected columns, so small batches add
// columns one by one (no multiplies, work proportional to the mirrors that are on); from
// kTableMinBatch frames they add subset sums of groups of four columns, tabulated once for the
// whole batch (a different summation order: these fields equal the one-by-one sums to float
// rounding); large batches use OpenBLAS sgemm on R viewed as a 2 n_out x n_in float matrix
// (inputs are never cast to complex).
// Each output element is computed by one thread in a fixed order: results do not depend on the
// thread count.
//
// Thread-safe: immutable after construction (the dense backend's cache of drift realisations is
// guarded by a mutex).
#pragma once

#include <Eigen/Core>
#include <complex>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace opu::sim {

struct FieldsRequest {
  std::span<const std::uint8_t> packed;  // batch frames of packed_bytes(n_in) bytes
  std::int64_t n_in = 0;                 // mirrors in each frame (<= the medium's n_in)
  std::int64_t n_out = 0;                // rows computed: pixels [0, n_out)
  std::int64_t batch = 0;
  std::uint64_t realisation = 0;         // which independent medium (drift)
  int threads = 1;
};

class Medium {
 public:
  virtual ~Medium() = default;
  /// E = R_realisation x for every frame: out is n_out x batch (one frame per column).
  virtual void fields(const FieldsRequest& request, Eigen::MatrixXcf& out) const = 0;
  virtual std::string_view name() const = 0;
  /// Bytes held by the backend (the matrix for dense, phase masks for structured; per-call
  /// buffers excluded).
  virtual std::size_t memory_bytes() const = 0;
  /// Entry (row, col) of realisation k: what a frame lighting mirror `col` alone puts on pixel
  /// `row`. Cheap for dense and streamed, three FFTs for structured (tests and calibration).
  virtual std::complex<float> entry(std::int64_t row, std::int64_t col,
                                    std::uint64_t realisation) const;

  std::int64_t n_in() const { return n_in_; }
  std::int64_t n_out() const { return n_out_; }
  std::uint64_t seed() const { return seed_; }

  /// Batches from this size on use the GEMM kernel; below it, column sums (measured crossover).
  static constexpr std::int64_t kGemmMinBatch = 64;
  /// Batches from this size (up to kGemmMinBatch) add precomputed subset sums of groups of four
  /// columns (measured crossover: level with the column sums at 16 frames on 4096², ahead on
  /// 1024²).
  static constexpr std::int64_t kTableMinBatch = 16;

 protected:
  Medium(std::uint64_t seed, std::int64_t n_in, std::int64_t n_out)
      : seed_(seed), n_in_(n_in), n_out_(n_out) {}

 private:
  std::uint64_t seed_;
  std::int64_t n_in_;
  std::int64_t n_out_;
};

std::unique_ptr<Medium> make_dense_medium(std::uint64_t seed, std::int64_t n_in,
                                          std::int64_t n_out);
std::unique_ptr<Medium> make_streamed_medium(std::uint64_t seed, std::int64_t n_in,
                                             std::int64_t n_out);
/// How FFTW plans the structured medium's transforms.
struct FftOptions {
  /// FFTW_MEASURE (about 2.5x faster transforms here, planning takes seconds) instead of
  /// FFTW_ESTIMATE. Measured plans depend on timings: the bits are reproducible only when the
  /// plans come from the same wisdom file.
  bool measure = false;
  /// FFTW wisdom file: loaded before planning when it exists, saved after measured planning.
  std::string wisdom_path;
};

/// R = s · P · F · D3 · F · D2 · F · D1 (see structured_medium.cpp): another medium than the
/// dense/streamed one of the same seed, with the same statistics, at any size.
std::unique_ptr<Medium> make_structured_medium(std::uint64_t seed, std::int64_t n_in,
                                               std::int64_t n_out, const FftOptions& options = {});
/// Seconds of one bare in-place single-precision DFT of size n, planned like the structured
/// medium, averaged over `repeats`: the structured backend's yardstick in opu-bench.
double bare_fft_seconds(std::int64_t n, int repeats, const FftOptions& options = {});

/// Bytes a dense matrix of this size takes.
inline std::size_t dense_matrix_bytes(std::int64_t n_in, std::int64_t n_out) {
  return static_cast<std::size_t>(n_in) * static_cast<std::size_t>(n_out) * 8U;
}

}  // namespace opu::sim
