#include "trainer/graph/ops_norm.h"

#include <memory>
#include <string>

#include "op_support.h"

namespace opu::trainer::graph {
using detail::bad_graph;
using detail::expect_inputs;
using detail::prepare;

template <typename T>
Index LayerNormOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 3, 3);
  const Index d = in[0]->rows;
  for (std::size_t k = 1; k < 3; ++k) {
    if (in[k]->rows != d || in[k]->value().cols() != 1) {
      bad_graph(name, "'" + in[k]->name + "' is " + std::to_string(in[k]->rows) + "x" +
                          std::to_string(in[k]->value().cols()) + ", want " + std::to_string(d) +
                          "x1");
    }
  }
  return d;
}

template <typename T>
void LayerNormOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& x = in[0]->value();
  const Index d = x.rows();
  const Index n = x.cols();
  Matrix<T>& y = prepare(out, n, in[0]->seq_len);
  resize_to(xhat_, d, n);
  resize_to(rstd_, 1, n);
  const auto gamma = in[1]->value().col(0).array();
  const auto beta = in[2]->value().col(0).array();
  const T inv_d = T(1) / static_cast<T>(d);
  for (Index c = 0; c < n; ++c) {
    const T mean = x.col(c).sum() * inv_d;
    auto xc = xhat_.col(c).array();
    xc = x.col(c).array() - mean;
    const T var = xc.square().sum() * inv_d;
    const T rstd = T(1) / std::sqrt(var + static_cast<T>(eps_));
    rstd_(c) = rstd;
    xc *= rstd;
    y.col(c).array() = gamma * xc + beta;
  }
}

template <typename T>
void LayerNormOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  const Matrix<T>& dy = out.grad();
  const Index d = dy.rows();
  const Index n = dy.cols();
  if (din[0]) {
    const auto gamma = in[1]->value().col(0).array();
    resize_to(g_, d, n);
    const T inv_d = T(1) / static_cast<T>(d);
    for (Index c = 0; c < n; ++c) {
      auto g = g_.col(c).array();
      g = gamma * dy.col(c).array();
      const auto xh = xhat_.col(c).array();
      const T mean_g = g.sum() * inv_d;
      const T mean_gx = (g * xh).sum() * inv_d;
      g = rstd_(c) * (g - mean_g - xh * mean_gx);
    }
    din[0].assign(g_);
  }
  if (din[1]) din[1].assign(dy.cwiseProduct(xhat_).rowwise().sum());
  if (din[2]) din[2].assign(dy.rowwise().sum());
}

template <typename T>
NodeId layer_norm(Graph<T>& g, NodeId x, NodeId gamma, NodeId beta, std::string name, double eps) {
  return g.apply(std::make_unique<LayerNormOp<T>>(eps), {x, gamma, beta}, std::move(name));
}

template class LayerNormOp<float>;
template class LayerNormOp<double>;
template NodeId layer_norm<float>(Graph<float>&, NodeId, NodeId, NodeId, std::string, double);
template NodeId layer_norm<double>(Graph<double>&, NodeId, NodeId, NodeId, std::string, double);

}  // namespace opu::trainer::graph
