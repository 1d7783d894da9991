// The paper's multi-layer perceptron as a graph (docs/trainer.md, "The MLP and the GCN"):
// input - [linear - activation - (feedback point h_l) - (dropout)]* - linear, the logits feeding
// the classifier loss. Weights and biases are PyTorch's nn.Linear default,
// U(±1/sqrt(fan_in)); parameters are named layer<l>.weight / layer<l>.bias.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "trainer/graph/ops_dense.h"
#include "trainer/models/classifier.h"

namespace opu::trainer::models {

struct MlpConfig {
  Index inputs = 784;
  std::vector<Index> hidden = {256, 256};  // one feedback point after each hidden activation
  Index classes = 10;
  graph::Activation activation = graph::Activation::kRelu;
  double dropout = 0.0;  // after each hidden activation (the feedback point is before it)
  ClassifierLoss loss = ClassifierLoss::kCrossEntropy;
  std::uint64_t seed = 1;  // weights and dropout masks
};

/// Throws StatusError (INVALID_ARGUMENT) on a size < 1 or a dropout outside [0, 1).
template <typename T>
std::unique_ptr<ClassifierModel<T>> build_mlp(const MlpConfig& config);

}  // namespace opu::trainer::models
