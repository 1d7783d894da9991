// Normalisation: layer norm over the features of each column (position).
#pragma once

#include <string>

#include "trainer/graph/graph.h"

namespace opu::trainer::graph {

/// y = γ ⊙ (x - μ) / sqrt(σ² + eps) + β per column, μ and σ² (biased) over the rows: inputs x
/// (d x N), γ and β (d x 1). Keeps x̂ and 1/σ per column for backward:
/// dx = (1/σ) (g - mean(g) - x̂ mean(g ⊙ x̂)) with g = γ ⊙ dy.
template <typename T>
class LayerNormOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  explicit LayerNormOp(double eps = 1e-5) : eps_(eps) {}
  std::string kind() const override { return "layer_norm"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  double eps_;
  Matrix<T> xhat_;     // d x N
  RowVector<T> rstd_;  // 1 x N
  Matrix<T> g_;        // backward scratch, d x N
};

template <typename T>
NodeId layer_norm(Graph<T>& g, NodeId x, NodeId gamma, NodeId beta, std::string name = {},
                  double eps = 1e-5);

}  // namespace opu::trainer::graph
