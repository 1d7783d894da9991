// verify: held-out check of a recovered matrix (docs/design.md §5). See docs/calibration.md.
#include <algorithm>
#include <cmath>

#include "calibration/procedures.h"
#include "internal.h"
#include "opu_sim/sim_device.h"

namespace opu::calibration {

double aligned_relative_error(const Eigen::Ref<const Eigen::MatrixXcf>& estimate,
                              const Eigen::Ref<const Eigen::MatrixXcf>& truth,
                              double* conjugated_fraction, double* best_scale) {
  OPU_CHECK(estimate.rows() == truth.rows() && estimate.cols() == truth.cols(),
            "aligned_relative_error: shapes differ");
  double error2 = 0.0;
  double overlap = 0.0;
  std::int64_t conjugated = 0;
  for (std::int64_t i = 0; i < truth.rows(); ++i) {
    const Eigen::VectorXcd e = estimate.row(i).transpose().cast<std::complex<double>>();
    const Eigen::VectorXcd t = truth.row(i).transpose().cast<std::complex<double>>();
    const double norms = e.squaredNorm() + t.squaredNorm();
    // min over φ of ||e^{iφ} e - t||² = |e|² + |t|² - 2 |eᴴ t|; conjugated: eᴴ -> eᵀ.
    const double direct = norms - 2.0 * std::abs(e.dot(t));
    const double flipped = norms - 2.0 * std::abs(e.conjugate().dot(t));
    if (flipped < direct) ++conjugated;
    overlap += std::max(std::abs(e.dot(t)), std::abs(e.conjugate().dot(t)));
    error2 += std::max(std::min(direct, flipped), 0.0);
  }
  if (conjugated_fraction != nullptr) {
    *conjugated_fraction = truth.rows() > 0
                               ? static_cast<double>(conjugated) / static_cast<double>(truth.rows())
                               : 0.0;
  }
  if (best_scale != nullptr) {
    const double estimate_norm2 = estimate.cast<std::complex<double>>().squaredNorm();
    *best_scale = estimate_norm2 > 0 ? overlap / estimate_norm2 : 0.0;
  }
  const double scale = truth.cast<std::complex<double>>().squaredNorm();
  return scale > 0 ? std::sqrt(error2 / scale) : 0.0;
}

Result<VerifySection> verify_tm(sim::Device& device, const TmSection& tm,
                                const VerifyOptions& options, const Progress& progress) {
  FrameTaker taker(device, progress);
  const sim::DeviceInfo& info = taker.info();
  if (options.held_out < 2) {
    return invalid_argument("verify: held_out is " + std::to_string(options.held_out) +
                            ", want >= 2");
  }
  if (!(options.density > 0.0 && options.density <= 1.0)) {
    return invalid_argument("verify: density is " + std::to_string(options.density) +
                            ", want a value in (0, 1]");
  }
  if (tm.column_offset + tm.n_in > info.max_n_in || tm.n_out > info.max_n_out) {
    return out_of_range(
        "verify: the calibration covers mirrors [" + std::to_string(tm.column_offset) + ", " +
        std::to_string(tm.column_offset + tm.n_in) + ") x " + std::to_string(tm.n_out) +
        " pixels, beyond this device's " + std::to_string(info.max_n_in) + " x " +
        std::to_string(info.max_n_out) + " (another device?)");
  }
  if (tm.matrix.rows() != tm.n_out || tm.matrix.cols() != tm.n_in ||
      tm.dark_counts.size() != tm.n_out) {
    return invalid_argument("verify: tm section is inconsistent (matrix " +
                            std::to_string(tm.matrix.rows()) + " x " +
                            std::to_string(tm.matrix.cols()) + ", want n_out x n_in)");
  }
  const std::int64_t mirrors = tm.column_offset + tm.n_in;
  PatternRng rng(options.seed);
  const BitMatrix inputs = rng.bernoulli(tm.n_in, options.held_out, options.density);
  BitMatrix frames = BitMatrix::Zero(mirrors, options.held_out);
  frames.bottomRows(tm.n_in) = inputs;
  Result<Counts> measured = taker.take(frames, tm.n_out, tm.exposure_us, "verify: held-out frames");
  if (!measured.ok()) return measured.status();

  const double full = taker.full_scale();
  const Eigen::MatrixXcf x = inputs.cast<float>().cast<std::complex<float>>();
  const Eigen::MatrixXcf fields = tm.matrix * x;  // n_out x held_out
  Eigen::MatrixXf predicted = fields.cwiseAbs2();
  predicted.colwise() += tm.dark_counts;
  predicted = predicted.cwiseMin(static_cast<float>(full));
  const Eigen::ArrayXd measured_flat = measured->values.cast<double>().reshaped().array();
  VerifySection section;
  section.correlation = pearson(predicted.cast<double>().reshaped().array(), measured_flat);

  if (auto* sim_device = dynamic_cast<sim::SimDevice*>(&device); sim_device != nullptr) {
    // The simulator can reveal its medium: compare with the truth at the time of these frames, in
    // the same units (sqrt(counts at the exposure)).
    const sim::CameraConfig& camera = sim_device->config().camera;
    const double time_s = static_cast<double>(measured->device_time_start_ns) * 1e-9;
    const auto scale = static_cast<float>(std::sqrt(camera.counts_per_intensity(tm.exposure_us)));
    Eigen::MatrixXcf truth(tm.n_out, tm.n_in);
    for (std::int64_t i = 0; i < tm.n_out; ++i) {
      for (std::int64_t j = 0; j < tm.n_in; ++j) {
        truth(i, j) = scale * sim_device->matrix_entry(i, tm.column_offset + j, time_s);
      }
    }
    Eigen::MatrixXf noiseless = (truth * x).cwiseAbs2();
    noiseless.array() += static_cast<float>(camera.dark_offset_counts);
    noiseless = noiseless.cwiseMin(static_cast<float>(full));
    section.correlation_ceiling =
        pearson(noiseless.cast<double>().reshaped().array(), measured_flat);
    double conjugated = 0.0;
    double best_scale = 0.0;
    section.relative_error = aligned_relative_error(tm.matrix, truth, &conjugated, &best_scale);
    section.conjugated_rows = conjugated;
    section.truth_scale = best_scale;
    const Eigen::MatrixXcf rescaled = static_cast<float>(best_scale) * tm.matrix;
    section.relative_error_rescaled = aligned_relative_error(rescaled, truth);
  }
  section.held_out = options.held_out;
  section.density = options.density;
  section.seed = options.seed;
  section.frames = taker.frames();
  section.device_time_s = taker.device_time_s();
  return section;
}

}  // namespace opu::calibration
