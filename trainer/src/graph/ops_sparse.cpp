#include "trainer/graph/ops_sparse.h"

#include <memory>
#include <string>
#include <utility>

#include "op_support.h"

namespace opu::trainer::graph {
using detail::bad_graph;
using detail::expect_inputs;
using detail::prepare;

namespace {

// y.col(j) (+)= Σ_k m(k, j) x.col(k) over the stored entries of column j of `m` (CSC), for every
// column j; `init` (rows x 1) or zero starts each column unless `accumulate`.
template <typename T>
void sparse_right_product(const Matrix<T>& x, const SparseMatrix<T>& m, const T* init,
                          bool accumulate, Matrix<T>& y) {
  const Index rows = x.rows();
  const T* __restrict xd = x.data();
  const T* values = m.valuePtr();
  const int* inner = m.innerIndexPtr();
  const int* outer = m.outerIndexPtr();
  for (Index j = 0; j < m.cols(); ++j) {
    T* __restrict yc = y.data() + j * rows;
    if (!accumulate) {
      if (init != nullptr) {
        for (Index i = 0; i < rows; ++i) yc[i] = init[i];
      } else {
        for (Index i = 0; i < rows; ++i) yc[i] = T(0);
      }
    }
    for (int p = outer[j]; p < outer[j + 1]; ++p) {
      const T v = values[p];
      const T* __restrict xc = xd + static_cast<Index>(inner[p]) * rows;
      for (Index i = 0; i < rows; ++i) yc[i] += v * xc[i];
    }
  }
}

}  // namespace

template <typename T>
PropagateOp<T>::PropagateOp(std::shared_ptr<const SparseMatrix<T>> a) : a_(std::move(a)) {
  OPU_CHECK(a_ != nullptr, "propagate: the matrix is null");
  OPU_CHECK(a_->isCompressed(), "propagate: the matrix must be compressed");
  at_ = a_->transpose();
  at_.makeCompressed();
}

template <typename T>
Index PropagateOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 1, 2);
  if (in.size() == 2 && (in[1]->rows != in[0]->rows || in[1]->value().cols() != 1)) {
    bad_graph(name, "bias '" + in[1]->name + "' is " + std::to_string(in[1]->rows) + "x" +
                        std::to_string(in[1]->value().cols()) + ", want " +
                        std::to_string(in[0]->rows) + "x1");
  }
  return in[0]->rows;
}

template <typename T>
void PropagateOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& x = in[0]->value();
  OPU_CHECK(x.cols() == a_->rows(), "graph node '" + out.name + "': input '" + in[0]->name +
                                        "' has " + std::to_string(x.cols()) +
                                        " columns (nodes), want " + std::to_string(a_->rows()));
  Matrix<T>& y = prepare(out, a_->cols(), 1);
  sparse_right_product<T>(x, *a_, in.size() == 2 ? in[1]->value().data() : nullptr, false, y);
}

template <typename T>
void PropagateOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  const Matrix<T>& dy = out.grad();
  if (din[0]) {
    const bool acc = din[0].accumulate;
    Matrix<T>& dx = din[0].target(dy.rows(), a_->rows());
    sparse_right_product<T>(dy, at_, nullptr, acc, dx);
  }
  if (in.size() == 2 && din[1]) din[1].assign(dy.rowwise().sum());
}

template <typename T>
NodeId propagate(Graph<T>& g, NodeId x, std::shared_ptr<const SparseMatrix<T>> a, NodeId bias,
                 std::string name) {
  std::vector<NodeId> inputs{x};
  if (bias != kNoNode) inputs.push_back(bias);
  return g.apply(std::make_unique<PropagateOp<T>>(std::move(a)), std::move(inputs),
                 std::move(name));
}

template class PropagateOp<float>;
template class PropagateOp<double>;
template NodeId propagate<float>(Graph<float>&, NodeId, std::shared_ptr<const SparseMatrix<float>>,
                                 NodeId, std::string);
template NodeId propagate<double>(Graph<double>&, NodeId,
                                  std::shared_ptr<const SparseMatrix<double>>, NodeId,
                                  std::string);

}  // namespace opu::trainer::graph
