#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "opu_sim/packing.h"
#include "test_support.h"

using opu::sim::packed_bytes;
using Bits = Eigen::Matrix<std::uint8_t, -1, -1>;

namespace {
Bits random_bits(std::int64_t n, std::int64_t batch, std::uint64_t seed) {
  Bits bits(n, batch);
  std::uint64_t state = seed;
  for (std::int64_t i = 0; i < bits.size(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    bits.data()[i] = static_cast<std::uint8_t>((state >> 33) & 1U);
  }
  return bits;
}
}  // namespace

TEST_SUITE("opu_sim") {
  TEST_CASE("packing: bit i is bit i % 8, least significant first, of byte i / 8") {
    Bits bits = Bits::Zero(11, 2);
    bits(0, 0) = 1;
    bits(9, 0) = 1;
    bits(7, 1) = 1;
    bits(10, 1) = 1;
    const std::vector<std::uint8_t> packed = opu::sim::pack_frames(bits);
    REQUIRE(packed.size() == 4);  // 2 frames x ceil(11 / 8)
    CHECK(packed[0] == 0x01);
    CHECK(packed[1] == 0x02);
    CHECK(packed[2] == 0x80);
    CHECK(packed[3] == 0x04);
  }

  TEST_CASE("packing: unpack(pack(x)) == x for every size") {
    for (std::int64_t n : {1, 7, 8, 9, 63, 64, 65, 1000}) {
      const Bits bits = random_bits(n, 5, 7 + static_cast<std::uint64_t>(n));
      const std::vector<std::uint8_t> packed = opu::sim::pack_frames(bits);
      CHECK(static_cast<std::int64_t>(packed.size()) == 5 * packed_bytes(n));
      CHECK(opu::sim::unpack_frames(packed, n, 5) == bits);
      Eigen::MatrixXf floats(n, 5);
      opu::sim::unpack_frames_to_float(packed, n, 5, floats);
      CHECK(floats == bits.cast<float>());
      CHECK(opu::sim::count_ones({packed.data(), static_cast<std::size_t>(packed_bytes(n))}, n) ==
            bits.col(0).cast<std::int64_t>().sum());
    }
  }

  TEST_CASE("binarize: threshold, and NaN is an error naming the element") {
    Eigen::MatrixXf values(3, 1);
    values << 0.2F, 0.7F, -1.0F;
    auto packed = opu::sim::binarize(values, 0.5F);
    REQUIRE(packed.ok());
    CHECK((*packed)[0] == 0x02);
    values(2, 0) = std::numeric_limits<float>::quiet_NaN();
    auto bad = opu::sim::binarize(values, 0.5F);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(bad.status().message().find("(2, 0) is NaN") != std::string::npos);
  }

  TEST_CASE("Formatting: each feature drives a block of mirrors") {
    auto formatting = opu::sim::Formatting::fit(3, 10);
    REQUIRE(formatting.ok());
    CHECK(formatting->factor == 3);
    Bits features = Bits::Zero(3, 1);
    features(1, 0) = 1;
    const auto mirrors = formatting->apply(opu::sim::pack_frames(features), 1);
    const Bits expanded = opu::sim::unpack_frames(mirrors, 10, 1);
    for (std::int64_t m = 0; m < 10; ++m) CHECK(expanded(m, 0) == ((m >= 3 && m < 6) ? 1 : 0));
    auto too_many = opu::sim::Formatting::fit(11, 10);
    CHECK(too_many.status().code() == opu::StatusCode::kOutOfRange);
  }
}
