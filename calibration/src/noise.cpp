// noise: the photon-transfer curve (docs/design.md §5). See docs/calibration.md, "noise".
#include <algorithm>
#include <cmath>
#include <limits>

#include "calibration/procedures.h"
#include "internal.h"

namespace opu::calibration {
namespace detail {

std::shared_ptr<spdlog::logger> logger() {
  static const std::shared_ptr<spdlog::logger> kLogger = [] {
    std::shared_ptr<spdlog::logger> existing = spdlog::get("calibration");
    if (existing) return existing;
    // Shares the default logger's sinks (the executable's choice) under our own name.
    auto created =
        std::make_shared<spdlog::logger>("calibration", spdlog::default_logger()->sinks().begin(),
                                         spdlog::default_logger()->sinks().end());
    created->set_level(spdlog::default_logger()->level());
    spdlog::register_logger(created);
    return created;
  }();
  return kLogger;
}

std::int64_t pixels_or(std::int64_t requested, const sim::DeviceInfo& info, std::int64_t fallback) {
  return requested > 0 ? requested : std::min(info.max_n_out, fallback);
}

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

namespace {

// Negative log-likelihood of the histogram under round(N(mean, sigma²)) clipped to
// [0, histogram.size() - 1]; sigma = exp(log_sigma) keeps it positive.
double quantised_nll(const std::vector<std::int64_t>& histogram, double mean, double log_sigma) {
  const double sigma = std::exp(log_sigma);
  const auto top = static_cast<std::int64_t>(histogram.size()) - 1;
  double nll = 0.0;
  for (std::int64_t k = 0; k <= top; ++k) {
    const std::int64_t n = histogram[static_cast<std::size_t>(k)];
    if (n == 0) continue;
    const double upper = k == top ? 1.0 : normal_cdf((static_cast<double>(k) + 0.5 - mean) / sigma);
    const double lower = k == 0 ? 0.0 : normal_cdf((static_cast<double>(k) - 0.5 - mean) / sigma);
    nll -= static_cast<double>(n) * std::log(std::max(upper - lower, 1e-300));
  }
  return nll;
}

}  // namespace

bool fit_quantised_gaussian(const std::vector<std::int64_t>& histogram, QuantisedGaussianFit& fit) {
  double n = 0.0;
  double sum = 0.0;
  double sum2 = 0.0;
  int distinct = 0;
  for (std::size_t k = 0; k < histogram.size(); ++k) {
    const auto c = static_cast<double>(histogram[k]);
    distinct += histogram[k] > 0 ? 1 : 0;
    n += c;
    sum += c * static_cast<double>(k);
    sum2 += c * static_cast<double>(k * k);
  }
  if (distinct < 2 || n < 2) return false;
  const double mean0 = sum / n;
  const double var0 = std::max(sum2 / n - mean0 * mean0 - 1.0 / 12.0, 1e-3);
  // Newton's method on (mean, log sigma) with central-difference derivatives: two parameters,
  // a smooth, unimodal likelihood; backtracking keeps every step a descent.
  double p[2] = {mean0, 0.5 * std::log(var0)};
  auto f = [&](double a, double b) { return quantised_nll(histogram, a, b); };
  constexpr double kH = 1e-4;
  double hessian[2][2] = {};
  for (int iteration = 0; iteration < 100; ++iteration) {
    const double f0 = f(p[0], p[1]);
    double gradient[2];
    for (int i = 0; i < 2; ++i) {
      double up[2] = {p[0], p[1]};
      double down[2] = {p[0], p[1]};
      up[i] += kH;
      down[i] -= kH;
      const double fu = f(up[0], up[1]);
      const double fd = f(down[0], down[1]);
      gradient[i] = (fu - fd) / (2 * kH);
      hessian[i][i] = (fu - 2 * f0 + fd) / (kH * kH);
    }
    hessian[0][1] = hessian[1][0] = (f(p[0] + kH, p[1] + kH) - f(p[0] + kH, p[1] - kH) -
                                     f(p[0] - kH, p[1] + kH) + f(p[0] - kH, p[1] - kH)) /
                                    (4 * kH * kH);
    const double det = hessian[0][0] * hessian[1][1] - hessian[0][1] * hessian[1][0];
    double step[2];
    if (det > 0 && hessian[0][0] > 0) {
      step[0] = -(hessian[1][1] * gradient[0] - hessian[0][1] * gradient[1]) / det;
      step[1] = -(-hessian[1][0] * gradient[0] + hessian[0][0] * gradient[1]) / det;
    } else {
      step[0] = -1e-3 * gradient[0] / std::max(1.0, n * 1e-3);
      step[1] = -1e-3 * gradient[1] / std::max(1.0, n * 1e-3);
    }
    double t = 1.0;
    bool moved = false;
    for (int halving = 0; halving < 30; ++halving, t *= 0.5) {
      const double a = p[0] + t * step[0];
      const double b = p[1] + t * step[1];
      if (f(a, b) <= f0) {
        p[0] = a;
        p[1] = b;
        moved = true;
        break;
      }
    }
    if (!moved || std::abs(step[0]) + std::abs(step[1]) < 1e-10) break;
  }
  const double det = hessian[0][0] * hessian[1][1] - hessian[0][1] * hessian[1][0];
  fit.mean = p[0];
  fit.sigma = std::exp(p[1]);
  if (det > 0) {
    fit.mean_stderr = std::sqrt(std::max(hessian[1][1] / det, 0.0));
    fit.sigma_stderr = fit.sigma * std::sqrt(std::max(hessian[0][0] / det, 0.0));
  }
  return std::isfinite(fit.mean) && std::isfinite(fit.sigma);
}

LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y,
                 const std::vector<double>& w) {
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sw += w[i];
    sx += w[i] * x[i];
    sy += w[i] * y[i];
    sxx += w[i] * x[i] * x[i];
    sxy += w[i] * x[i] * y[i];
  }
  LineFit fit;
  const double det = sw * sxx - sx * sx;
  if (!(det > 0)) return fit;
  fit.b = (sw * sxy - sx * sy) / det;
  fit.a = (sy - fit.b * sx) / sw;
  double chi2 = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double r = y[i] - fit.a - fit.b * x[i];
    chi2 += w[i] * r * r;
  }
  fit.reduced_chi2 = x.size() > 2 ? chi2 / static_cast<double>(x.size() - 2) : 0.0;
  fit.var_a = sxx / det * fit.reduced_chi2;
  fit.var_b = sw / det * fit.reduced_chi2;
  return fit;
}

}  // namespace detail

namespace {

// Too few points make the slope's uncertainty meaningless.
constexpr std::int64_t kMinPtcPoints = 20;
// Sheppard's correction (quantisation adds 1/12 count²) is exact to ~1e-3 relative once the noise
// before rounding is at least 0.6 count; bright enough points are those whose shot noise alone
// reaches that: signal >= 0.36 gain.
constexpr double kMinNoiseCounts2 = 0.36;

}  // namespace

Result<NoiseSection> measure_noise(sim::Device& device, const NoiseOptions& options,
                                   const Progress& progress) {
  FrameTaker taker(device, progress);
  const sim::DeviceInfo& info = taker.info();
  if (options.repeats < 4) {
    return invalid_argument("noise: repeats is " + std::to_string(options.repeats) +
                            ", want >= 4 (a variance needs several frames of one pattern)");
  }
  if (options.dark_frames < 8) {
    return invalid_argument("noise: dark_frames is " + std::to_string(options.dark_frames) +
                            ", want >= 8");
  }
  if (!(options.density > 0.0 && options.density <= 1.0)) {
    return invalid_argument("noise: density is " + std::to_string(options.density) +
                            ", want a value in (0, 1]");
  }
  const std::int64_t n_out = detail::pixels_or(options.n_out, info, 4096);
  if (n_out > info.max_n_out) {
    return out_of_range("noise: n_out " + std::to_string(n_out) + " above device max_n_out " +
                        std::to_string(info.max_n_out));
  }
  const std::int64_t n_in = info.max_n_in;
  const double default_exposure = info.exposure_us > 0 ? info.exposure_us : 1000.0;
  std::vector<double> exposures = options.exposures_us;
  if (exposures.empty()) {
    for (const double factor : {0.25, 0.5, 1.0, 2.0, 4.0, 8.0}) {
      double e = default_exposure * factor;
      if (info.max_exposure_us > 0) e = std::min(e, info.max_exposure_us);
      if (std::find(exposures.begin(), exposures.end(), e) == exposures.end()) {
        exposures.push_back(e);
      }
    }
  }
  for (const double e : exposures) {
    if (!(e > 0.0) || (info.max_exposure_us > 0 && e > info.max_exposure_us)) {
      return out_of_range("noise: exposure " + std::to_string(e) + " us outside (0, " +
                          std::to_string(info.max_exposure_us) + "]");
    }
  }
  const double full = taker.full_scale();

  // Dark frames: every mirror off.
  Result<Counts> dark = taker.take(BitMatrix::Zero(n_in, options.dark_frames), n_out,
                                   default_exposure, "noise: dark frames");
  if (!dark.ok()) return dark.status();
  std::vector<std::int64_t> histogram(static_cast<std::size_t>(full) + 1, 0);
  for (const float v : dark->values.reshaped()) {
    ++histogram[static_cast<std::size_t>(std::clamp(v, 0.0F, static_cast<float>(full)))];
  }
  const Eigen::VectorXd dark_pixel = dark->values.cast<double>().rowwise().mean();
  const double dark_level = dark_pixel.mean();
  double dark_spread = 0.0;
  if (n_out > 1) {
    dark_spread = std::sqrt((dark_pixel.array() - dark_level).square().sum() /
                            static_cast<double>(n_out - 1));
  }
  detail::QuantisedGaussianFit read_fit;
  const bool read_fitted = detail::fit_quantised_gaussian(histogram, read_fit);
  if (!read_fitted) {
    detail::logger()->warn(
        "noise: every dark reading is the same count: read noise is far below one count and "
        "cannot be resolved; reporting 0");
  }

  // Repeated frames of one random pattern per exposure.
  PatternRng rng(options.seed);
  std::vector<double> signal;
  std::vector<double> variance;
  double max_reading = dark->values.maxCoeff();
  std::int64_t saturated_pixels = 0;
  for (const double exposure : exposures) {
    const BitMatrix pattern = rng.bernoulli(n_in, 1, options.density);
    const BitMatrix frames = pattern.replicate(1, options.repeats);
    Result<Counts> counts =
        taker.take(frames, n_out, exposure,
                   "noise: exposure " + std::to_string(std::lround(exposure)) + " us");
    if (!counts.ok()) return counts.status();
    max_reading = std::max<double>(max_reading, counts->values.maxCoeff());
    for (std::int64_t p = 0; p < n_out; ++p) {
      if (counts->saturated.row(p).any()) {
        ++saturated_pixels;
        continue;
      }
      const Eigen::RowVectorXd row = counts->values.row(p).cast<double>();
      const double mean = row.mean();
      // A point is usable away from both clipping ends: variance near full scale is cut short.
      if (mean > 0.8 * full || row.minCoeff() <= 0.0) continue;
      // Successive differences: a slow drift of the medium during the repeats cancels.
      const Eigen::RowVectorXd diff = row.tail(options.repeats - 1) - row.head(options.repeats - 1);
      signal.push_back(mean - dark_pixel(p));
      variance.push_back(diff.squaredNorm() / (2.0 * static_cast<double>(options.repeats - 1)) -
                         1.0 / 12.0);
    }
  }

  // Iteratively reweighted fit of var = read² + signal / gain over the points bright enough for
  // Sheppard's correction; the brightness cut depends on the gain being fitted.
  detail::LineFit line;
  double min_signal = 10.0;
  std::int64_t used = 0;
  for (int pass = 0; pass < 4; ++pass) {
    std::vector<double> x;
    std::vector<double> y;
    std::vector<double> w;
    for (std::size_t i = 0; i < signal.size(); ++i) {
      if (signal[i] < min_signal) continue;
      // Var(variance estimate) ∝ variance²: weight by the model's variance (or the first guess).
      const double model =
          pass == 0 ? signal[i] + 1.0 : std::max(line.a + line.b * signal[i], 1e-6);
      x.push_back(signal[i]);
      y.push_back(variance[i]);
      w.push_back(1.0 / (model * model));
    }
    used = static_cast<std::int64_t>(x.size());
    if (used < kMinPtcPoints) {
      return failed_precondition("noise: only " + std::to_string(used) +
                                 " (pixel, exposure) points are bright and "
                                 "unsaturated enough for the photon-transfer fit, want >= " +
                                 std::to_string(kMinPtcPoints) + " (" +
                                 std::to_string(saturated_pixels) +
                                 " saturated); choose exposures that keep counts between ~" +
                                 std::to_string(static_cast<int>(min_signal)) + " and " +
                                 std::to_string(static_cast<int>(0.8 * full)) + " above dark");
    }
    line = detail::fit_line(x, y, w);
    if (!(line.b > 0)) {
      return failed_precondition("noise: the photon-transfer slope is " + std::to_string(line.b) +
                                 ", want > 0 (variance must grow with the signal; is the light "
                                 "reaching the camera?)");
    }
    min_signal = std::max(2.0, kMinNoiseCounts2 / line.b);
  }

  NoiseSection section;
  section.gain_e_per_count = 1.0 / line.b;
  section.gain_stderr = std::sqrt(line.var_b) / (line.b * line.b);
  section.read_noise_counts = read_fitted ? read_fit.sigma : 0.0;
  section.read_noise_e = section.read_noise_counts * section.gain_e_per_count;
  section.read_noise_stderr = read_fitted
                                  ? std::hypot(read_fit.sigma_stderr * section.gain_e_per_count,
                                               read_fit.sigma * section.gain_stderr)
                                  : 0.0;
  section.read_noise_ptc_e = std::sqrt(std::max(line.a, 0.0)) * section.gain_e_per_count;
  section.dark_level_counts = read_fitted ? read_fit.mean : dark_level;
  section.dark_level_stderr =
      read_fitted ? read_fit.mean_stderr
                  : dark_spread / std::sqrt(static_cast<double>(std::max<std::int64_t>(n_out, 1)));
  section.dark_spread_counts = dark_spread;
  section.saturation_counts = full;  // the ADC clips there; max_reading says if it was reached
  section.saturation_e =
      (section.saturation_counts - section.dark_level_counts) * section.gain_e_per_count;
  section.exposures_us = exposures;
  section.points_used = used;
  section.fit_reduced_chi2 = line.reduced_chi2;
  section.frames = taker.frames();
  section.device_time_s = taker.device_time_s();
  if (max_reading < full) {
    detail::logger()->info(
        "noise: no reading reached full scale {} (max {}); saturation level "
        "is the ADC's range",
        full, max_reading);
  }
  return section;
}

}  // namespace opu::calibration
