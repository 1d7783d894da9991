#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <thread>

#include "opu_sim/transmission_matrix.h"
#include "sim_test_util.h"
#include "test_support.h"

using opu::StatusCode;
using opu::test::Bits;
using opu::test::make_sim;
using opu::test::random_bits;

namespace {
opu::Status transform_status(opu::sim::Device& device, std::int64_t n_in, std::int64_t n_out,
                             std::int64_t batch, std::size_t bytes, double exposure_us = 0.0) {
  const std::vector<std::uint8_t> inputs(bytes, 0x55);
  return device.transform({n_in, n_out, batch, inputs, exposure_us}).status();
}

opu::Status linear_status(opu::sim::Device& device, std::vector<float> values, std::int64_t n_in,
                          opu::sim::LinearOptions options = {}) {
  const auto batch = static_cast<std::int64_t>(values.size()) / n_in;
  return device.linear_transform({n_in, 64, batch, values, options}).status();
}
}  // namespace

TEST_SUITE("opu_sim") {
  TEST_CASE("SimDevice: bad input gets a clear error, never a crash") {
    auto device = make_sim("n_in=100&n_out=64");
    SUBCASE("wrong byte count") {
      const opu::Status s = transform_status(*device, 100, 64, 8, 96);
      CHECK(s.code() == StatusCode::kInvalidArgument);
      CHECK(s.message() == "Transform: inputs has 96 bytes, want batch*ceil(n_in/8) = 104");
    }
    SUBCASE("n_in above the maximum") {
      const opu::Status s = transform_status(*device, 101, 64, 1, 13);
      CHECK(s.code() == StatusCode::kOutOfRange);
      CHECK(s.message() == "Transform: n_in 101 above device max_n_in 100");
    }
    SUBCASE("zero sizes") {
      CHECK(transform_status(*device, 100, 64, 0, 0).code() == StatusCode::kInvalidArgument);
      CHECK(transform_status(*device, 0, 64, 1, 0).code() == StatusCode::kInvalidArgument);
      CHECK(transform_status(*device, 100, 0, 1, 13).code() == StatusCode::kInvalidArgument);
      CHECK(transform_status(*device, 100, 65, 1, 13).code() == StatusCode::kOutOfRange);
    }
    SUBCASE("exposure out of range") {
      CHECK(transform_status(*device, 100, 64, 1, 13, -1.0).code() == StatusCode::kInvalidArgument);
      CHECK(transform_status(*device, 100, 64, 1, 13, std::nan("")).code() ==
            StatusCode::kInvalidArgument);
      CHECK(transform_status(*device, 100, 64, 1, 13, 1e9).code() == StatusCode::kOutOfRange);
    }
    SUBCASE("NaN or infinity in a float vector") {
      std::vector<float> values(20, 0.5F);
      values[13] = std::numeric_limits<float>::quiet_NaN();
      const opu::Status s = linear_status(*device, values, 10);
      CHECK(s.code() == StatusCode::kInvalidArgument);
      CHECK(s.message().find("values[13] (sample 1, component 3) is nan") != std::string::npos);
      values[13] = std::numeric_limits<float>::infinity();
      CHECK(linear_status(*device, values, 10).code() == StatusCode::kInvalidArgument);
    }
    SUBCASE("encoding options") {
      const std::vector<float> values(10, 0.5F);
      CHECK(linear_status(*device, values, 10, {opu::sim::Encoding::kTernary, 1.5F, 1}).code() ==
            StatusCode::kInvalidArgument);
      CHECK(linear_status(*device, values, 10, {opu::sim::Encoding::kBitplanes, 0.1F, 0}).code() ==
            StatusCode::kInvalidArgument);
      CHECK(linear_status(*device, values, 10, {static_cast<opu::sim::Encoding>(7), 0.1F, 1})
                .code() == StatusCode::kInvalidArgument);
      opu::sim::LinearOptions stochastic{opu::sim::Encoding::kStochastic, 0.1F, 17};
      CHECK(linear_status(*device, values, 10, stochastic).message() ==
            "LinearTransform: bitplanes is 17, want 1..16");
      stochastic.bitplanes = 2;
      stochastic.repeats = 0;
      CHECK(linear_status(*device, values, 10, stochastic).message() ==
            "LinearTransform: repeats is 0, want 1..64");
      stochastic.repeats = 1;
      stochastic.reference_repeats = opu::sim::kMaxReferenceRepeats + 1;
      CHECK(linear_status(*device, values, 10, stochastic).message() ==
            "LinearTransform: reference_repeats is 1025, want 0 (device default) .. 1024");
      stochastic.reference_repeats = 0;
      for (const double age : {-1.0, std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity()}) {
        stochastic.reference_max_age_s = age;
        const opu::Status s = linear_status(*device, values, 10, stochastic);
        CHECK(s.code() == StatusCode::kInvalidArgument);
        CHECK_MESSAGE(s.message().starts_with("LinearTransform: reference_max_age_s is "),
                      s.message());
      }
    }
    SUBCASE("too many features for the mirrors and the reference") {
      const std::vector<float> values(95, 0.5F);
      const opu::Status s = linear_status(*device, values, 95);
      CHECK(s.code() == StatusCode::kOutOfRange);
      CHECK(s.message().find("needs 103 mirrors") != std::string::npos);
    }
    // After all that, the device still answers correctly.
    CHECK(transform_status(*device, 100, 64, 2, 26).ok());
  }

  TEST_CASE("SimConfig: parameters by name, errors naming the parameter") {
    auto unknown = opu::sim::SimConfig::from_params({{"n_inn", "3"}});
    CHECK(unknown.status().code() == StatusCode::kInvalidArgument);
    CHECK(unknown.status().message().find("unknown sim parameter 'n_inn'") != std::string::npos);
    auto malformed = opu::sim::SimConfig::from_params({{"n_in", "12x"}});
    CHECK(malformed.status().message() == "sim parameter 'n_in': value '12x' is not an integer");
    auto range = opu::sim::SimConfig::from_params({{"adc_bits", "17"}});
    CHECK(range.status().message().find("'adc_bits' is 17, want a value in [1, 16]") !=
          std::string::npos);
    auto ideal = opu::sim::SimConfig::from_params({{"read_noise_e", "3"}, {"camera", "ideal"}});
    REQUIRE(ideal.ok());
    CHECK(ideal->camera.ideal);
    CHECK(ideal->camera.read_noise_e == 3.0);  // individual settings refine the preset
    CHECK(opu::sim::parse_query("a=1&b").status().code() == StatusCode::kInvalidArgument);
    CHECK(opu::sim::SimConfig::describe_params().size() > 20);
  }

  TEST_CASE("SimDevice: the device clock counts frames and device time") {
    auto device = make_sim("n_in=64&n_out=32&exposure_us=400&readout_us=400&overhead_us=100");
    const std::vector<std::uint8_t> packed = opu::sim::pack_frames(random_bits(64, 10, 1));
    auto first = device->transform({64, 32, 10, packed, 0.0});
    auto second = device->transform({64, 32, 10, packed, 2000.0});
    REQUIRE(first.ok());
    REQUIRE(second.ok());
    CHECK(first->info.device_time_start_ns == 0);
    CHECK(first->info.device_time_end_ns == 10 * 500'000);  // 2 kHz
    CHECK(second->info.device_time_start_ns == first->info.device_time_end_ns);
    CHECK(second->info.device_time_end_ns - second->info.device_time_start_ns == 10 * 2'100'000);
    CHECK(device->frames_taken() == 20);
    CHECK(device->info().frametime_us == 500.0);
  }

  TEST_CASE("SimDevice: concurrent calls get disjoint runs of frames (hammer)") {
    auto device = make_sim("n_in=256&n_out=64");
    const std::vector<std::uint8_t> packed = opu::sim::pack_frames(random_bits(256, 3, 2));
    constexpr int kThreads = 4;
    constexpr int kCalls = 25;
    std::vector<std::vector<opu::sim::FrameInfo>> infos(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int c = 0; c < kCalls; ++c) {
          auto frames = device->transform({256, 64, 3, packed, 0.0});
          if (frames.ok()) infos[t].push_back(frames->info);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    std::vector<std::pair<std::int64_t, std::int64_t>> intervals;
    for (const auto& list : infos) {
      REQUIRE(list.size() == kCalls);
      for (std::size_t i = 1; i < list.size(); ++i) {
        CHECK(list[i].device_time_start_ns >= list[i - 1].device_time_end_ns);
      }
      for (const auto& info : list) {
        intervals.emplace_back(info.device_time_start_ns, info.device_time_end_ns);
      }
    }
    std::sort(intervals.begin(), intervals.end());
    for (std::size_t i = 1; i < intervals.size(); ++i) {
      CHECK(intervals[i].first == intervals[i - 1].second);  // no gap, no overlap
    }
    CHECK(device->frames_taken() == kThreads * kCalls * 3);
  }

  TEST_CASE("SimDevice: results do not depend on the thread count") {
    const Bits bits = random_bits(512, 70, 3);
    const std::vector<std::uint8_t> packed = opu::sim::pack_frames(bits);
    auto one = make_sim("n_in=512&n_out=300&threads=1");
    auto two = make_sim("n_in=512&n_out=300&threads=2");
    auto a = one->transform({512, 300, 70, packed, 0.0});
    auto b = two->transform({512, 300, 70, packed, 0.0});
    CHECK(a->data == b->data);
    const Eigen::MatrixXf values = opu::test::random_values(10, 9, 4);
    const opu::sim::LinearRequest request{
        10, 300, 9, {values.data(), static_cast<std::size_t>(values.size())}, {}};
    CHECK(one->linear_transform(request)->values == two->linear_transform(request)->values);
  }

  TEST_CASE("SimDevice: drift is a pure function of device time") {
    auto still = make_sim("n_in=64&n_out=8&seed=3");
    auto drifting = make_sim("n_in=64&n_out=8&seed=3&drift_tau_s=2");
    // At t = 0 the drifting medium is the still one; at t = T it is the next realisation.
    CHECK(drifting->matrix_entry(2, 5, 0.0) == still->matrix_entry(2, 5, 0.0));
    const opu::sim::TransmissionMatrixGenerator next(3, 64, 1);
    CHECK(std::abs(drifting->matrix_entry(2, 5, 2.0) - next.entry(2, 5)) < 1e-6);
    // In between, the medium moves continuously and keeps its variance (cos^2 + sin^2 = 1).
    double power = 0;
    double overlap = 0;
    for (std::int64_t i = 0; i < 8; ++i) {
      for (std::int64_t j = 0; j < 64; ++j) {
        power += std::norm(drifting->matrix_entry(i, j, 1.0));
        overlap +=
            (std::conj(drifting->matrix_entry(i, j, 1.0)) * still->matrix_entry(i, j)).real();
      }
    }
    // 512 entries with E|R_ij|^2 = 2/64: power 16, relative std 1/sqrt(512) = 4.4%; the overlap
    // with R_0 is cos(pi/4) of it.
    CHECK(power == doctest::Approx(16.0).epsilon(0.2));
    CHECK(overlap / power == doctest::Approx(std::cos(std::numbers::pi / 4)).epsilon(0.15));
  }
}
