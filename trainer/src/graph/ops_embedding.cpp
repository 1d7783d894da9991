#include "trainer/graph/ops_embedding.h"

#include <cmath>
#include <memory>
#include <string>

#include "op_support.h"

namespace opu::trainer::graph {
using detail::bad_graph;
using detail::expect_inputs;
using detail::prepare;

template <typename T>
Index EmbeddingOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 2, 2, 0b01U);
  return in[1]->rows;
}

template <typename T>
void EmbeddingOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const std::vector<std::int32_t>& ids = in[0]->ids;
  const Matrix<T>& table = in[1]->value();
  const auto n = static_cast<Index>(ids.size());
  Matrix<T>& y = prepare(out, n, in[0]->seq_len);
  const auto s = static_cast<T>(scale_);
  for (Index c = 0; c < n; ++c) {
    const std::int32_t id = ids[static_cast<std::size_t>(c)];
    if (id < 0 || id >= table.cols()) {
      throw StatusError(invalid_argument("graph node '" + out.name + "': id " + std::to_string(id) +
                                         " at column " + std::to_string(c) + ", want [0, " +
                                         std::to_string(table.cols()) + ")"));
    }
    y.col(c) = s * table.col(id);
  }
}

template <typename T>
void EmbeddingOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (!din[1]) return;
  const std::vector<std::int32_t>& ids = in[0]->ids;
  const Matrix<T>& dy = out.grad();
  Matrix<T>& g = din[1].zero_or_keep(in[1]->rows, in[1]->value().cols());
  const auto s = static_cast<T>(scale_);
  for (Index c = 0; c < dy.cols(); ++c) g.col(ids[static_cast<std::size_t>(c)]) += s * dy.col(c);
}

template <typename T>
Index AddPositionsOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 2, 2);
  if (in[0]->rows != in[1]->rows) {
    bad_graph(name, "'" + in[0]->name + "' has " + std::to_string(in[0]->rows) +
                        " rows, the positions '" + in[1]->name + "' " +
                        std::to_string(in[1]->rows));
  }
  return in[0]->rows;
}

template <typename T>
void AddPositionsOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& x = in[0]->value();
  const Matrix<T>& table = in[1]->value();
  const Index len = in[0]->seq_len;
  if (len > table.cols()) {
    throw StatusError(invalid_argument("graph node '" + out.name + "': sequences of " +
                                       std::to_string(len) + " positions, the table '" +
                                       in[1]->name + "' has " + std::to_string(table.cols())));
  }
  Matrix<T>& y = prepare(out, x.cols(), len);
  for (Index b = 0; b < in[0]->sequences(); ++b) {
    y.middleCols(b * len, len) = x.middleCols(b * len, len) + table.leftCols(len);
  }
}

template <typename T>
void AddPositionsOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  const Matrix<T>& dy = out.grad();
  if (din[0]) din[0].assign(dy);
  if (din[1]) {
    const Index len = in[0]->seq_len;
    Matrix<T>& g = din[1].zero_or_keep(in[1]->rows, in[1]->value().cols());
    for (Index b = 0; b < in[0]->sequences(); ++b) g.leftCols(len) += dy.middleCols(b * len, len);
  }
}

template <typename T>
Matrix<T> sinusoidal_positions(Index d, Index length) {
  Matrix<T> table(d, length);
  for (Index t = 0; t < length; ++t) {
    for (Index i = 0; i < d; i += 2) {
      // exp(-2i ln(10000) / d) as PyTorch's tutorial computes it, in double.
      const double omega =
          std::exp(static_cast<double>(i) * (-std::log(10000.0) / static_cast<double>(d)));
      const double angle = static_cast<double>(t) * omega;
      table(i, t) = static_cast<T>(std::sin(angle));
      if (i + 1 < d) table(i + 1, t) = static_cast<T>(std::cos(angle));
    }
  }
  return table;
}

template <typename T>
NodeId embedding(Graph<T>& g, NodeId ids, NodeId table, double scale, std::string name) {
  return g.apply(std::make_unique<EmbeddingOp<T>>(scale), {ids, table}, std::move(name));
}

template <typename T>
NodeId add_positions(Graph<T>& g, NodeId x, NodeId table, std::string name) {
  return g.apply(std::make_unique<AddPositionsOp<T>>(), {x, table}, std::move(name));
}

#define OPU_GRAPH_EMBEDDING(T)                                                  \
  template class EmbeddingOp<T>;                                                \
  template class AddPositionsOp<T>;                                             \
  template Matrix<T> sinusoidal_positions<T>(Index, Index);                     \
  template NodeId embedding<T>(Graph<T>&, NodeId, NodeId, double, std::string); \
  template NodeId add_positions<T>(Graph<T>&, NodeId, NodeId, std::string);
OPU_GRAPH_EMBEDDING(float)
OPU_GRAPH_EMBEDDING(double)
#undef OPU_GRAPH_EMBEDDING

}  // namespace opu::trainer::graph
