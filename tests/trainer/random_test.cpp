#include "trainer/random.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

TEST_SUITE("trainer") {
  using opu::trainer::CounterRng;

  TEST_CASE("CounterRng: golden values pin the bits") {
    // If these change, every seeded run (data order, init, feedback matrix) changes: bump a
    // version.
    const CounterRng rng(42, "golden");
    CHECK(rng.bits(0) == rng.bits(0));
    CHECK(rng.bits(0) == 14526561429900089344ULL);
    CHECK(rng.bits(1) == 18130378521635098726ULL);
    CHECK(rng.uniform(2) == 0.327897489F);  // 24-bit values: exact in float
    // Box-Muller through libm's log/cos in double, then rounded to float: pinned to 1e-6.
    CHECK(rng.normal(3) == doctest::Approx(1.46110725).epsilon(1e-6));
    CHECK(opu::trainer::mix64(0) == 0xE220A8397B1DCDAFULL);  // SplitMix64's first output from 0
    CHECK(opu::trainer::derive_seed(1, "a") != opu::trainer::derive_seed(1, "b"));
    CHECK(opu::trainer::derive_seed(1, "a") != opu::trainer::derive_seed(2, "a"));
  }

  TEST_CASE("CounterRng: uniform and normal moments") {
    const CounterRng rng(7, "moments");
    constexpr int kN = 200000;
    double sum_u = 0, sum_n = 0, sum_n2 = 0, sum_n4 = 0;
    float min_u = 1, max_u = 0;
    for (int i = 0; i < kN; ++i) {
      const float u = rng.uniform(static_cast<std::uint64_t>(i));
      min_u = std::min(min_u, u);
      max_u = std::max(max_u, u);
      sum_u += u;
      const double z = rng.normal(static_cast<std::uint64_t>(i));
      sum_n += z;
      sum_n2 += z * z;
      sum_n4 += z * z * z * z;
    }
    CHECK(min_u >= 0.0F);
    CHECK(max_u < 1.0F);
    // Standard errors at n = 2e5: mean of U 6.5e-4, mean of N 2.2e-3, var 3.2e-3, 4th moment 0.02;
    // tolerances are ~5 standard errors.
    CHECK(std::abs(sum_u / kN - 0.5) < 0.004);
    CHECK(std::abs(sum_n / kN) < 0.011);
    CHECK(std::abs(sum_n2 / kN - 1.0) < 0.016);
    CHECK(std::abs(sum_n4 / kN - 3.0) < 0.1);
  }

  TEST_CASE("permutation: is a permutation and depends on the seed") {
    const std::vector<std::int64_t> p = opu::trainer::permutation(CounterRng(1, "p"), 1000);
    const std::set<std::int64_t> seen(p.begin(), p.end());
    CHECK(seen.size() == 1000);
    CHECK(*seen.begin() == 0);
    CHECK(*seen.rbegin() == 999);
    CHECK(p == opu::trainer::permutation(CounterRng(1, "p"), 1000));
    CHECK(p != opu::trainer::permutation(CounterRng(2, "p"), 1000));
  }
}
