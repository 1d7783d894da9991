#include "trainer/projection_quality.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <utility>

#include "opu_sim/packing.h"
#include "trainer/random.h"

namespace opu::trainer {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

double ratio_or_infinity(double signal, double noise) {
  return noise > 0.0 ? signal / noise : kInfinity;
}

// Mean and variance (about the mean) of the live rows of a matrix.
std::pair<double, double> live_moments(const Eigen::MatrixXf& m, const std::vector<bool>& live) {
  double sum = 0.0;
  double sum_sq = 0.0;
  double n = 0.0;
  for (Eigen::Index j = 0; j < m.rows(); ++j) {
    if (!live[static_cast<std::size_t>(j)]) continue;
    for (Eigen::Index s = 0; s < m.cols(); ++s) {
      const double x = m(j, s);
      sum += x;
      sum_sq += x * x;
      n += 1.0;
    }
  }
  if (n == 0.0) return {0.0, 0.0};
  const double mean = sum / n;
  return {mean, sum_sq / n - mean * mean};
}

// The frames one holographic call takes, over block columns: dark, reference, then x + r and x
// for every code that lights something (the device skips the others: their projection is 0).
struct HolographyFrames {
  std::vector<std::uint8_t> packed;
  std::int64_t frames = 0;
  std::vector<std::vector<std::int64_t>> codes_of_sample;  // active code indices per sample
};

HolographyFrames holography_frames(const sim::BinaryCode& code,
                                   const sim::HolographyLayout& layout) {
  const std::int64_t columns = sim::block_columns(layout);
  const std::int64_t code_bytes = sim::packed_bytes(code.n_features);
  Eigen::Matrix<std::uint8_t, -1, -1> bits = Eigen::Matrix<std::uint8_t, -1, -1>::Zero(
      columns, 2 + 2 * code.batch * code.codes_per_sample);
  HolographyFrames frames;
  frames.codes_of_sample.resize(static_cast<std::size_t>(code.batch));
  bits(layout.n_features, 1) = 1;  // frame 0 dark, frame 1 reference
  std::int64_t next = 2;
  for (std::int64_t s = 0; s < code.batch; ++s) {
    for (std::int64_t c = 0; c < code.codes_per_sample; ++c) {
      const std::uint8_t* pattern =
          code.packed.data() + (s * code.codes_per_sample + c) * code_bytes;
      const std::int64_t ones =
          sim::count_ones({pattern, static_cast<std::size_t>(code_bytes)}, code.n_features);
      if (code.weights(c, s) == 0.0F || ones == 0) continue;
      frames.codes_of_sample[static_cast<std::size_t>(s)].push_back(c);
      for (std::int64_t i = 0; i < code.n_features; ++i) {
        const std::uint8_t on = sim::frame_bit(pattern, i) ? 1 : 0;
        bits(i, next) = on;
        bits(i, next + 1) = on;
      }
      bits(layout.n_features, next) = 1;  // x + r, then x
      next += 2;
    }
  }
  frames.frames = next;
  frames.packed = sim::pack_frames(bits.leftCols(next));
  return frames;
}

// Mean camera counts of the frames over `repeats` captures (n_out x frames), in calls of at most
// the device's max_batch frames.
Result<Eigen::MatrixXd> mean_levels(sim::Device& device, const HolographyFrames& frames,
                                    const sim::HolographyLayout& layout, Eigen::Index n_out,
                                    double exposure_us, int repeats) {
  const sim::FrameCapture capture = sim::device_frame_capture(device);
  const std::int64_t frame_bytes = sim::packed_bytes(sim::block_columns(layout));
  const std::int64_t chunk = std::max<std::int64_t>(1, device.info().max_batch);
  Eigen::MatrixXd sum = Eigen::MatrixXd::Zero(n_out, frames.frames);
  for (int r = 0; r < repeats; ++r) {
    for (std::int64_t first = 0; first < frames.frames; first += chunk) {
      const std::int64_t count = std::min(chunk, frames.frames - first);
      const std::span<const std::uint8_t> patterns(frames.packed.data() + first * frame_bytes,
                                                   static_cast<std::size_t>(count * frame_bytes));
      Result<sim::CapturedFrames> captured = capture(patterns, count, n_out, exposure_us, layout);
      if (!captured.ok()) return captured.status().with_context("predict_snr: capturing levels");
      sum.middleCols(first, count) += captured->counts.cast<double>();
    }
  }
  return Eigen::MatrixXd(sum / static_cast<double>(repeats));
}

// The three noise sources of one reading, in counts².
struct ReadingVariance {
  double shot = 0.0;
  double read = 0.0;
  double quantisation = 0.0;
};

ReadingVariance reading_variance(const CameraNoiseModel& camera, double level) {
  return {camera.shot_variance(level), camera.read_variance(), camera.quantisation_variance()};
}

}  // namespace

Projector device_projector(sim::Device& device, Eigen::Index n_out,
                           const sim::LinearOptions& options) {
  return [&device, n_out, options](const Eigen::MatrixXf& values) -> Result<sim::Projections> {
    sim::LinearRequest request;
    request.n_in = values.rows();
    request.n_out = n_out;
    request.batch = values.cols();
    request.values = std::span<const float>(values.data(), static_cast<std::size_t>(values.size()));
    request.options = options;
    return device.linear_transform(request);
  };
}

Projector feedback_projector(FeedbackSource& source) {
  return [&source](const Eigen::MatrixXf& values) -> Result<sim::Projections> {
    sim::Projections projections;
    OPU_RETURN_IF_ERROR(source.project(values, projections.values));
    return projections;
  };
}

Eigen::MatrixXf error_like_vectors(Eigen::Index n_classes, Eigen::Index batch, std::uint64_t seed) {
  const CounterRng logits(seed, "projection_quality/logits");
  const CounterRng labels(seed, "projection_quality/labels");
  Eigen::MatrixXf errors(n_classes, batch);
  for (Eigen::Index s = 0; s < batch; ++s) {
    Eigen::VectorXf z(n_classes);
    for (Eigen::Index i = 0; i < n_classes; ++i) {
      z(i) = 2.0F * logits.normal(static_cast<std::uint64_t>(s * n_classes + i));
    }
    const Eigen::VectorXf e = (z.array() - z.maxCoeff()).exp().matrix();
    errors.col(s) = e / e.sum();
    const auto label = static_cast<Eigen::Index>(
        labels.below(static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(n_classes)));
    errors(label, s) -= 1.0F;
  }
  return errors;
}

Result<SnrMeasurement> measure_snr(const Projector& project, const Eigen::MatrixXf& values,
                                   int repeats) {
  if (repeats < 2) {
    return invalid_argument("measure_snr: repeats is " + std::to_string(repeats) +
                            ", want >= 2 (noise is the across-repeat variance)");
  }
  SnrMeasurement m;
  m.repeats = repeats;
  for (int k = 0; k < repeats; ++k) {
    Result<sim::Projections> projected = project(values);
    if (!projected.ok()) return projected.status().with_context("measure_snr");
    if (k == 0) m.exposure_us = projected->info.exposure_us;
    m.projections.push_back(std::move(projected->values));
  }
  const Eigen::Index rows = m.projections.front().rows();
  const Eigen::Index cols = m.projections.front().cols();
  m.live.assign(static_cast<std::size_t>(rows), true);
  m.mean = Eigen::MatrixXf::Zero(rows, cols);
  for (const Eigen::MatrixXf& p : m.projections) {
    m.mean += p / static_cast<float>(repeats);
    for (Eigen::Index j = 0; j < rows; ++j) {
      if (p.row(j).cwiseAbs().maxCoeff() == 0.0F) m.live[static_cast<std::size_t>(j)] = false;
    }
  }
  double noise_sum = 0.0;
  for (Eigen::Index j = 0; j < rows; ++j) {
    if (!m.live[static_cast<std::size_t>(j)]) continue;
    ++m.live_pixels;
    for (const Eigen::MatrixXf& p : m.projections) {
      noise_sum += (p.row(j) - m.mean.row(j)).cast<double>().squaredNorm();
    }
  }
  m.elements = m.live_pixels * cols;
  if (m.elements == 0) {
    return failed_precondition("measure_snr: every pixel was masked or zero, nothing to measure");
  }
  m.noise_variance = noise_sum / static_cast<double>(m.elements * (repeats - 1));
  m.signal_variance = live_moments(m.mean, m.live).second - m.noise_variance / repeats;
  m.snr = ratio_or_infinity(m.signal_variance, m.noise_variance);
  return m;
}

CameraNoiseModel CameraNoiseModel::from_config(const sim::CameraConfig& camera) {
  CameraNoiseModel model;
  model.gain_e_per_count = camera.gain_e_per_count;
  model.read_noise_e = camera.read_noise_e;
  model.shot_noise = camera.shot_noise && !camera.ideal;
  model.read_noise = camera.read_noise && !camera.ideal;
  model.quantised = !camera.ideal;
  return model;
}

double CameraNoiseModel::shot_variance(double level) const {
  // Poisson: λ electrons have variance λ, i.e. level · gain electrons -> level / gain counts².
  return shot_noise ? std::max(level, 0.0) / gain_e_per_count : 0.0;
}

double CameraNoiseModel::read_variance() const {
  return read_noise ? (read_noise_e / gain_e_per_count) * (read_noise_e / gain_e_per_count) : 0.0;
}

Result<SnrPrediction> predict_snr(sim::Device& device, const Eigen::MatrixXf& values,
                                  const SnrMeasurement& measured, const sim::LinearOptions& options,
                                  const sim::HolographyConfig& holography,
                                  const CameraNoiseModel& camera, int level_repeats) {
  const sim::DeviceInfo info = device.info();
  Result<sim::HolographyLayout> layout =
      sim::HolographyLayout::fit(values.rows(), info.max_n_in, holography.reference_blocks);
  if (!layout.ok()) return layout.status().with_context("predict_snr");
  Result<sim::BinaryCode> code = sim::encode(values, options);
  if (!code.ok()) return code.status().with_context("predict_snr");
  const HolographyFrames frames = holography_frames(*code, *layout);
  const Eigen::Index n_out = measured.mean.rows();
  Result<Eigen::MatrixXd> levels =
      mean_levels(device, frames, *layout, n_out, measured.exposure_us, std::max(1, level_repeats));
  if (!levels.ok()) return levels.status();
  const double dark = levels->col(0).mean();
  const Eigen::VectorXd reference = levels->col(1).array() - dark;
  const double scale =
      std::sqrt(2.0 * holography.reference_blocks / std::max(reference.mean(), 1e-30));
  const double reference_repeats = std::max(1, holography.reference_repeats);

  SnrPrediction p;
  Eigen::MatrixXf signal = Eigen::MatrixXf::Zero(n_out, values.cols());
  for (Eigen::Index j = 0; j < n_out; ++j) {
    const double r = reference(j);
    if (!measured.live[static_cast<std::size_t>(j)] || !(r > 0.0)) continue;
    const ReadingVariance v_reference = reading_variance(camera, r);
    const double norm = scale * scale / (4.0 * r);
    std::int64_t frame = 2;
    for (Eigen::Index s = 0; s < values.cols(); ++s) {
      ReadingVariance code_terms;     // Σ w² (v(A) + v(X))
      double reference_weight = 0.0;  // Σ w (1 + ℓ / sqrt R)
      double projection = 0.0;        // Σ w ℓ
      for (std::int64_t c : frames.codes_of_sample[static_cast<std::size_t>(s)]) {
        const double w = code->weights(c, s);
        const double a = (*levels)(j, frame) - dark;
        const double x = (*levels)(j, frame + 1) - dark;
        frame += 2;
        const double ell = (a - x - r) / (2.0 * std::sqrt(r));
        const ReadingVariance va = reading_variance(camera, a);
        const ReadingVariance vx = reading_variance(camera, x);
        code_terms.shot += w * w * (va.shot + vx.shot);
        code_terms.read += w * w * (va.read + vx.read);
        code_terms.quantisation += w * w * (va.quantisation + vx.quantisation);
        reference_weight += w * (1.0 + ell / std::sqrt(r));
        projection += w * ell;
      }
      const double d2 = reference_weight * reference_weight / reference_repeats;
      p.shot_variance += norm * (code_terms.shot + d2 * v_reference.shot);
      p.read_variance += norm * (code_terms.read + d2 * v_reference.read);
      p.quantisation_variance += norm * (code_terms.quantisation + d2 * v_reference.quantisation);
      signal(j, s) = static_cast<float>(scale * projection);
      ++p.elements;
    }
  }
  if (p.elements == 0) return failed_precondition("predict_snr: no live pixel to predict");
  const auto n = static_cast<double>(p.elements);
  p.shot_variance /= n;
  p.read_variance /= n;
  p.quantisation_variance /= n;
  p.noise_variance = p.shot_variance + p.read_variance + p.quantisation_variance;
  std::vector<bool> predicted_live = measured.live;
  for (Eigen::Index j = 0; j < n_out; ++j) {
    if (!(reference(j) > 0.0)) predicted_live[static_cast<std::size_t>(j)] = false;
  }
  p.signal_variance = live_moments(signal, predicted_live).second;
  p.snr = ratio_or_infinity(p.signal_variance, p.noise_variance);
  return p;
}

Result<ProjectionComparison> compare_projections(const SnrMeasurement& measured,
                                                 const Eigen::MatrixXf& reference) {
  if (reference.rows() != measured.mean.rows() || reference.cols() != measured.mean.cols()) {
    return invalid_argument(
        "compare_projections: reference is " + std::to_string(reference.rows()) + "x" +
        std::to_string(reference.cols()) + ", want the projections' " +
        std::to_string(measured.mean.rows()) + "x" + std::to_string(measured.mean.cols()));
  }
  ProjectionComparison c;
  double ref_sq = 0.0, error_dot_ref = 0.0, error_sq = 0.0, total_sq = 0.0;
  double sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0;
  const Eigen::MatrixXf& first = measured.projections.front();
  for (Eigen::Index j = 0; j < reference.rows(); ++j) {
    if (!measured.live[static_cast<std::size_t>(j)]) continue;
    if (reference.row(j).cwiseAbs().maxCoeff() == 0.0F) continue;  // masked in the reference
    for (Eigen::Index s = 0; s < reference.cols(); ++s) {
      const double ref = reference(j, s);
      const double error = measured.mean(j, s) - ref;
      ref_sq += ref * ref;
      error_dot_ref += error * ref;
      error_sq += error * error;
      for (const Eigen::MatrixXf& p : measured.projections) {
        total_sq += (p(j, s) - ref) * (p(j, s) - ref);
      }
      const double x = first(j, s);
      sx += x, sy += ref, sxx += x * x, syy += ref * ref, sxy += x * ref;
      ++c.elements;
    }
  }
  if (c.elements == 0 || ref_sq == 0.0) {
    return invalid_argument("compare_projections: no pixel is live in both projections");
  }
  const auto n = static_cast<double>(c.elements);
  const double ref_variance = syy / n - (sy / n) * (sy / n);
  c.correlation =
      (sxy / n - sx * sy / (n * n)) / std::sqrt((sxx / n - sx * sx / (n * n)) * ref_variance);
  c.relative_bias = error_dot_ref / ref_sq;
  c.relative_error = std::sqrt(error_sq / ref_sq);
  c.relative_noise = std::sqrt(measured.noise_variance / ref_variance);
  c.snr_total = ratio_or_infinity(ref_variance, total_sq / (n * measured.repeats));
  return c;
}

}  // namespace opu::trainer
