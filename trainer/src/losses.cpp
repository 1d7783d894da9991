#include "trainer/losses.h"

#include <cmath>
#include <string>

#include "trainer/layers.h"

namespace opu::trainer {
namespace {

void check_shapes(const std::string& loss, const Eigen::Ref<const Eigen::MatrixXf>& output,
                  const Eigen::Ref<const Eigen::MatrixXf>& targets,
                  const Eigen::Ref<const Eigen::VectorXf>& weights) {
  if (output.rows() != targets.rows() || output.cols() != targets.cols()) {
    throw StatusError(invalid_argument(loss + ": targets are " + std::to_string(targets.rows()) +
                                       "x" + std::to_string(targets.cols()) +
                                       ", want the output's " + std::to_string(output.rows()) +
                                       "x" + std::to_string(output.cols())));
  }
  if (weights.size() != 0 && weights.size() != output.cols()) {
    throw StatusError(invalid_argument(loss + ": " + std::to_string(weights.size()) +
                                       " weights, want one per column (" +
                                       std::to_string(output.cols()) + ")"));
  }
}

float weight_of(const Eigen::Ref<const Eigen::VectorXf>& weights, Eigen::Index c) {
  return weights.size() == 0 ? 1.0F : weights(c);
}

double total_weight(const Eigen::Ref<const Eigen::VectorXf>& weights, Eigen::Index cols) {
  return weights.size() == 0 ? static_cast<double>(cols) : static_cast<double>(weights.sum());
}

// Shared skeleton: per-column loss and gradient, weighted and normalised.
template <typename Column>
double weighted(const Eigen::Ref<const Eigen::MatrixXf>& output,
                const Eigen::Ref<const Eigen::VectorXf>& weights, Eigen::MatrixXf* grad,
                Column column) {
  const double total = total_weight(weights, output.cols());
  if (grad != nullptr) ensure_shape(*grad, output.rows(), output.cols());
  if (total <= 0.0) {
    if (grad != nullptr) grad->setZero();
    return 0.0;
  }
  const auto scale = static_cast<float>(1.0 / total);
  double sum = 0.0;
  for (Eigen::Index c = 0; c < output.cols(); ++c) {
    const float w = weight_of(weights, c);
    if (w == 0.0F) {
      if (grad != nullptr) grad->col(c).setZero();
      continue;
    }
    sum += static_cast<double>(w) * column(c, grad, w * scale);
  }
  return sum / total;
}

}  // namespace

double SoftmaxCrossEntropy::evaluate(const Eigen::Ref<const Eigen::MatrixXf>& output,
                                     const Eigen::Ref<const Eigen::MatrixXf>& targets,
                                     const Eigen::Ref<const Eigen::VectorXf>& weights,
                                     Eigen::MatrixXf* grad) const {
  check_shapes(name(), output, targets, weights);
  Eigen::VectorXf p(output.rows());
  return weighted(output, weights, grad, [&](Eigen::Index c, Eigen::MatrixXf* g, float gscale) {
    // Stable log-softmax: subtract the column max before exponentiating.
    const float zmax = output.col(c).maxCoeff();
    p = (output.col(c).array() - zmax).exp().matrix();
    const float sum = p.sum();
    const float log_sum = std::log(sum);
    double loss = 0.0;
    for (Eigen::Index i = 0; i < output.rows(); ++i) {
      const float t = targets(i, c);
      if (t != 0.0F) loss -= static_cast<double>(t) * (output(i, c) - zmax - log_sum);
    }
    if (g != nullptr) g->col(c) = (p / sum - targets.col(c)) * gscale;
    return loss;
  });
}

double BinaryCrossEntropy::evaluate(const Eigen::Ref<const Eigen::MatrixXf>& output,
                                    const Eigen::Ref<const Eigen::MatrixXf>& targets,
                                    const Eigen::Ref<const Eigen::VectorXf>& weights,
                                    Eigen::MatrixXf* grad) const {
  check_shapes(name(), output, targets, weights);
  return weighted(output, weights, grad, [&](Eigen::Index c, Eigen::MatrixXf* g, float gscale) {
    double loss = 0.0;
    for (Eigen::Index i = 0; i < output.rows(); ++i) {
      const float z = output(i, c);
      const float t = targets(i, c);
      // softplus(z) = max(z, 0) + log1p(exp(-|z|)): no overflow for large |z|.
      const float softplus = std::max(z, 0.0F) + std::log1p(std::exp(-std::abs(z)));
      loss += static_cast<double>(softplus - t * z);
      if (g != nullptr) {
        const float sigmoid =
            z >= 0.0F ? 1.0F / (1.0F + std::exp(-z)) : std::exp(z) / (1.0F + std::exp(z));
        (*g)(i, c) = (sigmoid - t) * gscale;
      }
    }
    return loss;
  });
}

double MeanSquaredError::evaluate(const Eigen::Ref<const Eigen::MatrixXf>& output,
                                  const Eigen::Ref<const Eigen::MatrixXf>& targets,
                                  const Eigen::Ref<const Eigen::VectorXf>& weights,
                                  Eigen::MatrixXf* grad) const {
  check_shapes(name(), output, targets, weights);
  return weighted(output, weights, grad, [&](Eigen::Index c, Eigen::MatrixXf* g, float gscale) {
    if (g != nullptr) g->col(c) = (output.col(c) - targets.col(c)) * gscale;
    return 0.5 * static_cast<double>((output.col(c) - targets.col(c)).squaredNorm());
  });
}

Result<std::unique_ptr<Loss>> make_loss(const std::string& name) {
  if (name == "cross_entropy" || name == "ce") return {std::make_unique<SoftmaxCrossEntropy>()};
  if (name == "bce") return {std::make_unique<BinaryCrossEntropy>()};
  if (name == "mse") return {std::make_unique<MeanSquaredError>()};
  return invalid_argument("loss: '" + name + "' is unknown, want cross_entropy, bce or mse");
}

}  // namespace opu::trainer
