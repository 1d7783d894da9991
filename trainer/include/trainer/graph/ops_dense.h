// Per-column operations: linear maps, activations, residual sums, scaling, dropout, concatenation
// and slicing of features. Each is a class template on the scalar type (float and double are
// instantiated in ops_dense.cpp) with a builder function that adds it to a graph.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/graph/graph.h"

namespace opu::trainer::graph {

/// y = W x (+ b): inputs x (n_in x N), W (n_out x n_in), optional b (n_out x 1). Large products
/// go to OpenBLAS sgemm (Eigen with EIGEN_USE_BLAS); backward is dx = Wᵀ dy, dW = dy xᵀ,
/// db = Σ_columns dy.
template <typename T>
class LinearOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  std::string kind() const override { return "linear"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;
};

enum class Activation { kRelu, kGelu, kTanh, kSigmoid };
std::string activation_name(Activation a);

/// Element-wise activation. GELU is the exact one, x Φ(x) (PyTorch's default).
template <typename T>
class ActivationOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  explicit ActivationOp(Activation a) : activation_(a) {}
  std::string kind() const override { return activation_name(activation_); }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  Activation activation_;
};

/// y = a + b: b of a's shape, or one column (added to every column: a bias).
template <typename T>
class AddOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  std::string kind() const override { return "add"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;
};

/// y = factor x.
template <typename T>
class ScaleOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  explicit ScaleOp(double factor) : factor_(factor) {}
  std::string kind() const override { return "scale"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  double factor_;
};

/// Inverted dropout: in training each element is kept with probability 1 - p and scaled by
/// 1/(1 - p); identity in evaluation. The mask is a pure function of (seed, step, element): a
/// resumed run draws the same masks, and a gradient check sees a fixed function.
template <typename T>
class DropoutOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  DropoutOp(double p, std::uint64_t seed);
  std::string kind() const override { return "dropout"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  double p_;
  std::uint64_t seed_;
  bool active_ = false;
  Matrix<T> mask_;  // 0 or 1/(1-p)
};

/// Fills `mask` with 0 (probability p) or 1/(1-p), from (seed, step, element): 16 random bits per
/// element, so p is rounded to a multiple of 2^-16.
template <typename T>
void dropout_mask(Matrix<T>& mask, double p, std::uint64_t seed, std::uint64_t step);

/// Features of several inputs stacked (rows), equal columns.
template <typename T>
class ConcatOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  std::string kind() const override { return "concat"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;
};

/// Rows [begin, end) of the input.
template <typename T>
class SliceOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  SliceOp(Index begin, Index end) : begin_(begin), end_(end) {}
  std::string kind() const override { return "slice"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  Index begin_, end_;
};

// --- builders ------------------------------------------------------------------------------

/// W x + b (bias = kNoNode: none).
template <typename T>
NodeId linear(Graph<T>& g, NodeId x, NodeId weight, NodeId bias, std::string name = {});
template <typename T>
NodeId activation(Graph<T>& g, Activation a, NodeId x, std::string name = {});
template <typename T>
NodeId add(Graph<T>& g, NodeId a, NodeId b, std::string name = {});
template <typename T>
NodeId scale(Graph<T>& g, NodeId x, double factor, std::string name = {});
/// Dropout with probability p; p = 0 returns x itself (no node).
template <typename T>
NodeId dropout(Graph<T>& g, NodeId x, double p, std::uint64_t seed, std::string name = {});
template <typename T>
NodeId concat(Graph<T>& g, std::vector<NodeId> parts, std::string name = {});
template <typename T>
NodeId slice(Graph<T>& g, NodeId x, Index begin, Index end, std::string name = {});

}  // namespace opu::trainer::graph
