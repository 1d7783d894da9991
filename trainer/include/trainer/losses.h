// Losses on the model's output (one sample per column), with optional per-sample weights.
//
// loss = Σ_c w_c ℓ_c / Σ_c w_c, and the gradient column c is w_c ∂ℓ_c / Σ w: a weight of 0 leaves a
// sample out entirely (the GCN's non-training nodes), and the error e = dL/dy is what DFA projects.
#pragma once

#include <Eigen/Core>
#include <memory>
#include <string>

#include "opu_sim/status.h"

namespace opu::trainer {

class Loss {
 public:
  virtual ~Loss() = default;
  virtual std::string name() const = 0;
  /// Loss of `output` against `targets` (same shape). `weights` is empty (all ones) or one weight
  /// per column. Writes dL/doutput into `grad` when not null.
  virtual double evaluate(const Eigen::Ref<const Eigen::MatrixXf>& output,
                          const Eigen::Ref<const Eigen::MatrixXf>& targets,
                          const Eigen::Ref<const Eigen::VectorXf>& weights,
                          Eigen::MatrixXf* grad) const = 0;
};

/// Softmax followed by cross-entropy against target distributions (one-hot for labels):
/// ℓ = -Σ_i t_i log softmax(z)_i, ∂ℓ/∂z = softmax(z) - t.
class SoftmaxCrossEntropy final : public Loss {
 public:
  std::string name() const override { return "cross_entropy"; }
  double evaluate(const Eigen::Ref<const Eigen::MatrixXf>& output,
                  const Eigen::Ref<const Eigen::MatrixXf>& targets,
                  const Eigen::Ref<const Eigen::VectorXf>& weights,
                  Eigen::MatrixXf* grad) const override;
};

/// Binary cross-entropy on logits, per output unit: ℓ = Σ_i softplus(z_i) - t_i z_i,
/// ∂ℓ/∂z = sigmoid(z) - t (computed stably for large |z|).
class BinaryCrossEntropy final : public Loss {
 public:
  std::string name() const override { return "bce"; }
  double evaluate(const Eigen::Ref<const Eigen::MatrixXf>& output,
                  const Eigen::Ref<const Eigen::MatrixXf>& targets,
                  const Eigen::Ref<const Eigen::VectorXf>& weights,
                  Eigen::MatrixXf* grad) const override;
};

/// Mean squared error, ℓ = ½ ‖y - t‖², ∂ℓ/∂y = y - t.
class MeanSquaredError final : public Loss {
 public:
  std::string name() const override { return "mse"; }
  double evaluate(const Eigen::Ref<const Eigen::MatrixXf>& output,
                  const Eigen::Ref<const Eigen::MatrixXf>& targets,
                  const Eigen::Ref<const Eigen::VectorXf>& weights,
                  Eigen::MatrixXf* grad) const override;
};

/// "cross_entropy" (or "ce"), "bce", "mse".
Result<std::unique_ptr<Loss>> make_loss(const std::string& name);

}  // namespace opu::trainer
