#include "trainer/learner.h"

#include <cmath>
#include <limits>
#include <string>

namespace opu::trainer {

std::string method_name(Method method) {
  switch (method) {
    case Method::kBp:
      return "bp";
    case Method::kDfa:
      return "dfa";
    case Method::kShallow:
      return "shallow";
  }
  return "?";
}

Result<Method> parse_method(const std::string& name) {
  if (name == "bp") return Method::kBp;
  if (name == "dfa") return Method::kDfa;
  if (name == "shallow") return Method::kShallow;
  return invalid_argument("method: '" + name + "' is unknown, want bp, dfa or shallow");
}

Alignment cosine_alignment(const std::string& point, const Eigen::Ref<const Eigen::MatrixXf>& a,
                           const Eigen::Ref<const Eigen::MatrixXf>& b) {
  OPU_CHECK(a.rows() == b.rows() && a.cols() == b.cols(), "cosine_alignment: shape mismatch");
  Alignment result;
  result.point = point;
  double sum = 0.0;
  double sum_sq = 0.0;
  for (Eigen::Index c = 0; c < a.cols(); ++c) {
    const double na = a.col(c).cast<double>().norm();
    const double nb = b.col(c).cast<double>().norm();
    if (na == 0.0 || nb == 0.0) continue;  // no signal on this sample: nothing to align
    const double cosine = a.col(c).cast<double>().dot(b.col(c).cast<double>()) / (na * nb);
    sum += cosine;
    sum_sq += cosine * cosine;
    ++result.samples;
  }
  if (result.samples == 0) {
    result.mean = result.std = std::numeric_limits<double>::quiet_NaN();
    return result;
  }
  const auto n = static_cast<double>(result.samples);
  result.mean = sum / n;
  result.std = std::sqrt(std::max(0.0, sum_sq / n - result.mean * result.mean));
  return result;
}

std::vector<std::int32_t> argmax_columns(const Eigen::Ref<const Eigen::MatrixXf>& m) {
  std::vector<std::int32_t> out(static_cast<std::size_t>(m.cols()));
  for (Eigen::Index c = 0; c < m.cols(); ++c) {
    Eigen::Index row = 0;
    m.col(c).maxCoeff(&row);
    out[static_cast<std::size_t>(c)] = static_cast<std::int32_t>(row);
  }
  return out;
}

Learner::Learner(Model& model, const Loss& loss, Method method, FeedbackSource* feedback)
    : model_(model), loss_(loss), method_(method), feedback_(feedback) {
  const std::vector<FeedbackPoint>& points = model.feedback_points();
  if (method != Method::kBp && points.empty()) {
    throw StatusError(invalid_argument("method " + method_name(method) +
                                       " needs a model with at least one feedback point"));
  }
  if (method == Method::kDfa) {
    if (feedback == nullptr) {
      throw StatusError(invalid_argument("method dfa needs a feedback source"));
    }
    if (feedback->n_in() != model.output_size() || feedback->n_out() < model.max_feedback_size()) {
      throw StatusError(invalid_argument(
          "feedback source maps " + std::to_string(feedback->n_in()) + " -> " +
          std::to_string(feedback->n_out()) + ", want " + std::to_string(model.output_size()) +
          " (model output) -> >= " + std::to_string(model.max_feedback_size()) + " (d_max)"));
    }
    // The paper's normalisation 1/sqrt(d_max) for a U[-1,1) matrix; other sources are first
    // brought to that matrix's entry scale, so the hidden layers learn at the same rate.
    scale_ = kPaperStd /
             (feedback->entry_std() * std::sqrt(static_cast<double>(model.max_feedback_size())));
  }
  trainable_ = method == Method::kShallow ? model.params_from(points.back().after_layer + 1)
                                          : model.params();
  signals_.resize(points.size());
  true_grads_.resize(points.size());
}

Result<StepResult> Learner::compute_gradients(const Eigen::Ref<const Eigen::MatrixXf>& targets,
                                              const Eigen::Ref<const Eigen::VectorXf>& weights,
                                              const ForwardContext& context,
                                              bool measure_alignment) {
  const Eigen::MatrixXf& output = model_.forward(context);
  StepResult result;
  result.loss = loss_.evaluate(output, targets, weights, &error_);
  const std::vector<std::int32_t> predicted = argmax_columns(output);
  const std::vector<std::int32_t> wanted = argmax_columns(targets);
  for (std::size_t c = 0; c < predicted.size(); ++c) {
    if (weights.size() != 0 && weights(static_cast<Eigen::Index>(c)) == 0.0F) continue;
    ++result.counted;
    if (predicted[c] == wanted[c]) ++result.correct;
  }
  if (!std::isfinite(result.loss)) return result;  // the trainer stops; gradients are moot

  const std::vector<FeedbackPoint>& points = model_.feedback_points();
  const std::size_t top = model_.num_layers() - 1;
  // Which feedback point (if any) sits at the output of layer i.
  auto point_at = [&](std::size_t layer) -> int {
    for (std::size_t k = 0; k < points.size(); ++k) {
      if (points[k].after_layer == layer) return static_cast<int>(k);
    }
    return -1;
  };

  if (measure_alignment && !points.empty()) {
    // The true BP gradient at every feedback point, with the same weights and batch.
    model_.backward(top, 0, error_, nullptr, false,
                    [&](std::size_t layer, const Eigen::Ref<const Eigen::MatrixXf>& g) {
                      const int k = point_at(layer);
                      if (k >= 0) true_grads_[static_cast<std::size_t>(k)] = g;
                    });
  }

  switch (method_) {
    case Method::kBp:
      // The signal at each feedback point is recorded only when it is measured (a copy).
      model_.backward(top, 0, error_, nullptr, true,
                      measure_alignment
                          ? Model::GradientTap(
                                [&](std::size_t layer, const Eigen::Ref<const Eigen::MatrixXf>& g) {
                                  const int k = point_at(layer);
                                  if (k >= 0) signals_[static_cast<std::size_t>(k)] = g;
                                })
                          : Model::GradientTap());
      break;
    case Method::kShallow: {
      const std::size_t last = points.back().after_layer;
      if (last < top) model_.backward(top, last + 1, error_, nullptr, true);
      for (std::size_t k = 0; k < points.size(); ++k) {
        signals_[k].setZero(points[k].size, error_.cols());
      }
      break;
    }
    case Method::kDfa: {
      // The top block learns from e by ordinary backprop.
      const std::size_t last = points.back().after_layer;
      if (last < top) model_.backward(top, last + 1, error_, nullptr, true);
      // One projection of e for every feedback point, then local backprop inside each block.
      OPU_RETURN_IF_ERROR(feedback_->project(error_, projection_));
      projection_ *= static_cast<float>(scale_);
      for (std::size_t k = points.size(); k-- > 0;) {
        const std::size_t block_bottom = k == 0 ? 0 : points[k - 1].after_layer + 1;
        const Eigen::Ref<const Eigen::MatrixXf> signal = projection_.topRows(points[k].size);
        if (measure_alignment) signals_[k] = signal;
        model_.backward(points[k].after_layer, block_bottom, signal, nullptr, true);
      }
      break;
    }
  }

  alignment_.clear();
  if (measure_alignment) {
    for (std::size_t k = 0; k < points.size(); ++k) {
      alignment_.push_back(cosine_alignment(points[k].name, signals_[k], true_grads_[k]));
    }
  }
  return result;
}

}  // namespace opu::trainer
