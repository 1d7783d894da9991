// Models: a chain of layers with named feedback points (docs/design.md §4).
//
// A feedback point sits after a layer (usually an activation, as TinyDFA's DFALayer does): under
// DFA the gradient at that activation is replaced by the projected error B_l e, and backprop runs
// only locally, inside the block of layers between two feedback points.
//
// The model owns the activations: activation(i) is the output of layer i, and input() the batch.
// Thread safety: none (one model, one thread).
#pragma once

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trainer/layers.h"

namespace opu::trainer {

struct FeedbackPoint {
  std::string name;         // "h1", "h2", ...
  std::size_t after_layer;  // index of the layer whose output receives the feedback
  Eigen::Index size;        // rows of that output (d_l)
};

class Model {
 public:
  explicit Model(Eigen::Index input_size);

  /// Appends a layer (checks that its input size matches; throws on mismatch).
  void add(std::unique_ptr<Layer> layer);
  /// Declares a feedback point after the last added layer.
  void add_feedback_point(std::string name);

  Eigen::Index input_size() const { return input_size_; }
  Eigen::Index output_size() const { return sizes_.back(); }
  std::size_t num_layers() const { return layers_.size(); }
  Layer& layer(std::size_t i) { return *layers_[i]; }
  const std::vector<FeedbackPoint>& feedback_points() const { return feedback_points_; }
  /// The widest feedback point (d_max), 0 without feedback points.
  Eigen::Index max_feedback_size() const;

  /// The batch buffer (input_size x batch) that forward() reads; callers fill it in place to avoid
  /// a copy, or pass the batch to forward(x).
  Eigen::MatrixXf& input() { return input_; }
  /// Runs every layer on input(); returns the output.
  const Eigen::MatrixXf& forward(const ForwardContext& context);
  /// Copies x into input() and runs forward.
  const Eigen::MatrixXf& forward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                                 const ForwardContext& context);
  const Eigen::MatrixXf& output() const { return activations_.back(); }
  /// Output of layer i from the last forward.
  const Eigen::MatrixXf& activation(std::size_t i) const { return activations_[i]; }

  /// Called with (layer index, dL/d output of that layer) while backward passes through it.
  using GradientTap = std::function<void(std::size_t, const Eigen::Ref<const Eigen::MatrixXf>&)>;
  /// Backprop from dL/d(output of layer `top`) down through layers top, top-1, ..., `bottom`.
  /// Parameter gradients of those layers when `param_grads`; dL/d(input of `bottom`) into `dx`
  /// when not null. `tap` (optional) sees the gradient at each layer's output.
  void backward(std::size_t top, std::size_t bottom, const Eigen::Ref<const Eigen::MatrixXf>& dy,
                Eigen::MatrixXf* dx, bool param_grads, const GradientTap& tap = nullptr);

  /// Parameters of every layer, in layer order.
  std::vector<Param*> params();
  /// Parameters of layers [first, num_layers()).
  std::vector<Param*> params_from(std::size_t first);
  std::int64_t num_parameters();
  /// "784-linear256-relu-[h1]-..." : identifies the architecture in checkpoints.
  std::string signature() const;

 private:
  Eigen::Index input_size_;
  std::vector<Eigen::Index> sizes_;  // sizes_[0] = input, sizes_[i+1] = output of layer i
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<FeedbackPoint> feedback_points_;
  Eigen::MatrixXf input_;
  std::vector<Eigen::MatrixXf> activations_;
  Eigen::MatrixXf grad_a_, grad_b_;  // ping-pong buffers of backward
};

/// The paper's MLP: input - [hidden - activation - feedback point]* - output. Feedback points are
/// named h1, h2, ...; weights use PyTorch's nn.Linear default initialisation.
Model make_mlp(Eigen::Index n_in, const std::vector<Eigen::Index>& hidden, Eigen::Index n_out,
               ActivationKind activation, std::uint64_t seed, float dropout = 0.0F);

/// Kipf & Welling's GCN: [dropout(input_dropout)] - graph conv - ReLU - [h1] - dropout - graph
/// conv, one conv + ReLU + feedback point per hidden size (one for the classic 2-layer model),
/// Glorot initialisation, weight decay on the first layer only (as in their code and the paper's).
Model make_gcn(std::shared_ptr<const Eigen::SparseMatrix<float>> adjacency, Eigen::Index n_in,
               const std::vector<Eigen::Index>& hidden, Eigen::Index n_out, float dropout,
               std::uint64_t seed, float input_dropout);

}  // namespace opu::trainer
