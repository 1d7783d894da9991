// Losses: scalar outputs (1 x 1) that reverse mode starts from.
#pragma once

#include <string>

#include "trainer/graph/graph.h"

namespace opu::trainer::graph {

/// Softmax over each column of the logits (classes x N) and cross-entropy against integer
/// targets (an index node, one per column; a negative target leaves its column out):
/// L = -(1/n) Σ_c log softmax(z_c)[t_c] over the n counted columns, in nats.
/// dL/dz_c = (softmax(z_c) - onehot(t_c)) / n.
template <typename T>
class SoftmaxCrossEntropyOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  std::string kind() const override { return "softmax_cross_entropy"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

  /// The last forward's sum of -log p over the counted columns (double), and their count.
  double total() const { return total_; }
  Index counted() const { return counted_; }
  /// softmax(z) of the last forward (classes x N).
  const Matrix<T>& probabilities() const { return probs_; }

 private:
  Matrix<T> probs_;
  double total_ = 0.0;
  Index counted_ = 0;
};

template <typename T>
NodeId softmax_cross_entropy(Graph<T>& g, NodeId logits, NodeId targets, std::string name = {});

/// Targets of the per-unit losses below: either an index node (one class per column: the target
/// is its one-hot vector, and a negative class leaves the column out) or a float node of the
/// prediction's shape (every column counted).
enum class PerUnitLoss {
  kBinaryCrossEntropy,  // ℓ_c = Σ_i softplus(z_ic) - t_ic z_ic on logits z; dℓ/dz = σ(z) - t
  kSquaredError,        // ℓ_c = ½ ‖y_c - t_c‖²;                          dℓ/dy = y - t
};
std::string per_unit_loss_name(PerUnitLoss kind);

/// L = (1/n) Σ_c ℓ_c over the n counted columns (0 when none), a 1 x 1 node.
template <typename T>
class PerUnitLossOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  explicit PerUnitLossOp(PerUnitLoss kind) : kind_(kind) {}
  std::string kind() const override { return per_unit_loss_name(kind_); }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  PerUnitLoss kind_;
  Index counted_ = 0;
};

template <typename T>
NodeId binary_cross_entropy(Graph<T>& g, NodeId logits, NodeId targets, std::string name = {});
template <typename T>
NodeId squared_error(Graph<T>& g, NodeId prediction, NodeId targets, std::string name = {});

}  // namespace opu::trainer::graph
