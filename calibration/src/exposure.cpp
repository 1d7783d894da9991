// exposure: automatic exposure (docs/design.md §5). See docs/calibration.md, "exposure".
#include <algorithm>
#include <cmath>

#include "calibration/procedures.h"
#include "internal.h"

namespace opu::calibration {
namespace {

// Percentile of `values`, with saturated readings counted as +infinity (a clipped reading is only
// a lower bound). Returns +infinity when the percentile falls among saturated readings.
double percentile_of(const Counts& counts, const Eigen::VectorXd& dark, double percentile) {
  std::vector<double> values;
  values.reserve(static_cast<std::size_t>(counts.values.size()));
  for (std::int64_t b = 0; b < counts.values.cols(); ++b) {
    for (std::int64_t p = 0; p < counts.values.rows(); ++p) {
      values.push_back(counts.saturated(p, b) ? std::numeric_limits<double>::infinity()
                                              : counts.values(p, b) - dark(p));
    }
  }
  const auto k =
      static_cast<std::size_t>(std::clamp(percentile / 100.0 * static_cast<double>(values.size()),
                                          0.0, static_cast<double>(values.size() - 1)));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  return values[k];
}

}  // namespace

Result<ExposureSection> find_exposure(sim::Device& device, const ExposureOptions& options,
                                      const Progress& progress) {
  FrameTaker taker(device, progress);
  const sim::DeviceInfo& info = taker.info();
  if (!(options.percentile > 0.0 && options.percentile < 100.0)) {
    return invalid_argument("exposure: percentile is " + std::to_string(options.percentile) +
                            ", want a value in (0, 100)");
  }
  if (!(options.target_fraction > 0.0 && options.target_fraction < 1.0)) {
    return invalid_argument("exposure: target_fraction is " +
                            std::to_string(options.target_fraction) + ", want a value in (0, 1)");
  }
  if (!(options.density > 0.0 && options.density <= 1.0)) {
    return invalid_argument("exposure: density is " + std::to_string(options.density) +
                            ", want a value in (0, 1]");
  }
  if (options.probe_frames < 1 || options.max_iterations < 1) {
    return invalid_argument("exposure: probe_frames and max_iterations must be >= 1");
  }
  const std::int64_t n_in = options.n_in > 0 ? options.n_in : info.max_n_in;
  const std::int64_t n_out = detail::pixels_or(options.n_out, info, 4096);
  if (n_in > info.max_n_in || n_out > info.max_n_out) {
    return out_of_range("exposure: n_in " + std::to_string(n_in) + " x n_out " +
                        std::to_string(n_out) + " beyond the device's " +
                        std::to_string(info.max_n_in) + " x " + std::to_string(info.max_n_out));
  }
  const double full = taker.full_scale();
  const double max_exposure = info.max_exposure_us > 0 ? info.max_exposure_us : 1e9;
  double exposure = info.exposure_us > 0 ? info.exposure_us : 1000.0;

  Result<Counts> dark_frames =
      taker.take(BitMatrix::Zero(n_in, 8), n_out, exposure, "exposure: dark frames");
  if (!dark_frames.ok()) return dark_frames.status();
  const Eigen::VectorXd dark = dark_frames->values.cast<double>().rowwise().mean();
  const double dark_level = dark.mean();
  const double want = options.target_fraction * (full - dark_level);

  PatternRng rng(options.seed);
  const BitMatrix probes = rng.bernoulli(n_in, options.probe_frames, options.density);
  Result<Counts> last = Status(internal_error("exposure: no probe taken"));
  bool converged = false;
  for (std::int64_t iteration = 0; iteration < options.max_iterations; ++iteration) {
    last = taker.take(probes, n_out, exposure, "exposure: probe");
    if (!last.ok()) return last.status();
    const double value = percentile_of(*last, dark, options.percentile);
    double next = exposure;
    if (std::isinf(value)) {
      next = exposure / 4.0;  // the percentile is clipped: its value is unknown, back off
    } else if (value <= 0.5) {
      next = exposure * 16.0;  // below one count: nothing to scale from yet
    } else {
      next = exposure * want / value;  // counts above dark are linear in the exposure
    }
    next = std::clamp(next, 1e-3, max_exposure);
    detail::logger()->debug("exposure: {:.1f} us -> p{} = {:.1f} counts, next {:.1f} us", exposure,
                            options.percentile, value, next);
    if (!std::isinf(value) && std::abs(next / exposure - 1.0) < 0.02) {
      converged = true;
      break;
    }
    if (next == exposure) break;  // pinned at a limit
    exposure = next;
  }
  if (!converged) {
    // One more probe at the final exposure, so the reported figures describe it.
    last = taker.take(probes, n_out, exposure, "exposure: final probe");
    if (!last.ok()) return last.status();
  }
  const double value = percentile_of(*last, dark, options.percentile);
  const double saturated_fraction =
      static_cast<double>(last->saturated.count()) / static_cast<double>(last->saturated.size());
  if (std::isinf(value)) {
    return failed_precondition("exposure: even at " + std::to_string(exposure) + " us the " +
                               std::to_string(options.percentile) + "th percentile is saturated (" +
                               std::to_string(100.0 * saturated_fraction) +
                               "% of readings clipped); lower the density or the percentile");
  }
  if (value <= 0.5) {
    return failed_precondition("exposure: at the longest exposure " + std::to_string(exposure) +
                               " us the percentile is " + std::to_string(value) +
                               " counts above dark; is light reaching the camera?");
  }

  ExposureSection section;
  section.exposure_us = exposure;
  section.percentile = options.percentile;
  section.target_fraction = options.target_fraction;
  section.achieved_fraction = value / (full - dark_level);
  section.saturated_fraction = saturated_fraction;
  section.density = options.density;
  section.n_in = n_in;
  section.n_out = n_out;
  section.dark_level_counts = dark_level;
  // Pixels too dark to carry signal (dead, or outside the speckle) and pixels that are always
  // clipped (hot): a consumer ignores them.
  const Eigen::VectorXd mean_signal = last->values.cast<double>().rowwise().mean() - dark;
  std::vector<double> sorted(mean_signal.data(), mean_signal.data() + mean_signal.size());
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2),
                   sorted.end());
  const double median = sorted[sorted.size() / 2];
  for (std::int64_t p = 0; p < n_out; ++p) {
    if (mean_signal(p) < options.dark_pixel_fraction * median || last->saturated.row(p).all()) {
      section.masked_pixels.push_back(p);
    }
  }
  section.frames = taker.frames();
  section.device_time_s = taker.device_time_s();
  return section;
}

}  // namespace opu::calibration
