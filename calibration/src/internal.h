// Helpers shared by the procedures. Internal to opu_calibration.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <string>

#include "calibration/frame_taker.h"
#include "opu_sim/device.h"

namespace opu::calibration::detail {

/// The library's logger ("calibration"); executables own its sinks and level.
std::shared_ptr<spdlog::logger> logger();

/// Pixels a procedure reads: `requested`, or min(max_n_out, fallback) when 0.
std::int64_t pixels_or(std::int64_t requested, const sim::DeviceInfo& info, std::int64_t fallback);

/// Standard normal CDF.
double normal_cdf(double x);

/// Maximum-likelihood (mean, sigma) of a Gaussian observed through a rounding ADC: readings are
/// round(x) clipped to [0, full_scale]. `histogram[k]` counts readings equal to k. Returns false
/// when the fit cannot be made (fewer than 2 distinct readings). sigma_stderr from the inverse
/// Fisher information (observed).
struct QuantisedGaussianFit {
  double mean = 0.0;
  double sigma = 0.0;
  double mean_stderr = 0.0;
  double sigma_stderr = 0.0;
};
bool fit_quantised_gaussian(const std::vector<std::int64_t>& histogram, QuantisedGaussianFit& fit);

/// Weighted straight-line fit y = a + b x; returns the covariance scaled by the reduced chi².
struct LineFit {
  double a = 0.0;
  double b = 0.0;
  double var_a = 0.0;
  double var_b = 0.0;
  double reduced_chi2 = 0.0;
};
LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y,
                 const std::vector<double>& w);

}  // namespace opu::calibration::detail
