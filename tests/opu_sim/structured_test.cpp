#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "opu_sim/medium.h"
#include "sim_test_util.h"
#include "test_support.h"

using opu::test::Bits;
using opu::test::random_bits;

namespace {
Eigen::MatrixXcf fields(const opu::sim::Medium& medium, const Bits& bits, std::int64_t n_out,
                        int threads = 1) {
  const std::vector<std::uint8_t> packed = opu::sim::pack_frames(bits);
  Eigen::MatrixXcf out;
  medium.fields({packed, bits.rows(), n_out, bits.cols(), 0, threads}, out);
  return out;
}
}  // namespace

TEST_SUITE("opu_sim") {
  TEST_CASE("Structured medium: entries of the implied operator are i.i.d. complex Gaussian") {
    const std::uint64_t seed = opu::test::test_seed(31);
    INFO("seed " << seed);
    const std::int64_t n_in = 1000;  // not a power of two: N = 1024, columns restricted
    const std::int64_t n_out = 1000;
    const auto medium = opu::sim::make_structured_medium(seed, n_in, n_out);
    // Columns 0..199 of R, one single-mirror frame each.
    Bits unit = Bits::Zero(n_in, 200);
    for (std::int64_t j = 0; j < 200; ++j) unit(j * 5, j) = 1;
    const Eigen::MatrixXcf columns = fields(*medium, unit, n_out);
    const Eigen::ArrayXd re =
        (columns.real().array() * std::sqrt(static_cast<float>(n_in))).cast<double>().reshaped();
    const Eigen::ArrayXd im =
        (columns.imag().array() * std::sqrt(static_cast<float>(n_in))).cast<double>().reshaped();
    const double n = static_cast<double>(re.size());
    // 200,000 complex entries, Re and Im ~ N(0, 1) after scaling by sqrt(n_in): the variance has
    // std sqrt(2/n) = 0.003, the kurtosis sqrt(24/n) = 0.011; bounds at about 4 sigma. (The
    // operator is exactly unitary up to scale, so each column has exactly the expected norm:
    // the variance matches far better than chance would.)
    CHECK(std::abs(re.mean()) < 0.01);
    CHECK(std::abs(im.mean()) < 0.01);
    CHECK(re.square().mean() == doctest::Approx(1.0).epsilon(0.02));
    CHECK(im.square().mean() == doctest::Approx(1.0).epsilon(0.02));
    CHECK(re.pow(4).mean() / std::pow(re.square().mean(), 2) == doctest::Approx(3.0).epsilon(0.02));
    CHECK(std::abs((re * im).mean()) < 0.012);
    // Different columns are orthogonal-ish: normalised inner products of two columns ~ 1/sqrt(n_out).
    const std::complex<float> overlap = columns.col(3).dot(columns.col(17));
    CHECK(std::abs(overlap) / columns.col(3).squaredNorm() < 0.15);
    (void)n;
  }

  TEST_CASE("Structured medium: intensities are exponential and follow the quadratic kernel") {
    const std::uint64_t seed = opu::test::test_seed(32);
    const std::int64_t n_in = 128;
    const std::int64_t n_out = 16384;
    const auto medium = opu::sim::make_structured_medium(seed, n_in, n_out);
    for (std::int64_t overlap : {0, 16, 48}) {
      Bits pair = Bits::Zero(n_in, 2);
      pair.col(0).head(64).setOnes();
      pair.col(1).segment(64 - overlap, 48).setOnes();
      const Eigen::MatrixXf intensity = fields(*medium, pair, n_out).cwiseAbs2();
      const double moment =
          (intensity.col(0).cast<double>().array() * intensity.col(1).cast<double>().array())
              .mean();
      const double expected = std::pow(2.0 / n_in, 2) * (64.0 * 48.0 + overlap * overlap);
      INFO("overlap " << overlap);
      // Same statistics as the dense medium's test (16,384 pixels: ~1.4% standard error).
      CHECK(moment == doctest::Approx(expected).epsilon(0.07));
      const Eigen::ArrayXd one = intensity.col(0).cast<double>().array();
      const double mean = one.mean();
      const double std = std::sqrt((one - mean).square().mean());
      CHECK(std / mean == doctest::Approx(1.0).epsilon(0.06));  // exponential: std = mean
    }
  }

  TEST_CASE("Structured medium: linear, thread-count independent, entry() == its column") {
    const auto medium = opu::sim::make_structured_medium(5, 300, 500);
    const Bits bits = random_bits(300, 6, 5);
    CHECK(fields(*medium, bits, 500, 1) == fields(*medium, bits, 500, 2));
    Bits x1 = random_bits(300, 1, 1, 0.3);
    Bits x2 = random_bits(300, 1, 2, 0.3);
    x2 = (x2.array() * (1 - x1.array())).matrix();
    const Bits both = x1 + x2;
    const Eigen::MatrixXcf sum = fields(*medium, x1, 500) + fields(*medium, x2, 500);
    CHECK((sum - fields(*medium, both, 500)).norm() < 1e-5 * sum.norm());
    Bits unit = Bits::Zero(300, 1);
    unit(123, 0) = 1;
    CHECK(medium->entry(77, 123, 0) == fields(*medium, unit, 500)(77, 0));
  }

  TEST_CASE("Structured medium: measured plans from one wisdom file give the same bits") {
    const std::string wisdom = std::filesystem::temp_directory_path() /
                               ("opu-test-wisdom-" + std::to_string(::getpid()));
    std::filesystem::remove(wisdom);
    const opu::sim::FftOptions measured{true, wisdom};
    const Bits bits = random_bits(1000, 3, 4);
    const auto first = opu::sim::make_structured_medium(9, 1000, 1000, measured);
    REQUIRE(std::filesystem::exists(wisdom));  // saved after planning
    const auto second = opu::sim::make_structured_medium(9, 1000, 1000, measured);
    CHECK(fields(*first, bits, 1000) == fields(*second, bits, 1000));
    // Estimated and measured plans realise the same operator up to float rounding.
    const auto estimated = opu::sim::make_structured_medium(9, 1000, 1000);
    const Eigen::MatrixXcf a = fields(*estimated, bits, 1000);
    CHECK((a - fields(*first, bits, 1000)).norm() < 1e-5 * a.norm());
    auto config = opu::sim::SimConfig::from_params(
        {{"medium", "structured"}, {"fft_planning", "measure"}, {"fft_wisdom", wisdom}});
    REQUIRE(config.ok());
    CHECK(config->fft.measure);
    CHECK(opu::sim::SimConfig::from_params({{"fft_planning", "patient"}}).status().code() ==
          opu::StatusCode::kInvalidArgument);
    std::filesystem::remove(wisdom);
  }

  TEST_CASE("Structured medium: selectable by name, and holography works on it") {
    auto device = opu::test::make_sim("medium=structured&camera=ideal&n_in=2048&n_out=256");
    CHECK(device->info().model.find("structured") != std::string::npos);
    Eigen::MatrixXf values = random_bits(12, 8, 3).cast<float>();
    values(0, 0) = 1.0F;
    auto projected = device->linear_transform(
        {12, 256, 8, {values.data(), static_cast<std::size_t>(values.size())}, {}});
    auto exact = device->exact_linear(
        {12, 256, 8, {values.data(), static_cast<std::size_t>(values.size())}, {}});
    REQUIRE(projected.ok());
    REQUIRE(exact.ok());
    CHECK((projected->values - *exact).norm() < 1e-4 * exact->norm());
    auto wrong = opu::sim::SimConfig::from_params({{"medium", "fft"}});
    CHECK(wrong.status().message() ==
          "sim parameter 'medium': value 'fft' is not one of auto, dense, streamed, structured");
  }
}
