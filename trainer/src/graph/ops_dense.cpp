#include "trainer/graph/ops_dense.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <numbers>
#include <string>

#include "gemm.h"
#include "op_support.h"
#include "trainer/random.h"

namespace opu::trainer::graph {
using detail::bad_graph;
using detail::expect_cols;
using detail::expect_inputs;
using detail::prepare;

// --- linear --------------------------------------------------------------------------------

template <typename T>
Index LinearOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 2, 3);
  const Matrix<T>& w = in[1]->value();
  if (w.cols() != in[0]->rows) {
    bad_graph(name, "input '" + in[0]->name + "' has " + std::to_string(in[0]->rows) +
                        " rows, the weight '" + in[1]->name + "' wants " +
                        std::to_string(w.cols()));
  }
  if (in.size() == 3 && (in[2]->rows != w.rows() || in[2]->value().cols() != 1)) {
    bad_graph(name, "bias '" + in[2]->name + "' is " + std::to_string(in[2]->rows) + "x" +
                        std::to_string(in[2]->value().cols()) + ", want " +
                        std::to_string(w.rows()) + "x1");
  }
  return w.rows();
}

template <typename T>
void LinearOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& x = in[0]->value();
  Matrix<T>& y = prepare(out, x.cols(), in[0]->seq_len);
  // The bias first, then sgemm adds W x to it (one pass over y, no zeroing).
  if (in.size() == 3) y.colwise() = in[2]->value().col(0);
  detail::gemm(in[1]->value(), false, x, false, y, T(1), in.size() == 3 ? T(1) : T(0));
}

template <typename T>
void LinearOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  const Matrix<T>& dy = out.grad();
  const Matrix<T>& w = in[1]->value();
  const Matrix<T>& x = in[0]->value();
  // Each gradient is written (beta 0) or added to (beta 1) by sgemm itself.
  if (din[0]) {
    Matrix<T>& dx = din[0].target(w.cols(), dy.cols());
    detail::gemm(w, true, dy, false, dx, T(1), din[0].accumulate ? T(1) : T(0));
  }
  if (din[1]) {
    Matrix<T>& dw = din[1].target(dy.rows(), x.rows());
    detail::gemm(dy, false, x, true, dw, T(1), din[1].accumulate ? T(1) : T(0));
  }
  if (in.size() == 3 && din[2]) din[2].assign(dy.rowwise().sum());
}

// --- activations ---------------------------------------------------------------------------

std::string activation_name(Activation a) {
  switch (a) {
    case Activation::kRelu:
      return "relu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kTanh:
      return "tanh";
    case Activation::kSigmoid:
      return "sigmoid";
  }
  return "?";
}

template <typename T>
Index ActivationOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 1, 1);
  return in[0]->rows;
}

template <typename T>
void ActivationOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& x = in[0]->value();
  Matrix<T>& y = prepare(out, x.cols(), in[0]->seq_len);
  switch (activation_) {
    case Activation::kRelu:
      y = x.cwiseMax(T(0));
      break;
    case Activation::kGelu: {
      const T inv_sqrt2 = T(1) / std::sqrt(T(2));
      for (Index i = 0; i < x.size(); ++i) {
        const T v = x.data()[i];
        y.data()[i] = T(0.5) * v * (T(1) + std::erf(v * inv_sqrt2));
      }
      break;
    }
    case Activation::kTanh:
      y = x.array().tanh().matrix();
      break;
    case Activation::kSigmoid:
      y = (T(1) + (-x.array()).exp()).inverse().matrix();
      break;
  }
}

template <typename T>
void ActivationOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (!din[0]) return;
  const Matrix<T>& x = in[0]->value();
  const Matrix<T>& y = out.value();
  const Matrix<T>& dy = out.grad();
  switch (activation_) {
    case Activation::kRelu: {
      // A loop the compiler turns into masked blends (Eigen's select is not vectorised).
      const bool acc = din[0].accumulate;
      Matrix<T>& g = din[0].target(x.rows(), x.cols());
      T* __restrict gd = g.data();
      const T* __restrict xd = x.data();
      const T* __restrict dyd = dy.data();
      const Index n = x.size();
      if (!acc) {
        for (Index k = 0; k < n; ++k) gd[k] = xd[k] > T(0) ? dyd[k] : T(0);
      } else {
        for (Index k = 0; k < n; ++k) gd[k] += xd[k] > T(0) ? dyd[k] : T(0);
      }
      break;
    }
    case Activation::kGelu: {
      // d/dx x Φ(x) = Φ(x) + x φ(x).
      const T inv_sqrt2 = T(1) / std::sqrt(T(2));
      const T inv_sqrt_2pi = T(1) / std::sqrt(T(2) * std::numbers::pi_v<T>);
      Matrix<T>& g = din[0].zero_or_keep(x.rows(), x.cols());
      for (Index i = 0; i < x.size(); ++i) {
        const T v = x.data()[i];
        const T cdf = T(0.5) * (T(1) + std::erf(v * inv_sqrt2));
        const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * v * v);
        g.data()[i] += dy.data()[i] * (cdf + v * pdf);
      }
      break;
    }
    case Activation::kTanh:
      din[0].assign((dy.array() * (T(1) - y.array().square())).matrix());
      break;
    case Activation::kSigmoid:
      din[0].assign((dy.array() * y.array() * (T(1) - y.array())).matrix());
      break;
  }
}

// --- add -----------------------------------------------------------------------------------

template <typename T>
Index AddOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 2, 2);
  if (in[0]->rows != in[1]->rows) {
    bad_graph(name, "'" + in[0]->name + "' has " + std::to_string(in[0]->rows) + " rows, '" +
                        in[1]->name + "' " + std::to_string(in[1]->rows));
  }
  return in[0]->rows;
}

template <typename T>
void AddOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& a = in[0]->value();
  const Matrix<T>& b = in[1]->value();
  Matrix<T>& y = prepare(out, a.cols(), in[0]->seq_len);
  if (b.cols() == a.cols()) {
    y = a + b;
  } else {
    OPU_CHECK(b.cols() == 1, "graph node '" + out.name + "': '" + in[1]->name + "' has " +
                                 std::to_string(b.cols()) + " columns, want " +
                                 std::to_string(a.cols()) + " or 1");
    y = a.colwise() + b.col(0);
  }
}

template <typename T>
void AddOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  const Matrix<T>& dy = out.grad();
  if (din[0]) din[0].assign(dy);
  if (din[1]) {
    if (in[1]->value().cols() == dy.cols()) {
      din[1].assign(dy);
    } else {
      din[1].assign(dy.rowwise().sum());
    }
  }
}

// --- scale ---------------------------------------------------------------------------------

template <typename T>
Index ScaleOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 1, 1);
  return in[0]->rows;
}

template <typename T>
void ScaleOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& x = in[0]->value();
  prepare(out, x.cols(), in[0]->seq_len) = static_cast<T>(factor_) * x;
}

template <typename T>
void ScaleOp<T>::backward(Inputs /*in*/, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (din[0]) din[0].assign(static_cast<T>(factor_) * out.grad());
}

// --- dropout -------------------------------------------------------------------------------

template <typename T>
void dropout_mask(Matrix<T>& mask, double p, std::uint64_t seed, std::uint64_t step) {
  const CounterRng rng(mix64(seed ^ mix64(step)));
  const auto threshold = static_cast<std::uint32_t>(std::llround(p * 65536.0));
  const T keep = static_cast<T>(1.0 / (1.0 - p));
  const Index n = mask.size();
  T* m = mask.data();
  // One 64-bit draw gives four 16-bit uniforms: element j uses the 16-bit half-word j % 4 of
  // draw j / 4 (in memory order, little-endian: bits [16 (j % 4), 16 (j % 4) + 16)). Draws are
  // made a chunk at a time, then compared: two loops that vectorise.
  constexpr Index kChunk = 256;  // draws
  std::uint64_t draws[kChunk];
  std::uint16_t halves[4 * kChunk];
  for (Index first = 0; first < n; first += 4 * kChunk) {
    const Index count = std::min<Index>(kChunk, (n - first + 3) / 4);
    const auto base = static_cast<std::uint64_t>(first / 4);
    for (Index d = 0; d < count; ++d) draws[d] = rng.bits(base + static_cast<std::uint64_t>(d));
    std::memcpy(halves, draws, sizeof(draws));
    const Index end = std::min<Index>(n - first, 4 * count);
    T* __restrict out = m + first;
    for (Index j = 0; j < end; ++j) out[j] = halves[j] >= threshold ? keep : T(0);
  }
}

template <typename T>
DropoutOp<T>::DropoutOp(double p, std::uint64_t seed) : p_(p), seed_(seed) {
  if (!(p >= 0.0 && p < 1.0)) {
    throw StatusError(invalid_argument("dropout: p is " + std::to_string(p) + ", want in [0, 1)"));
  }
}

template <typename T>
Index DropoutOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 1, 1);
  return in[0]->rows;
}

template <typename T>
void DropoutOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& context) {
  const Matrix<T>& x = in[0]->value();
  Matrix<T>& y = prepare(out, x.cols(), in[0]->seq_len);
  active_ = context.training && p_ > 0.0;
  if (!active_) {
    y = x;
    return;
  }
  resize_to(mask_, x.rows(), x.cols());
  dropout_mask(mask_, p_, seed_, context.step);
  y = x.cwiseProduct(mask_);
}

template <typename T>
void DropoutOp<T>::backward(Inputs /*in*/, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (!din[0]) return;
  if (active_) {
    din[0].assign(out.grad().cwiseProduct(mask_));
  } else {
    din[0].assign(out.grad());
  }
}

// --- concat and slice ----------------------------------------------------------------------

template <typename T>
Index ConcatOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 1, 64);
  Index rows = 0;
  for (const Node<T>* n : in) rows += n->rows;
  return rows;
}

template <typename T>
void ConcatOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Index cols = in[0]->cols();
  Matrix<T>& y = prepare(out, cols, in[0]->seq_len);
  Index offset = 0;
  for (const Node<T>* n : in) {
    expect_cols(out, *n, cols);
    y.middleRows(offset, n->rows) = n->value();
    offset += n->rows;
  }
}

template <typename T>
void ConcatOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  Index offset = 0;
  for (std::size_t k = 0; k < in.size(); ++k) {
    if (din[k]) din[k].assign(out.grad().middleRows(offset, in[k]->rows));
    offset += in[k]->rows;
  }
}

template <typename T>
Index SliceOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 1, 1);
  if (!(begin_ >= 0 && begin_ < end_ && end_ <= in[0]->rows)) {
    bad_graph(name, "rows [" + std::to_string(begin_) + ", " + std::to_string(end_) + ") of '" +
                        in[0]->name + "', which has " + std::to_string(in[0]->rows));
  }
  return end_ - begin_;
}

template <typename T>
void SliceOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& /*context*/) {
  const Matrix<T>& x = in[0]->value();
  prepare(out, x.cols(), in[0]->seq_len) = x.middleRows(begin_, end_ - begin_);
}

template <typename T>
void SliceOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (!din[0]) return;
  Matrix<T>& g = din[0].zero_or_keep(in[0]->rows, out.grad().cols());
  g.middleRows(begin_, end_ - begin_) += out.grad();
}

// --- builders ------------------------------------------------------------------------------

template <typename T>
NodeId linear(Graph<T>& g, NodeId x, NodeId weight, NodeId bias, std::string name) {
  std::vector<NodeId> inputs{x, weight};
  if (bias != kNoNode) inputs.push_back(bias);
  return g.apply(std::make_unique<LinearOp<T>>(), std::move(inputs), std::move(name));
}

template <typename T>
NodeId activation(Graph<T>& g, Activation a, NodeId x, std::string name) {
  return g.apply(std::make_unique<ActivationOp<T>>(a), {x}, std::move(name));
}

template <typename T>
NodeId add(Graph<T>& g, NodeId a, NodeId b, std::string name) {
  return g.apply(std::make_unique<AddOp<T>>(), {a, b}, std::move(name));
}

template <typename T>
NodeId scale(Graph<T>& g, NodeId x, double factor, std::string name) {
  return g.apply(std::make_unique<ScaleOp<T>>(factor), {x}, std::move(name));
}

template <typename T>
NodeId dropout(Graph<T>& g, NodeId x, double p, std::uint64_t seed, std::string name) {
  if (p == 0.0) return x;
  return g.apply(std::make_unique<DropoutOp<T>>(p, seed), {x}, std::move(name));
}

template <typename T>
NodeId concat(Graph<T>& g, std::vector<NodeId> parts, std::string name) {
  return g.apply(std::make_unique<ConcatOp<T>>(), std::move(parts), std::move(name));
}

template <typename T>
NodeId slice(Graph<T>& g, NodeId x, Index begin, Index end, std::string name) {
  return g.apply(std::make_unique<SliceOp<T>>(begin, end), {x}, std::move(name));
}

#define OPU_GRAPH_DENSE(T)                                                           \
  template class LinearOp<T>;                                                        \
  template class ActivationOp<T>;                                                    \
  template class AddOp<T>;                                                           \
  template class ScaleOp<T>;                                                         \
  template class DropoutOp<T>;                                                       \
  template class ConcatOp<T>;                                                        \
  template class SliceOp<T>;                                                         \
  template void dropout_mask<T>(Matrix<T>&, double, std::uint64_t, std::uint64_t);   \
  template NodeId linear<T>(Graph<T>&, NodeId, NodeId, NodeId, std::string);         \
  template NodeId activation<T>(Graph<T>&, Activation, NodeId, std::string);         \
  template NodeId add<T>(Graph<T>&, NodeId, NodeId, std::string);                    \
  template NodeId scale<T>(Graph<T>&, NodeId, double, std::string);                  \
  template NodeId dropout<T>(Graph<T>&, NodeId, double, std::uint64_t, std::string); \
  template NodeId concat<T>(Graph<T>&, std::vector<NodeId>, std::string);            \
  template NodeId slice<T>(Graph<T>&, NodeId, Index, Index, std::string);
OPU_GRAPH_DENSE(float)
OPU_GRAPH_DENSE(double)
#undef OPU_GRAPH_DENSE

}  // namespace opu::trainer::graph
