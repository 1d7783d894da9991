// drift: decorrelation of the medium over device time (docs/design.md §5). See docs/calibration.md.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "calibration/procedures.h"
#include "internal.h"

namespace opu::calibration {
namespace {

// First lag where `curve` falls to `level`, linearly interpolated; 0 when it never does.
double crossing(const std::vector<double>& lag, const std::vector<double>& curve, double level) {
  for (std::size_t i = 1; i < curve.size(); ++i) {
    if (curve[i] <= level) {
      const double t = (curve[i - 1] - level) / std::max(curve[i - 1] - curve[i], 1e-12);
      return lag[i - 1] + std::clamp(t, 0.0, 1.0) * (lag[i] - lag[i - 1]);
    }
  }
  return 0.0;
}

}  // namespace

double sim_drift_correlation(double lag_over_period) {
  // R(t) = cos θ R_k + sin θ R_{k+1}, θ = (π/2)(t/T - k). Two fields of one input correlate with
  // coefficient cos Δθ inside a period, sin θ0 sin(θ0 + Δθ) across one boundary, 0 beyond; the
  // intensity (speckle) correlation is the square. Averaged over a uniform start θ0.
  const double delta = 0.5 * std::numbers::pi * lag_over_period;
  if (delta >= std::numbers::pi) return 0.0;
  constexpr int kSteps = 4096;
  double sum = 0.0;
  for (int i = 0; i < kSteps; ++i) {
    const double theta0 = (i + 0.5) / kSteps * 0.5 * std::numbers::pi;
    double field = 0.0;
    if (theta0 + delta < 0.5 * std::numbers::pi) {
      field = std::cos(delta);
    } else if (theta0 + delta < std::numbers::pi) {
      field = std::sin(theta0) * std::sin(theta0 + delta);
    }
    sum += field * field;
  }
  return sum / kSteps;
}

double sim_drift_lag_at(double level) {
  double low = 0.0;
  double high = 2.0;
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (low + high);
    (sim_drift_correlation(mid) > level ? low : high) = mid;
  }
  return 0.5 * (low + high);
}

Result<DriftSection> measure_drift(sim::Device& device, const DriftOptions& options,
                                   const Progress& progress) {
  FrameTaker taker(device, {});
  const sim::DeviceInfo& info = taker.info();
  if (!(options.interval_s > 0.0) || !(options.duration_s >= 4.0 * options.interval_s)) {
    return invalid_argument("drift: interval_s " + std::to_string(options.interval_s) +
                            " and duration_s " + std::to_string(options.duration_s) +
                            ", want interval_s > 0 and duration_s >= 4 x interval_s");
  }
  if (!(options.threshold > 0.0 && options.threshold < 1.0)) {
    return invalid_argument("drift: threshold is " + std::to_string(options.threshold) +
                            ", want a value in (0, 1)");
  }
  const std::int64_t n_in = options.n_in > 0 ? options.n_in : info.max_n_in;
  const std::int64_t n_out = detail::pixels_or(options.n_out, info, 1024);
  if (n_in > info.max_n_in || n_out > info.max_n_out) {
    return out_of_range("drift: n_in " + std::to_string(n_in) + " x n_out " +
                        std::to_string(n_out) + " beyond the device's " +
                        std::to_string(info.max_n_in) + " x " + std::to_string(info.max_n_out));
  }
  if (n_out < 16) {
    return invalid_argument("drift: n_out is " + std::to_string(n_out) +
                            ", want >= 16 pixels for a speckle correlation");
  }
  const auto samples =
      static_cast<std::int64_t>(std::floor(options.duration_s / options.interval_s)) + 1;

  Result<Counts> dark =
      taker.take(BitMatrix::Zero(n_in, 8), n_out, options.exposure_us, "drift: dark frames");
  if (!dark.ok()) return dark.status();
  const Eigen::VectorXf dark_level = dark->values.rowwise().mean();
  PatternRng rng(options.seed);
  const BitMatrix reference = rng.bernoulli(n_in, 1, options.density).replicate(1, 2);

  Eigen::MatrixXd first(n_out, samples);
  Eigen::MatrixXd second(n_out, samples);
  std::vector<double> time_s(static_cast<std::size_t>(samples));
  const auto interval_ns = static_cast<std::int64_t>(std::llround(options.interval_s * 1e9));
  std::int64_t start_ns = 0;
  double frame_ns = info.frametime_us > 0 ? info.frametime_us * 1e3 : 5e5;
  for (std::int64_t s = 0; s < samples; ++s) {
    if (s > 0) {
      // Advance the device clock to this sample's time with dark frames read on one pixel: the
      // only way to let device time pass through the Device interface.
      const std::int64_t target = start_ns + s * interval_ns;
      const std::int64_t gap = target - taker.clock_ns();
      if (gap > 0) {
        const auto filler =
            static_cast<std::int64_t>(std::ceil(static_cast<double>(gap) / frame_ns));
        Result<Counts> idle =
            taker.take(BitMatrix::Zero(n_in, filler), 1, options.exposure_us, "drift: waiting");
        if (!idle.ok()) return idle.status();
        frame_ns = static_cast<double>(idle->device_time_end_ns - idle->device_time_start_ns) /
                   static_cast<double>(filler);
      }
    }
    Result<Counts> pair = taker.take(reference, n_out, options.exposure_us, "drift: reference");
    if (!pair.ok()) return pair.status();
    if (s == 0) start_ns = pair->device_time_start_ns;
    time_s[static_cast<std::size_t>(s)] =
        static_cast<double>(pair->device_time_start_ns - start_ns) * 1e-9;
    first.col(s) = (pair->values.col(0) - dark_level).cast<double>();
    second.col(s) = (pair->values.col(1) - dark_level).cast<double>();
    if (progress) progress("drift: samples", s + 1, samples);
  }

  // Standardise each frame over pixels; then correlations are inner products.
  auto standardise = [](Eigen::MatrixXd& m) {
    for (std::int64_t s = 0; s < m.cols(); ++s) {
      m.col(s).array() -= m.col(s).mean();
      const double norm = m.col(s).norm();
      if (norm > 0) m.col(s) /= norm;
    }
  };
  standardise(first);
  standardise(second);
  // Back-to-back frames differ only by camera noise: their correlation is the noise ceiling, by
  // which every correlation is normalised (so the curve starts at 1 whatever the camera).
  const Eigen::ArrayXd ceiling = (first.array() * second.array()).colwise().sum().transpose();
  const double noise_ceiling = ceiling.mean();
  if (!(noise_ceiling > 0.05)) {
    return failed_precondition("drift: back-to-back reference frames correlate only " +
                               std::to_string(noise_ceiling) +
                               ": no speckle signal above the noise (exposure, density?)");
  }
  const Eigen::MatrixXd cross = first.transpose() * second;  // samples x samples
  DriftSection section;
  section.lag_s.push_back(0.0);
  section.correlation.push_back(1.0);
  for (std::int64_t lag = 1; lag < samples; ++lag) {
    double sum = 0.0;
    double lag_sum = 0.0;
    for (std::int64_t s = 0; s + lag < samples; ++s) {
      sum += cross(s, s + lag) / std::sqrt(std::max(ceiling(s) * ceiling(s + lag), 1e-12));
      lag_sum += time_s[static_cast<std::size_t>(s + lag)] - time_s[static_cast<std::size_t>(s)];
    }
    const auto count = static_cast<double>(samples - lag);
    section.lag_s.push_back(lag_sum / count);
    section.correlation.push_back(sum / count);
  }
  section.decorrelation_time_s = crossing(section.lag_s, section.correlation, 0.5);
  section.threshold = options.threshold;
  section.recalibrate_after_s = crossing(section.lag_s, section.correlation, options.threshold);
  section.noise_ceiling = noise_ceiling;
  section.interval_s = options.interval_s;
  section.duration_s = options.duration_s;
  section.frames = taker.frames();
  section.device_time_s = taker.device_time_s();
  if (section.decorrelation_time_s == 0.0) {
    detail::logger()->warn(
        "drift: the correlation stayed above 1/2 over {} s of device time "
        "(lowest {:.3f}); the decorrelation time is longer than that",
        options.duration_s,
        *std::min_element(section.correlation.begin(), section.correlation.end()));
  }
  return section;
}

}  // namespace opu::calibration
