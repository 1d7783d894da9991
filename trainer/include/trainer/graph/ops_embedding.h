// Embeddings: lookup of a table's columns by id, and positions added per sequence.
#pragma once

#include <string>

#include "trainer/graph/graph.h"

namespace opu::trainer::graph {

/// y(:, n) = scale · table(:, id_n): inputs ids (index node) and the table (d x vocabulary).
/// Backward scatters: dtable(:, id) += scale · dy(:, n) over the columns n holding id.
template <typename T>
class EmbeddingOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  explicit EmbeddingOp(double scale = 1.0) : scale_(scale) {}
  std::string kind() const override { return "embedding"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  double scale_;
};

/// y(:, b T + t) = x(:, b T + t) + table(:, t): a table of positions (d x L, L >= seq_len, a
/// constant for sinusoids or a parameter for learned positions) added to every sequence.
template <typename T>
class AddPositionsOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  std::string kind() const override { return "add_positions"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;
};

/// The sinusoidal table of "Attention is all you need" (d x length): rows 2i and 2i+1 of column
/// (position) t hold sin(t ω_i) and cos(t ω_i), ω_i = 10000^(-2i/d) (PyTorch's tutorial, the
/// paper's code).
template <typename T>
Matrix<T> sinusoidal_positions(Index d, Index length);

template <typename T>
NodeId embedding(Graph<T>& g, NodeId ids, NodeId table, double scale = 1.0, std::string name = {});
template <typename T>
NodeId add_positions(Graph<T>& g, NodeId x, NodeId table, std::string name = {});

}  // namespace opu::trainer::graph
