#include "opu_sim/medium.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

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
      const double bound =
          static_cast<double>(std::max<std::int64_t>(terms, 1)) * 0x1.0p-24 * magnitude + 1e-30;
      REQUIRE(std::abs(static_cast<double>(got(i, b).real()) - exact.real()) <= bound);
      REQUIRE(std::abs(static_cast<double>(got(i, b).imag()) - exact.imag()) <= bound);
    }
  }
}

std::uint64_t fnv1a(const void* data, std::size_t bytes) {
  std::uint64_t hash = 1469598103934665603ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 1099511628211ULL;
  }
  return hash;
}

// s[first] + ... + s[first + count - 1], summed pairwise (count a power of two).
float pairwise(const std::vector<float>& s, std::size_t first, std::size_t count) {
  if (count == 1) return s[first];
  return pairwise(s, first, count / 2) + pairwise(s, first + count / 2, count / 2);
}

// The fields the table kernel must give (batches of kTableMinBatch up to kGemmMinBatch frames),
// element by element in plain float arithmetic: per aligned block of `block_cols` columns (32 for
// requests whose dense matrix fits 16 MiB, 16 beyond), each group of four's selected columns
// folded lowest first (an empty group is +0), the block's group sums added pairwise (for 32
// columns ((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7))), the block sums added to the field
// in increasing order. Real and imaginary parts are independent float sums.
Eigen::MatrixXcf table_order_fields(const Bits& bits, std::uint64_t seed, std::int64_t n_in_medium,
                                    std::int64_t n_out, std::int64_t block_cols) {
  const std::int64_t n_in = bits.rows();
  Eigen::MatrixXcf matrix(n_out, n_in);  // entry(i, j), bit for bit (tm_generator_test)
  opu::sim::TransmissionMatrixGenerator(seed, n_in_medium, 0)
      .fill_tile(0, n_out, 0, n_in, matrix.data(), n_out);
  const auto groups = static_cast<std::size_t>(block_cols / 4);
  Eigen::MatrixXcf out(n_out, bits.cols());
  std::vector<float> re(groups);
  std::vector<float> im(groups);
  for (std::int64_t b = 0; b < bits.cols(); ++b) {
    for (std::int64_t i = 0; i < n_out; ++i) {
      float field_re = 0.0F;
      float field_im = 0.0F;
      for (std::int64_t block = 0; block < n_in; block += block_cols) {
        for (std::size_t g = 0; g < groups; ++g) {
          re[g] = 0.0F;
          im[g] = 0.0F;
          bool first = true;
          const std::int64_t j0 = block + 4 * static_cast<std::int64_t>(g);
          for (std::int64_t j = j0; j < std::min(j0 + 4, n_in); ++j) {
            if (bits(j, b) == 0) continue;
            re[g] = first ? matrix(i, j).real() : re[g] + matrix(i, j).real();
            im[g] = first ? matrix(i, j).imag() : im[g] + matrix(i, j).imag();
            first = false;
          }
        }
        field_re += pairwise(re, 0, groups);
        field_im += pairwise(im, 0, groups);
      }
      out(i, b) = {field_re, field_im};
    }
  }
  return out;
}
}  // namespace

TEST_SUITE("opu_sim") {
  TEST_CASE("Medium: the table kernel adds its subset sums in its stated order") {
    const std::uint64_t seed = opu::test::test_seed(10);
    INFO("seed " << seed);
    SUBCASE("blocks of 32 columns (the matrix fits the caches)") {
      // 1,099 mirrors: the last block holds 11 columns (two whole groups and one of three, the
      // generic table build); 702 pixels: 1,404 floats, the last chunk 28 floats (the generic
      // lookups). Batches from the first that takes the kernel to the last.
      const auto dense = opu::sim::make_dense_medium(seed, 1099, 702);
      const auto streamed = opu::sim::make_streamed_medium(seed, 1099, 702);
      for (const std::int64_t batch : {opu::sim::Medium::kTableMinBatch, std::int64_t{37},
                                       opu::sim::Medium::kGemmMinBatch - 1}) {
        INFO("batch " << batch);
        const Bits bits = random_bits(1099, batch, seed + static_cast<std::uint64_t>(batch));
        const Eigen::MatrixXcf expected = table_order_fields(bits, seed, 1099, 702, 32);
        CHECK(fields(*dense, bits, 702) == expected);
        CHECK(fields(*streamed, bits, 702) == expected);
        CHECK(fields(*dense, bits, 702, 2) == expected);  // whatever the thread count
      }
      // A window, fewer mirrors and pixels than the medium: the request's shape picks the block.
      const Bits bits = random_bits(77, 20, seed);
      CHECK(fields(*dense, bits, 31) == table_order_fields(bits, seed, 1099, 31, 32));
      CHECK(fields(*streamed, bits, 31) == table_order_fields(bits, seed, 1099, 31, 32));
    }
    SUBCASE("blocks of 16 columns (the matrix comes from memory, and is prefetched)") {
      // 4,202 x 520 x 8 bytes = 17.5 MB, above 16 MiB; 4,202 mirrors end in a block of 10
      // columns (a group of two).
      const auto dense = opu::sim::make_dense_medium(seed, 4202, 520);
      const auto streamed = opu::sim::make_streamed_medium(seed, 4202, 520);
      for (const std::int64_t batch : {opu::sim::Medium::kTableMinBatch, std::int64_t{37}}) {
        INFO("batch " << batch);
        const Bits bits = random_bits(4202, batch, seed + static_cast<std::uint64_t>(batch));
        const Eigen::MatrixXcf expected = table_order_fields(bits, seed, 4202, 520, 16);
        CHECK(fields(*dense, bits, 520) == expected);
        CHECK(fields(*streamed, bits, 520) == expected);
        CHECK(fields(*dense, bits, 520, 2) == expected);
      }
    }
  }

  TEST_CASE("Medium: dense and streamed are bit-identical with the column-sum kernels") {
    const std::uint64_t seed = opu::test::test_seed(5);
    INFO("seed " << seed);
    // Sizes that are not multiples of the kernels' blocks, to cover every edge: 702 rows end in a
    // 30-row chunk, seven AVX vectors and a 4-float scalar tail.
    const auto dense = opu::sim::make_dense_medium(seed, 1100, 702);
    const auto streamed = opu::sim::make_streamed_medium(seed, 1100, 702);
    for (std::int64_t batch : {1, 5, 15, 33}) {  // 33: the table kernel
      const Bits bits = random_bits(1100, batch, seed + static_cast<std::uint64_t>(batch));
      const Eigen::MatrixXcf a = fields(*dense, bits, 702);
      const Eigen::MatrixXcf b = fields(*streamed, bits, 702);
      CHECK(a == b);
    }
  }

  TEST_CASE(
      "Medium: a dense matrix beyond the caches, walked column by column, is still bit-identical") {
    // 1,500 x 1,500 x 8 bytes = 18 MB: above the 16 MiB where the dense backend walks columns
    // (six at a time) while the frames' fields fit 384 KiB per thread: 1, 2, 5, 7 and 15 frames,
    // which the streamed backend sums with the blocked kernel, so the comparison checks one
    // kernel against the other. 40 frames take the table kernel, which prefetches the matrix's
    // columns here (it comes from memory) and not in the streamed backend.
    const std::uint64_t seed = opu::test::test_seed(6);
    const auto dense = opu::sim::make_dense_medium(seed, 1500, 1500);
    const auto streamed = opu::sim::make_streamed_medium(seed, 1500, 1500);
    for (std::int64_t batch : {1, 2, 5, 7, 15, 40}) {
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
    SUBCASE("subset-sum tables (medium batch)") {
      const Bits bits = random_bits(300, opu::sim::Medium::kTableMinBatch + 5, seed);
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

  TEST_CASE("Medium: golden hashes pin the column-sum and table kernels' bits") {
    // The kernels come as scalar loops, 256-bit AVX and 512-bit AVX-512 (whichever the build
    // targets) with one order of additions: every build must reproduce these hashes, taken in an
    // x86-64-v3 (AVX2) build, and given by the kernels before the AVX-512 ones were added. Fixed
    // seeds, not OPU_TEST_SEED. Shapes that reach each kernel and its partial chunks: 702 pixels
    // end in a partial chunk of the column sums (60 of 96 floats) and of the table kernel (28 of
    // 32); 1,500² (18 MB) is walked column by column below 16 frames, and its table blocks are 16
    // columns wide.
    struct Case {
      std::int64_t n_in, n_out, batch;
      std::uint64_t hash;
    };
    for (const Case& c :
         {Case{1100, 702, 1, 0x3056a991aecdfe24ULL}, Case{1100, 702, 5, 0x0344e7e89768627cULL},
          Case{1099, 702, 37, 0xc3eb869154b5e57eULL}, Case{1500, 1500, 1, 0x76598d3f4657e0a3ULL},
          Case{1500, 1500, 7, 0xcb9c82d533aaf6c8ULL},
          Case{1500, 1500, 40, 0xd59499f21315172eULL}}) {
      INFO("n_in " << c.n_in << ", n_out " << c.n_out << ", batch " << c.batch);
      const auto dense = opu::sim::make_dense_medium(7, c.n_in, c.n_out);
      const Bits bits = random_bits(c.n_in, c.batch, 1000 + static_cast<std::uint64_t>(c.batch));
      const Eigen::MatrixXcf out = fields(*dense, bits, c.n_out);
      CHECK(fnv1a(out.data(), static_cast<std::size_t>(out.size()) * sizeof(out(0))) == c.hash);
      if (c.n_in < 1500) {  // the streamed backend shares these bits (1,500²: the test above)
        CHECK(fields(*opu::sim::make_streamed_medium(7, c.n_in, c.n_out), bits, c.n_out) == out);
      }
    }
  }

  TEST_CASE("Medium: results do not depend on the thread count") {
    const std::uint64_t seed = opu::test::test_seed(9);
    for (const bool dense : {true, false}) {
      const auto medium = dense ? opu::sim::make_dense_medium(seed, 700, 600)
                                : opu::sim::make_streamed_medium(seed, 700, 600);
      for (std::int64_t batch :
           {std::int64_t{3}, opu::sim::Medium::kTableMinBatch, opu::sim::Medium::kGemmMinBatch}) {
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
