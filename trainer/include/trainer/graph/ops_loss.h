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

}  // namespace opu::trainer::graph
