#include "trainer/graph/ops_loss.h"

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

template class SoftmaxCrossEntropyOp<float>;
template class SoftmaxCrossEntropyOp<double>;
template NodeId softmax_cross_entropy<float>(Graph<float>&, NodeId, NodeId, std::string);
template NodeId softmax_cross_entropy<double>(Graph<double>&, NodeId, NodeId, std::string);

}  // namespace opu::trainer::graph
