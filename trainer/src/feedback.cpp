#include "trainer/feedback.h"

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "trainer/random.h"

namespace opu::trainer {

Status FeedbackSource::project(const Eigen::Ref<const Eigen::MatrixXf>& errors,
                               Eigen::MatrixXf& out) {
  if (errors.rows() != n_in_) {
    return invalid_argument("feedback: errors have " + std::to_string(errors.rows()) +
                            " rows, want the model's output size " + std::to_string(n_in_));
  }
  if (out.rows() != n_out_ || out.cols() != errors.cols()) out.resize(n_out_, errors.cols());
  OPU_RETURN_IF_ERROR(do_project(errors, out));
  ++cost_.calls;
  return {};
}

DigitalFeedback::DigitalFeedback(Eigen::Index n_in, Eigen::Index n_out, std::uint64_t seed,
                                 FeedbackDistribution distribution, double snr)
    : FeedbackSource(n_in, n_out),
      distribution_(distribution),
      matrix_(n_out, n_in),
      snr_(snr),
      noise_key_(derive_seed(seed, "feedback/noise")) {
  OPU_CHECK(snr > 0.0, "DigitalFeedback: snr " + std::to_string(snr) + ", want > 0");
  const CounterRng rng(seed, "feedback/B");
  for (Eigen::Index i = 0; i < matrix_.size(); ++i) {
    const auto index = static_cast<std::uint64_t>(i);
    matrix_.data()[i] = distribution == FeedbackDistribution::kUniform
                            ? rng.uniform(index, -1.0F, 1.0F)
                            : rng.normal(index);
  }
}

double DigitalFeedback::entry_std() const {
  return distribution_ == FeedbackDistribution::kUniform ? 0.57735026918962576 : 1.0;
}

std::string DigitalFeedback::describe() const {
  std::string s =
      distribution_ == FeedbackDistribution::kUniform ? "digital uniform" : "digital gaussian";
  if (std::isfinite(snr_)) s += " + noise snr=" + std::to_string(snr_);
  return s;
}

Status DigitalFeedback::do_project(const Eigen::Ref<const Eigen::MatrixXf>& errors,
                                   Eigen::MatrixXf& out) {
  out.noalias() = matrix_ * errors;
  if (std::isfinite(snr_)) add_noise(out);
  return {};
}

void DigitalFeedback::add_noise(Eigen::MatrixXf& out) const {
  // One stream per call (the call counter is the stream's index), one draw per element: repeated
  // projections of the same errors get independent noise, and a run is reproducible.
  const CounterRng rng(noise_key_ ^ mix64(static_cast<std::uint64_t>(cost_.calls)));
  for (Eigen::Index s = 0; s < out.cols(); ++s) {
    const double power = out.col(s).squaredNorm() / static_cast<double>(out.rows());
    const auto sigma = static_cast<float>(std::sqrt(power / snr_));
    if (sigma == 0.0F) continue;
    for (Eigen::Index j = 0; j < out.rows(); ++j) {
      out(j, s) += sigma * rng.normal(static_cast<std::uint64_t>(s * out.rows() + j));
    }
  }
}

sim::LinearOptions recommended_linear_options() {
  sim::LinearOptions options;
  options.encoding = sim::Encoding::kStochastic;
  options.bitplanes = 2;
  options.share_frames = true;
  options.repeats = 4;
  options.reference_repeats = 256;
  return options;
}

DeviceFeedback::DeviceFeedback(sim::Device& device, Eigen::Index n_in, Eigen::Index n_out,
                               sim::LinearOptions options)
    : FeedbackSource(n_in, n_out),
      device_(device),
      options_(options),
      model_(device.info().model) {}

std::string DeviceFeedback::describe() const {
  std::string s = "device " + model_ + " " + std::string(sim::encoding_name(options_.encoding));
  if (options_.encoding == sim::Encoding::kTernary) {
    s += " threshold=" + std::to_string(options_.threshold);
  } else {
    s += " bitplanes=" + std::to_string(options_.bitplanes);
  }
  if (options_.share_frames) s += " shared-frames";
  if (options_.repeats > 1) s += " repeats=" + std::to_string(options_.repeats);
  if (options_.reference_repeats > 0) {
    s += " reference_repeats=" + std::to_string(options_.reference_repeats);
  }
  if (options_.reference_max_age_s > 0.0) {
    s += " reference_max_age=" + std::to_string(options_.reference_max_age_s) + "s";
  }
  return s;
}

Status DeviceFeedback::do_project(const Eigen::Ref<const Eigen::MatrixXf>& errors,
                                  Eigen::MatrixXf& out) {
  // Only the non-zero columns travel: B·0 = 0 needs no frames.
  std::vector<Eigen::Index> live;
  live.reserve(static_cast<std::size_t>(errors.cols()));
  for (Eigen::Index c = 0; c < errors.cols(); ++c) {
    if (errors.col(c).cwiseAbs().maxCoeff() > 0.0F) live.push_back(c);
  }
  out.setZero();
  if (live.empty()) return {};
  const auto n_live = static_cast<Eigen::Index>(live.size());
  const float* values = nullptr;
  if (n_live == errors.cols() && errors.outerStride() == errors.rows()) {
    values = errors.data();  // already sample after sample: no copy
  } else {
    if (packed_.rows() != errors.rows() || packed_.cols() != n_live) {
      packed_.resize(errors.rows(), n_live);
    }
    for (Eigen::Index k = 0; k < n_live; ++k) packed_.col(k) = errors.col(live[k]);
    values = packed_.data();
  }
  sim::LinearRequest request;
  request.n_in = n_in();
  request.n_out = n_out();
  request.batch = n_live;
  request.values = std::span<const float>(values, static_cast<std::size_t>(n_in() * n_live));
  request.options = options_;
  Result<sim::Projections> result = device_.linear_transform(request);
  if (!result.ok()) return result.status().with_context("feedback via " + model_);
  const Eigen::MatrixXf& projected = result->values;
  if (projected.rows() != n_out() || projected.cols() != n_live) {
    return internal_error("feedback via " + model_ + ": device returned " +
                          std::to_string(projected.rows()) + "x" +
                          std::to_string(projected.cols()) + ", want " + std::to_string(n_out()) +
                          "x" + std::to_string(n_live));
  }
  if (n_live == errors.cols()) {
    out = projected;
  } else {
    for (Eigen::Index k = 0; k < n_live; ++k) out.col(live[k]) = projected.col(k);
  }
  const sim::FrameInfo& info = result->info;
  cost_.frames += info.frames;
  cost_.device_time_ns += info.device_time_end_ns - info.device_time_start_ns;
  cost_.saturated_pixels += info.saturated_pixels;
  return {};
}

}  // namespace opu::trainer
