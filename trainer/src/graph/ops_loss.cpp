#include "trainer/graph/ops_loss.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "op_support.h"

namespace opu::trainer::graph {
using detail::expect_cols;
using detail::expect_inputs;
using detail::prepare;

template <typename T>
Index SoftmaxCrossEntropyOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 2, 2, 0b10U);
  return 1;
}

template <typename T>
void SoftmaxCrossEntropyOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& z = in[0]->value();
  const std::vector<std::int32_t>& targets = in[1]->ids;
  expect_cols(out, *in[1], z.cols());
  resize_to(probs_, z.rows(), z.cols());
  total_ = 0.0;
  counted_ = 0;
  for (Index c = 0; c < z.cols(); ++c) {
    const T top = z.col(c).maxCoeff();
    auto p = probs_.col(c).array();
    p = (z.col(c).array() - top).exp();
    const T sum = p.sum();
    p /= sum;
    const std::int32_t t = targets[static_cast<std::size_t>(c)];
    if (t < 0) continue;
    if (t >= z.rows()) {
      throw StatusError(invalid_argument("graph node '" + out.name + "': target " +
                                         std::to_string(t) + " at column " + std::to_string(c) +
                                         ", want [0, " + std::to_string(z.rows()) + ")"));
    }
    // -log softmax(z)[t] = log Σ exp(z - top) - (z_t - top), without forming log(p_t).
    total_ += std::log(static_cast<double>(sum)) - static_cast<double>(z(t, c) - top);
    ++counted_;
  }
  Matrix<T>& y = prepare(out, 1, 1);
  y(0, 0) = counted_ > 0 ? static_cast<T>(total_ / static_cast<double>(counted_)) : T(0);
}

template <typename T>
void SoftmaxCrossEntropyOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (!din[0] || counted_ == 0) return;
  const std::vector<std::int32_t>& targets = in[1]->ids;
  const T f = out.grad()(0, 0) / static_cast<T>(counted_);
  Matrix<T>& g = din[0].zero_or_keep(probs_.rows(), probs_.cols());
  for (Index c = 0; c < probs_.cols(); ++c) {
    const std::int32_t t = targets[static_cast<std::size_t>(c)];
    if (t < 0) continue;
    g.col(c) += f * probs_.col(c);
    g(t, c) -= f;
  }
}

template <typename T>
NodeId softmax_cross_entropy(Graph<T>& g, NodeId logits, NodeId targets, std::string name) {
  return g.apply(std::make_unique<SoftmaxCrossEntropyOp<T>>(), {logits, targets}, std::move(name));
}

// --- per-unit losses -----------------------------------------------------------------------

std::string per_unit_loss_name(PerUnitLoss kind) {
  return kind == PerUnitLoss::kBinaryCrossEntropy ? "binary_cross_entropy" : "squared_error";
}

namespace {

/// Whether column c is in the loss (a negative class leaves it out).
template <typename T>
bool column_counted(const Node<T>& targets, Index c) {
  return !targets.is_index() || targets.ids[static_cast<std::size_t>(c)] >= 0;
}

/// Target (i, c): the one-hot of an index target, or the float target's entry.
template <typename T>
T target_at(const Node<T>& targets, Index i, Index c) {
  if (targets.is_index()) return targets.ids[static_cast<std::size_t>(c)] == i ? T(1) : T(0);
  return targets.value()(i, c);
}

}  // namespace

template <typename T>
Index PerUnitLossOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 2, 2, in.size() == 2 && in[1]->is_index() ? 0b10U : 0U);
  if (!in[1]->is_index() && in[1]->rows != in[0]->rows) {
    detail::bad_graph(name, "targets '" + in[1]->name + "' have " + std::to_string(in[1]->rows) +
                                " rows, the prediction '" + in[0]->name + "' " +
                                std::to_string(in[0]->rows));
  }
  return 1;
}

template <typename T>
void PerUnitLossOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& z = in[0]->value();
  const Node<T>& targets = *in[1];
  expect_cols(out, targets, z.cols());
  if (targets.is_index()) {
    for (Index c = 0; c < z.cols(); ++c) {
      const std::int32_t t = targets.ids[static_cast<std::size_t>(c)];
      if (t >= z.rows()) {
        throw StatusError(invalid_argument("graph node '" + out.name + "': target " +
                                           std::to_string(t) + " at column " + std::to_string(c) +
                                           ", want [0, " + std::to_string(z.rows()) + ")"));
      }
    }
  }
  double total = 0.0;
  counted_ = 0;
  for (Index c = 0; c < z.cols(); ++c) {
    if (!column_counted(targets, c)) continue;
    ++counted_;
    for (Index i = 0; i < z.rows(); ++i) {
      const T v = z(i, c);
      const T t = target_at(targets, i, c);
      if (kind_ == PerUnitLoss::kBinaryCrossEntropy) {
        // softplus(v) = max(v, 0) + log1p(exp(-|v|)): no overflow for large |v|.
        const T softplus = std::max(v, T(0)) + std::log1p(std::exp(-std::abs(v)));
        total += static_cast<double>(softplus - t * v);
      } else {
        total += 0.5 * static_cast<double>((v - t) * (v - t));
      }
    }
  }
  Matrix<T>& y = prepare(out, 1, 1);
  y(0, 0) = counted_ > 0 ? static_cast<T>(total / static_cast<double>(counted_)) : T(0);
}

template <typename T>
void PerUnitLossOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (!din[0]) return;
  const Matrix<T>& z = in[0]->value();
  const Node<T>& targets = *in[1];
  Matrix<T>& g = din[0].zero_or_keep(z.rows(), z.cols());
  if (counted_ == 0) return;
  const T f = out.grad()(0, 0) / static_cast<T>(counted_);
  for (Index c = 0; c < z.cols(); ++c) {
    if (!column_counted(targets, c)) continue;
    for (Index i = 0; i < z.rows(); ++i) {
      const T v = z(i, c);
      const T t = target_at(targets, i, c);
      T d = v - t;
      if (kind_ == PerUnitLoss::kBinaryCrossEntropy) {
        const T sigmoid = v >= T(0) ? T(1) / (T(1) + std::exp(-v)) : std::exp(v) / (T(1) + std::exp(v));
        d = sigmoid - t;
      }
      g(i, c) += f * d;
    }
  }
}

template <typename T>
NodeId binary_cross_entropy(Graph<T>& g, NodeId logits, NodeId targets, std::string name) {
  return g.apply(std::make_unique<PerUnitLossOp<T>>(PerUnitLoss::kBinaryCrossEntropy),
                 {logits, targets}, std::move(name));
}

template <typename T>
NodeId squared_error(Graph<T>& g, NodeId prediction, NodeId targets, std::string name) {
  return g.apply(std::make_unique<PerUnitLossOp<T>>(PerUnitLoss::kSquaredError),
                 {prediction, targets}, std::move(name));
}

template class PerUnitLossOp<float>;
template class PerUnitLossOp<double>;
template NodeId binary_cross_entropy<float>(Graph<float>&, NodeId, NodeId, std::string);
template NodeId binary_cross_entropy<double>(Graph<double>&, NodeId, NodeId, std::string);
template NodeId squared_error<float>(Graph<float>&, NodeId, NodeId, std::string);
template NodeId squared_error<double>(Graph<double>&, NodeId, NodeId, std::string);

template class SoftmaxCrossEntropyOp<float>;
template class SoftmaxCrossEntropyOp<double>;
template NodeId softmax_cross_entropy<float>(Graph<float>&, NodeId, NodeId, std::string);
template NodeId softmax_cross_entropy<double>(Graph<double>&, NodeId, NodeId, std::string);

}  // namespace opu::trainer::graph
