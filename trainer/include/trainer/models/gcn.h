// Kipf & Welling's graph convolutional network as a graph (docs/trainer.md, "The MLP and the
// GCN"), one column per node of the citation graph, full batch:
//   [dropout(input_dropout)] - graph conv - ReLU - [h1] - dropout - graph conv,
// a graph conv being Â (X W) + b: a linear map of every node's features, then the sparse
// propagation over the normalised adjacency Â with the bias (graph/ops_sparse.h). One conv,
// ReLU and feedback point per hidden size (one for the classic two-layer model). Glorot-uniform
// weights, zero biases, weight decay on the first layer only (their code and the paper's);
// parameters gcn<l>.weight / gcn<l>.bias.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "trainer/graph/ops_sparse.h"
#include "trainer/models/classifier.h"

namespace opu::trainer::models {

struct GcnConfig {
  Index inputs = 0;  // features per node
  std::vector<Index> hidden = {16};
  Index classes = 0;
  double dropout = 0.5;        // before every conv but the first
  double input_dropout = 0.5;  // before the first conv
  ClassifierLoss loss = ClassifierLoss::kCrossEntropy;
  std::uint64_t seed = 1;
};

/// `adjacency`: the normalised adjacency (nodes x nodes, compressed). Throws StatusError
/// (INVALID_ARGUMENT) on a bad size or dropout.
template <typename T>
std::unique_ptr<ClassifierModel<T>> build_gcn(
    const GcnConfig& config, std::shared_ptr<const graph::SparseMatrix<T>> adjacency);

}  // namespace opu::trainer::models
