// The transmission matrix R (n_out x n_in complex, Re and Im ~ N(0, 1/n_in)) as a pure function of
// (seed, generator version, realisation, i, j) -- docs/design.md §2.2.
//
// Counter-based: entry (i, j) is computed from a hash of its indices, never from a sequential
// stream, so any tile can be regenerated anywhere (another thread, process or replica) bit for bit.
// The Gaussian transform is our own Box-Muller with polynomial log/sin/cos built from +, -, *, /
// and sqrt only (IEEE-exact operations, no FMA contraction), so the bits do not depend on the
// instruction set, the compiler's math library or the thread count. A golden-hash test pins them;
// changing the algorithm means bumping kGeneratorVersion.
#pragma once

#include <complex>
#include <cstdint>

namespace opu::sim {

inline constexpr std::uint32_t kGeneratorVersion = 1;

/// Thread-safe (immutable). Cheap to copy.
class TransmissionMatrixGenerator {
 public:
  /// `realisation` indexes independent media of the same seed (drift interpolates between them).
  TransmissionMatrixGenerator(std::uint64_t seed, std::int64_t n_in, std::uint64_t realisation = 0);

  std::complex<float> entry(std::int64_t row, std::int64_t col) const;

  /// Writes rows [row0, row0 + rows) x columns [col0, col0 + cols) column-major into `out`
  /// (interleaved complex), column c starting at out + c * ld, ld >= rows (complex elements).
  void fill_tile(std::int64_t row0, std::int64_t rows, std::int64_t col0, std::int64_t cols,
                 std::complex<float>* out, std::int64_t ld) const;

  std::int64_t n_in() const { return n_in_; }
  float sigma() const { return sigma_; }

 private:
  std::uint32_t row_key_;
  std::uint32_t col_key_;
  std::int64_t n_in_;
  float sigma_;  // sqrt(1 / n_in)
};

}  // namespace opu::sim
