#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "opu_sim/medium.h"
#include "opu_sim/packing.h"
#include "opu_sim/transmission_matrix.h"
#include "test_support.h"

using Bits = Eigen::Matrix<std::uint8_t, -1, -1>;

namespace {
Bits random_bits(std::int64_t n, std::int64_t batch, std::uint64_t seed, double density = 0.5) {
  Bits bits(n, batch);
  std::uint64_t state = seed;
  for (std::int64_t i = 0; i < bits.size(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    bits.data()[i] = static_cast<double>(state >> 11) * 0x1.0p-53 < density ? 1 : 0;
  }
  return bits;
}

Eigen::MatrixXcf fields(const opu::sim::Medium& medium, const Bits& bits, std::int64_t n_out,
                        int threads = 1, std::uint64_t realisation = 0) {
  const std::vector<std::uint8_t> packed = opu::sim::pack_frames(bits);
  Eigen::MatrixXcf out;
  medium.fields({packed, bits.rows(), n_out, bits.cols(), realisation, threads}, out);
  return out;
}

// Rigorous bound for a float sum of k terms in any order: |error| <= (k - 1) u sum |terms|, with
// u = 2^-24 (unit roundoff). Checked element by element against a double-precision reference.
void check_against_reference(const Eigen::MatrixXcf& got, const Bits& bits, std::uint64_t seed,
                             std::int64_t n_in_medium, std::uint64_t realisation = 0) {
  const opu::sim::TransmissionMatrixGenerator generator(seed, n_in_medium, realisation);
  for (std::int64_t b = 0; b < got.cols(); ++b) {
    for (std::int64_t i = 0; i < got.rows(); ++i) {
      std::complex<double> exact = 0;
      double magnitude = 0;
      std::int64_t terms = 0;
      for (std::int64_t j = 0; j < bits.rows(); ++j) {
        if (bits(j, b) == 0) continue;
        const std::complex<float> entry = generator.entry(i, j);
        exact += std::complex<double>(entry);
        magnitude += std::abs(entry.real()) + std::abs(entry.imag());
        ++terms;
      }
      const double bound = static_cast<double>(std::max<std::int64_t>(terms, 1)) * 0x1.0p-24 *
                           magnitude + 1e-30;
      REQUIRE(std::abs(static_cast<double>(got(i, b).real()) - exact.real()) <= bound);
      REQUIRE(std::abs(static_cast<double>(got(i, b).imag()) - exact.imag()) <= bound);
    }
  }
}
}  // namespace

TEST_SUITE("opu_sim") {
  TEST_CASE("Medium: dense and streamed are bit-identical with column sums") {
    const std::uint64_t seed = opu::test::test_seed(5);
    INFO("seed " << seed);
    // Sizes that are not multiples of the kernels' blocks, to cover every edge: 702 rows end in a
    // 30-row chunk, seven AVX vectors and a 4-float scalar tail.
    const auto dense = opu::sim::make_dense_medium(seed, 1100, 702);
    const auto streamed = opu::sim::make_streamed_medium(seed, 1100, 702);
    for (std::int64_t batch : {1, 5, 33}) {
      const Bits bits = random_bits(1100, batch, seed + static_cast<std::uint64_t>(batch));
      const Eigen::MatrixXcf a = fields(*dense, bits, 702);
      const Eigen::MatrixXcf b = fields(*streamed, bits, 702);
      CHECK(a == b);
    }
  }

  TEST_CASE("Medium: a dense matrix beyond the caches, walked column by column, is still bit-identical") {
    // 1,500 x 1,500 x 8 bytes = 18 MB: above the 16 MiB where the dense backend walks columns
    // (six at a time) while the frames' fields fit 384 KiB per thread: 1, 2, 5 and 7 frames. 40
    // frames (480 KB of fields) take the blocked kernel on one thread but the walk on two (240 KB
    // each), so the thread-count check below also compares the two kernels.
    const std::uint64_t seed = opu::test::test_seed(6);
    const auto dense = opu::sim::make_dense_medium(seed, 1500, 1500);
    const auto streamed = opu::sim::make_streamed_medium(seed, 1500, 1500);
    for (std::int64_t batch : {1, 2, 5, 7, 40}) {
      const Bits bits = random_bits(1500, batch, seed + static_cast<std::uint64_t>(batch));
      const Eigen::MatrixXcf a = fields(*dense, bits, 1500);
      CHECK(a == fields(*streamed, bits, 1500));
      CHECK(a == fields(*dense, bits, 1500, 2));  // and across thread counts
    }
    check_against_reference(fields(*dense, random_bits(1500, 1, seed), 40).topRows(40),
                            random_bits(1500, 1, seed), seed, 1500);
  }

  TEST_CASE("Medium: both kernels of both backends match a double-precision reference") {
    const std::uint64_t seed = opu::test::test_seed(8);
    INFO("seed " << seed);
    const auto dense = opu::sim::make_dense_medium(seed, 300, 90);
    const auto streamed = opu::sim::make_streamed_medium(seed, 300, 90);
    SUBCASE("column sums (small batch)") {
      const Bits bits = random_bits(300, 7, seed);
      check_against_reference(fields(*dense, bits, 90), bits, seed, 300);
      check_against_reference(fields(*streamed, bits, 90), bits, seed, 300);
    }
    SUBCASE("GEMM (large batch): dense and streamed agree to float rounding") {
      const Bits bits = random_bits(300, opu::sim::Medium::kGemmMinBatch + 3, seed);
      check_against_reference(fields(*dense, bits, 90), bits, seed, 300);
      check_against_reference(fields(*streamed, bits, 90), bits, seed, 300);
    }
    SUBCASE("a window: fewer mirrors and fewer pixels than the medium") {
      const Bits bits = random_bits(77, 3, seed);
      check_against_reference(fields(*dense, bits, 31), bits, seed, 300);
      check_against_reference(fields(*streamed, bits, 31), bits, seed, 300);
    }
    SUBCASE("another realisation") {
      const Bits bits = random_bits(300, 2, seed);
      check_against_reference(fields(*dense, bits, 90, 1, 4), bits, seed, 300, 4);
    }
  }

  TEST_CASE("Medium: results do not depend on the thread count") {
    const std::uint64_t seed = opu::test::test_seed(9);
    for (const bool dense : {true, false}) {
      const auto medium = dense ? opu::sim::make_dense_medium(seed, 700, 600)
                                : opu::sim::make_streamed_medium(seed, 700, 600);
      for (std::int64_t batch : {std::int64_t{3}, opu::sim::Medium::kGemmMinBatch}) {
        const Bits bits = random_bits(700, batch, seed);
        CHECK(fields(*medium, bits, 600, 1) == fields(*medium, bits, 600, 2));
      }
    }
  }

  TEST_CASE("Medium: fields are linear in disjoint inputs") {
    const auto medium = opu::sim::make_dense_medium(4, 200, 50);
    Bits x1 = random_bits(200, 1, 1, 0.3);
    Bits x2 = random_bits(200, 1, 2, 0.3);
    x2 = (x2.array() * (1 - x1.array())).matrix();  // disjoint supports
    const Bits both = x1 + x2;
    const Eigen::MatrixXcf sum = fields(*medium, x1, 50) + fields(*medium, x2, 50);
    CHECK((sum - fields(*medium, both, 50)).norm() < 1e-5 * sum.norm());
  }
}
