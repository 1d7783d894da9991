#include <doctest/doctest.h>

#include <cmath>

#include "sim_test_util.h"
#include "test_support.h"

using opu::test::Bits;
using opu::test::make_sim;
using opu::test::random_bits;

// doctest has no generators: each SUBCASE picks one variant of the photon-transfer test.
#define GENERATE_VARIANT()                                                   \
  [] {                                                                       \
    std::string chosen;                                                      \
    SUBCASE("default camera") { chosen = ""; }                               \
    SUBCASE("exact Poisson shot noise") { chosen = "&exact_shot_noise=on"; } \
    SUBCASE("no read noise") { chosen = "&read_noise=off"; }                 \
    return chosen;                                                           \
  }()

namespace {
Eigen::MatrixXf ideal_intensity(opu::sim::SimDevice& device, const Bits& bits, std::int64_t n_out) {
  const std::vector<std::uint8_t> packed = opu::sim::pack_frames(bits);
  auto result = device.transform_float({bits.rows(), n_out, bits.cols(), packed, 0.0});
  REQUIRE(result.ok());
  return *result;
}

opu::sim::Frames counts(opu::sim::Device& device, const Bits& bits, std::int64_t n_out,
                        double exposure_us = 0.0) {
  const std::vector<std::uint8_t> packed = opu::sim::pack_frames(bits);
  auto result = device.transform({bits.rows(), n_out, bits.cols(), packed, exposure_us});
  REQUIRE(result.ok());
  return *result;
}
}  // namespace

TEST_SUITE("opu_sim") {
  TEST_CASE("Camera (ideal): intensity over random half-on frames is exponential") {
    const std::uint64_t seed = opu::test::test_seed(21);
    INFO("seed " << seed);
    // Over random media and random inputs the field is circular Gaussian and |E|^2 exponential
    // (mean = std). For one fixed pixel, half-on frames share a mean field 0.5 sum_m R_jm, which
    // makes its own distribution Rician: pixels are pooled, as the physics statement intends.
    auto device = make_sim("camera=ideal&n_in=256&n_out=512&seed=" + std::to_string(seed));
    const Eigen::MatrixXf intensity = ideal_intensity(*device, random_bits(256, 500, seed), 512);
    const Eigen::ArrayXd pooled =
        Eigen::Map<const Eigen::ArrayXf>(intensity.data(), intensity.size()).cast<double>();
    const double mean = pooled.mean();
    const double std = std::sqrt((pooled - mean).square().mean());
    // 256,000 readings from 512 pixels: the pixel-to-pixel spread of the mean field dominates
    // the sampling error (~0.5/sqrt(512) = 2% on the mean, a little more on the std).
    CHECK(std / mean == doctest::Approx(1.0).epsilon(0.08));
    CHECK(mean == doctest::Approx(20.0).epsilon(0.08));  // a half-on frame reads 20 counts
    // Exponential tail: P(I > 3 mean) = e^-3 = 0.0498.
    const double tail = (pooled > 3.0 * mean).cast<double>().mean();
    CHECK(tail == doctest::Approx(std::exp(-3.0)).epsilon(0.15));
  }

  TEST_CASE("Camera (ideal): E[I(x) I(x')] follows the quadratic kernel") {
    const std::uint64_t seed = opu::test::test_seed(22);
    INFO("seed " << seed);
    const std::int64_t n_in = 128;
    const std::int64_t n_out = 20000;  // pixels are independent rows: average over them
    auto device = make_sim("camera=ideal&n_in=128&n_out=20000&seed=" + std::to_string(seed));
    const double counts_per_intensity = device->config().camera.counts_per_intensity(
        device->config().camera.exposure_us);
    Bits pair = Bits::Zero(n_in, 2);
    for (std::int64_t overlap : {0, 16, 48}) {
      pair.setZero();
      pair.col(0).head(64).setOnes();                  // |x|^2 = 64
      pair.col(1).segment(64 - overlap, 48).setOnes();  // |x'|^2 = 48, x.x' = overlap
      const Eigen::MatrixXf intensity = ideal_intensity(*device, pair, n_out);
      const double moment =
          (intensity.col(0).cast<double>().array() * intensity.col(1).cast<double>().array())
              .mean() /
          (counts_per_intensity * counts_per_intensity);
      // E|E|^2 = 2|x|/n_in for Re, Im ~ N(0, 1/n_in); for circular Gaussians
      // E[|E|^2 |E'|^2] = (2/n_in)^2 (|x|^2 |x'|^2 + (x.x')^2).
      const double expected = std::pow(2.0 / n_in, 2) * (64.0 * 48.0 + overlap * overlap);
      INFO("overlap " << overlap);
      // The product of two exponentials has relative std ~1.7; over 20,000 pixels ~0.012.
      CHECK(moment == doctest::Approx(expected).epsilon(0.06));
    }
  }

  TEST_CASE("Camera: photon transfer, noise variance grows linearly with the mean") {
    const std::uint64_t seed = opu::test::test_seed(23);
    INFO("seed " << seed);
    // 12 bits so that quantisation (1/12 count^2) does not hide the shot noise. Three noise
    // paths: the default (shot + read noise drawn as one Gaussian), exact Poisson draws
    // everywhere, and no read noise (Poisson below 400 e-, Gaussian above).
    const std::string variant = GENERATE_VARIANT();
    INFO("variant " << variant);
    auto device =
        make_sim("adc_bits=12&n_in=64&n_out=400&seed=" + std::to_string(seed) + variant);
    const Bits frame = random_bits(64, 1, seed);
    Bits repeated(64, 200);
    for (std::int64_t b = 0; b < 200; ++b) repeated.col(b) = frame.col(0);
    std::vector<double> means;
    std::vector<double> variances;
    for (double exposure : {400.0, 1600.0, 6400.0}) {
      const Eigen::MatrixXf c = counts(*device, repeated, 400, exposure).to_float();
      for (std::int64_t p = 0; p < c.rows(); ++p) {
        const Eigen::ArrayXd series = c.row(p).transpose().cast<double>().array();
        const double mean = series.mean();
        if (mean > 3000) continue;  // stay clear of saturation
        means.push_back(mean);
        variances.push_back((series - mean).square().sum() / (series.size() - 1));
      }
    }
    // Least-squares slope of variance against mean: 1 / gain (counts per electron).
    double mx = 0, my = 0;
    for (std::size_t i = 0; i < means.size(); ++i) mx += means[i], my += variances[i];
    mx /= static_cast<double>(means.size());
    my /= static_cast<double>(means.size());
    double sxy = 0, sxx = 0;
    for (std::size_t i = 0; i < means.size(); ++i) {
      sxy += (means[i] - mx) * (variances[i] - my);
      sxx += (means[i] - mx) * (means[i] - mx);
    }
    const double slope = sxy / sxx;
    // ~1000 pixel series of 200 frames: each variance is within ~10%; the fit over the range of
    // means is far tighter. 1/40 counts per electron by default.
    CHECK(slope == doctest::Approx(1.0 / 40.0).epsilon(0.08));
  }

  TEST_CASE("Camera: saturation clips at 2^bits - 1 and is counted") {
    auto device = make_sim("n_in=64&n_out=256&adc_bits=8");
    const opu::sim::Frames frames = counts(*device, random_bits(64, 4, 1), 256, 20000.0);
    std::uint32_t highest = 0;
    for (std::int64_t b = 0; b < 4; ++b) {
      for (std::int64_t p = 0; p < 256; ++p) highest = std::max(highest, frames.count(b, p));
    }
    CHECK(highest == 255);
    CHECK(frames.info.saturated_pixels > 0);
    // At the default exposure saturation is rare (the mean is 20 counts, 255 is 12.7 means).
    const opu::sim::Frames normal = counts(*device, random_bits(64, 4, 1), 256);
    CHECK(normal.info.saturated_pixels == 0);
  }

  TEST_CASE("Camera: noise is reproducible per seed, and repeated frames differ") {
    const Bits frame = random_bits(64, 1, 5);
    Bits twice(64, 2);
    twice.col(0) = frame.col(0);
    twice.col(1) = frame.col(0);
    auto a = make_sim("n_in=64&n_out=128&seed=3");
    auto b = make_sim("n_in=64&n_out=128&seed=3");
    const opu::sim::Frames fa = counts(*a, twice, 128);
    const opu::sim::Frames fb = counts(*b, twice, 128);
    CHECK(fa.data == fb.data);
    std::int64_t differing = 0;
    for (std::int64_t p = 0; p < 128; ++p) differing += fa.count(0, p) != fa.count(1, p) ? 1 : 0;
    CHECK(differing > 10);
  }

  TEST_CASE("Camera: more than 8 bits use little-endian 16-bit pixels") {
    auto device = make_sim("n_in=64&n_out=16&adc_bits=12");
    const opu::sim::Frames frames = counts(*device, random_bits(64, 2, 2), 16, 4000.0);
    CHECK(frames.bytes_per_pixel() == 2);
    CHECK(frames.data.size() == 2 * 16 * 2);
    CHECK(frames.count(1, 3) ==
          (frames.data[2 * (16 + 3)] | (static_cast<unsigned>(frames.data[2 * (16 + 3) + 1]) << 8)));
  }
}
