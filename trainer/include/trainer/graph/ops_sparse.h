// Sparse propagation over a fixed graph of samples (nodes): the product with a sparse matrix
// that mixes columns. The GCN's Â X W step, and the building block of the graph convolutions
// that follow it (ChebConv's Chebyshev terms are repeated propagations, GAT's attention is a
// propagation with learned edge weights).
#pragma once

#include <Eigen/SparseCore>
#include <memory>
#include <string>

#include "trainer/graph/graph.h"

namespace opu::trainer::graph {

/// A sparse matrix in compressed column storage (Eigen's default).
template <typename T>
using SparseMatrix = Eigen::SparseMatrix<T>;

/// y = x A (+ b): x is features x n (one column per node), A is n x m and sparse, y is
/// features x m; column j of y is Σ_k A(k, j) x_k (for a normalised adjacency Â, each node's
/// features become the weighted sum of its neighbours' and its own), plus an optional bias
/// (features x 1). Backward: dx = dy Aᵀ, db = Σ_columns dy. Both directions walk stored entries
/// only (the transpose is kept in compressed form too, so each output column is written once,
/// no zeroing pass and no scatter); cost O(features x nonzeros).
template <typename T>
class PropagateOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  /// `a` must be compressed (makeCompressed()); shared, never modified.
  explicit PropagateOp(std::shared_ptr<const SparseMatrix<T>> a);
  std::string kind() const override { return "propagate"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;
  const SparseMatrix<T>& matrix() const { return *a_; }

 private:
  std::shared_ptr<const SparseMatrix<T>> a_;
  SparseMatrix<T> at_;  // Aᵀ, compressed
};

/// x A (+ bias; kNoNode: none).
template <typename T>
NodeId propagate(Graph<T>& g, NodeId x, std::shared_ptr<const SparseMatrix<T>> a,
                 NodeId bias = kNoNode, std::string name = {});

}  // namespace opu::trainer::graph
