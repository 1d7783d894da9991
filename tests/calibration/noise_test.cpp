// noise and exposure against the simulator, whose camera parameters are known.
#include <doctest/doctest.h>

#include <cmath>

#include "calibration/procedures.h"
#include "opu_sim/sim_device.h"
#include "calibration_test_support.h"
#include "test_support.h"

namespace cal = opu::calibration;

TEST_SUITE("calibration") {
  TEST_CASE("noise: recovers the configured gain and read noise within 5%") {
    const std::uint64_t seed = opu::test::test_seed(11);
    INFO("seed " << seed);
    // Default realistic camera (gain 40 e-/count, read noise 10 e- = 0.25 count, dark 2) and a
    // variant with a larger read noise, so that both regimes of the read-noise fit are covered.
    SUBCASE("default camera") {
      auto device = make_sim({{"seed", std::to_string(seed)}, {"n_in", "256"}, {"n_out", "1024"}});
      cal::NoiseOptions options;
      options.seed = seed;
      opu::Result<cal::NoiseSection> noise = cal::measure_noise(*device, options);
      REQUIRE(noise.ok());
      INFO("gain " << noise->gain_e_per_count << " ± " << noise->gain_stderr << ", read "
                   << noise->read_noise_e << " ± " << noise->read_noise_stderr);
      // Statistical errors: the fit uses ~3,000 points of 16 frames (gain stderr ~0.5%) and
      // 65,536 dark readings (read-noise stderr ~0.5%); 5% is the bound, and the
      // uncertainties must be honest (the truth within 4 stderr).
      CHECK(std::abs(noise->gain_e_per_count / 40.0 - 1.0) < 0.05);
      CHECK(std::abs(noise->read_noise_e / 10.0 - 1.0) < 0.05);
      CHECK(std::abs(noise->gain_e_per_count - 40.0) < 4.0 * noise->gain_stderr + 0.2);
      CHECK(std::abs(noise->read_noise_e - 10.0) < 4.0 * noise->read_noise_stderr + 0.1);
      CHECK(std::abs(noise->dark_level_counts - 2.0) < 0.02);
      CHECK(noise->saturation_counts == 255.0);
      CHECK(noise->frames == 64 + 6 * 16);
    }
    SUBCASE("read noise above one count, other gain") {
      auto device = make_sim({{"seed", std::to_string(seed)},
                              {"n_in", "256"},
                              {"n_out", "1024"},
                              {"gain_e_per_count", "12"},
                              {"read_noise_e", "30"},
                              {"dark_offset_counts", "5.3"}});
      cal::NoiseOptions options;
      options.seed = seed;
      opu::Result<cal::NoiseSection> noise = cal::measure_noise(*device, options);
      REQUIRE(noise.ok());
      INFO("gain " << noise->gain_e_per_count << ", read " << noise->read_noise_e);
      CHECK(std::abs(noise->gain_e_per_count / 12.0 - 1.0) < 0.05);
      CHECK(std::abs(noise->read_noise_e / 30.0 - 1.0) < 0.05);
      CHECK(std::abs(noise->read_noise_ptc_e / 30.0 - 1.0) < 0.15);  // the intercept, less precise
      CHECK(std::abs(noise->dark_level_counts - 5.3) < 0.05);
    }
  }

  TEST_CASE("noise: data that cannot support a fit is a clear error") {
    SUBCASE("saturated: every exposure clips") {
      // Every mirror on at 250x the default exposure: ~10,000 counts expected, only the ~2.5%
      // darkest speckle grains stay below 255, too few points for a fit.
      auto device = make_sim({{"n_in", "256"}, {"n_out", "256"}});
      cal::NoiseOptions options;
      options.density = 1.0;
      options.exposures_us = {100000};
      opu::Result<cal::NoiseSection> noise = cal::measure_noise(*device, options);
      REQUIRE_FALSE(noise.ok());
      CHECK(noise.status().code() == opu::StatusCode::kFailedPrecondition);
      CHECK(noise.status().message().find("saturated") != std::string::npos);
    }
    SUBCASE("no noise: the variance does not grow with the signal") {
      auto device = make_sim({{"n_in", "256"}, {"n_out", "256"}, {"camera", "ideal"}});
      opu::Result<cal::NoiseSection> noise = cal::measure_noise(*device, {});
      REQUIRE_FALSE(noise.ok());
      CHECK(noise.status().code() == opu::StatusCode::kFailedPrecondition);
    }
    SUBCASE("too few frames") {
      auto device = make_sim({{"n_in", "64"}, {"n_out", "64"}});
      cal::NoiseOptions options;
      options.repeats = 2;
      CHECK(cal::measure_noise(*device, options).status().code() ==
            opu::StatusCode::kInvalidArgument);
    }
  }

  TEST_CASE("exposure: the chosen percentile lands on its target without saturation") {
    const std::uint64_t seed = opu::test::test_seed(12);
    INFO("seed " << seed);
    auto device = make_sim({{"seed", std::to_string(seed)}, {"n_in", "512"}, {"n_out", "2048"}});
    cal::ExposureOptions options;
    options.seed = seed;
    SUBCASE("99.9th percentile at 90%") {}
    SUBCASE("median at 15%") {
      options.percentile = 50;
      options.target_fraction = 0.15;
    }
    opu::Result<cal::ExposureSection> exposure = cal::find_exposure(*device, options);
    REQUIRE(exposure.ok());
    INFO("exposure " << exposure->exposure_us << " us, achieved " << exposure->achieved_fraction);
    // 16 probes x 2048 pixels: the 99.9th percentile of ~32k exponential readings has a relative
    // standard error ~4%; the iteration stops within 2%.
    CHECK(std::abs(exposure->achieved_fraction / options.target_fraction - 1.0) < 0.1);
    CHECK(exposure->saturated_fraction <= 1.0 - options.percentile / 100.0);
    CHECK(exposure->masked_pixels.size() < 10);
  }
}
