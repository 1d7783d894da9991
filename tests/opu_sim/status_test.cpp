#include <doctest/doctest.h>

#include "opu_sim/status.h"

TEST_SUITE("opu_sim") {
  TEST_CASE("Status: codes, names and context") {
    const opu::Status status = opu::invalid_argument("Transform: batch is 0, want >= 1");
    CHECK_FALSE(status.ok());
    CHECK(status.code() == opu::StatusCode::kInvalidArgument);
    CHECK(status.to_string() == "INVALID_ARGUMENT: Transform: batch is 0, want >= 1");
    CHECK(status.with_context("loading").message() == "loading: Transform: batch is 0, want >= 1");
    CHECK(opu::Status().ok());
    // Numbers match gRPC's canonical codes: the RPC edge is a cast.
    CHECK(static_cast<int>(opu::StatusCode::kOutOfRange) == 11);
    CHECK(static_cast<int>(opu::StatusCode::kUnauthenticated) == 16);
  }

  TEST_CASE("Result: value or status, never both") {
    opu::Result<int> good = 3;
    CHECK(good.ok());
    CHECK(*good == 3);
    opu::Result<int> bad = opu::out_of_range("n_in 70000 above device max_n_in 65536");
    CHECK_FALSE(bad.ok());
    CHECK(bad.status().code() == opu::StatusCode::kOutOfRange);
    CHECK_THROWS_AS(bad.value(), opu::StatusError);
    // An ok Status carries no value: the Result turns it into an internal error.
    opu::Result<int> confused = opu::Status();
    CHECK(confused.status().code() == opu::StatusCode::kInternal);
  }

  TEST_CASE("OPU_CHECK: throws naming file and line") {
    try {
      OPU_CHECK(1 + 1 == 3, "arithmetic");
      FAIL("OPU_CHECK did not throw");
    } catch (const opu::StatusError& error) {
      const std::string what = error.what();
      CHECK(what.find("status_test.cpp") != std::string::npos);
      CHECK(what.find("arithmetic") != std::string::npos);
    }
  }
}
