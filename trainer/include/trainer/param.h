// A trainable tensor and what a forward pass depends on besides its inputs: the types the graph
// engine, the optimisers and the checkpoints share.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <string>

namespace opu::trainer {

/// A trainable tensor and its gradient (float: training; the graph engine's double twin for
/// gradient checks is graph::DoubleParam).
struct Param {
  std::string name;  // unique within a model: "layer0.weight"
  Eigen::MatrixXf value;
  Eigen::MatrixXf grad;  // same shape as value, written by reverse mode
  bool decay = true;     // weight decay applies (weights yes, biases no)
};

/// What a forward pass depends on besides its input.
struct ForwardContext {
  bool training = false;
  std::uint64_t step = 0;  // global training step: seeds the dropout masks
};

}  // namespace opu::trainer
