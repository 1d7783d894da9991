#include "trainer/graph/ops_attention.h"

#include <cmath>
#include <memory>
#include <string>

#include "gemm.h"
#include "op_support.h"
#include "trainer/graph/ops_dense.h"

namespace opu::trainer::graph {
using detail::bad_graph;
using detail::expect_inputs;
using detail::prepare;

template <typename T>
AttentionOp<T>::AttentionOp(Index heads, bool causal, double dropout, std::uint64_t seed)
    : heads_(heads), causal_(causal), p_(dropout), seed_(seed) {
  if (heads < 1) {
    throw StatusError(
        invalid_argument("attention: " + std::to_string(heads) + " heads, want >= 1"));
  }
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw StatusError(
        invalid_argument("attention: dropout " + std::to_string(dropout) + ", want in [0, 1)"));
  }
}

template <typename T>
Index AttentionOp<T>::output_rows(const std::string& name, Inputs in) const {
  expect_inputs(name, in, 1, 1);
  const Index rows = in[0]->rows;
  if (rows % 3 != 0 || (rows / 3) % heads_ != 0) {
    bad_graph(name, "'" + in[0]->name + "' has " + std::to_string(rows) +
                        " rows, want 3 d with d a multiple of the " + std::to_string(heads_) +
                        " heads");
  }
  return rows / 3;
}

template <typename T>
void AttentionOp<T>::forward(Inputs in, Node<T>& out, const ForwardContext& context) {
  const Matrix<T>& qkv = in[0]->value();
  const Index d = out.rows;
  const Index dh = d / heads_;
  const Index len = in[0]->seq_len;
  const Index sequences = in[0]->sequences();
  const T scale = T(1) / std::sqrt(static_cast<T>(dh));
  Matrix<T>& y = prepare(out, qkv.cols(), len);
  resize_to(probs_, len, len * sequences * heads_);
  active_ = context.training && p_ > 0.0;
  if (active_) {
    resize_to(mask_, len, len * sequences * heads_);
    dropout_mask(mask_, p_, seed_, context.step);
    resize_to(dropped_, len, len);
  }
  for (Index b = 0; b < sequences; ++b) {
    for (Index h = 0; h < heads_; ++h) {
      const auto q = qkv.block(h * dh, b * len, dh, len);
      const auto k = qkv.block(d + h * dh, b * len, dh, len);
      const auto v = qkv.block(2 * d + h * dh, b * len, dh, len);
      auto p = probs_.middleCols((b * heads_ + h) * len, len);
      detail::gemm(k, true, q, false, p, scale, T(0));  // S = Kᵀ Q / sqrt(dh)
      for (Index t = 0; t < len; ++t) {
        const Index valid = causal_ ? t + 1 : len;
        auto col = p.col(t).head(valid).array();
        const T top = col.maxCoeff();
        col = (col - top).exp();
        col /= col.sum();
        if (valid < len) p.col(t).tail(len - valid).setZero();
      }
      auto o = y.block(h * dh, b * len, dh, len);
      if (active_) {
        dropped_ = p.cwiseProduct(mask_.middleCols((b * heads_ + h) * len, len));
        detail::gemm(v, false, dropped_, false, o, T(1), T(0));
      } else {
        detail::gemm(v, false, p, false, o, T(1), T(0));
      }
    }
  }
}

template <typename T>
void AttentionOp<T>::backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) {
  if (!din[0]) return;
  const Matrix<T>& qkv = in[0]->value();
  const Matrix<T>& dy = out.grad();
  const Index d = out.rows;
  const Index dh = d / heads_;
  const Index len = in[0]->seq_len;
  const Index sequences = in[0]->sequences();
  const T scale = T(1) / std::sqrt(static_cast<T>(dh));
  // Written straight into the input's gradient on the first write, through scratch otherwise.
  Matrix<T>& dqkv = din[0].accumulate ? dqkv_ : din[0].target(qkv.rows(), qkv.cols());
  resize_to(dqkv, qkv.rows(), qkv.cols());
  resize_to(dp_, len, len);
  for (Index b = 0; b < sequences; ++b) {
    for (Index h = 0; h < heads_; ++h) {
      const auto q = qkv.block(h * dh, b * len, dh, len);
      const auto k = qkv.block(d + h * dh, b * len, dh, len);
      const auto v = qkv.block(2 * d + h * dh, b * len, dh, len);
      const auto p = probs_.middleCols((b * heads_ + h) * len, len);
      const auto d_o = dy.block(h * dh, b * len, dh, len);
      auto dq = dqkv.block(h * dh, b * len, dh, len);
      auto dk = dqkv.block(d + h * dh, b * len, dh, len);
      auto dv = dqkv.block(2 * d + h * dh, b * len, dh, len);
      detail::gemm(v, true, d_o, false, dp_, T(1), T(0));  // dP = Vᵀ dO
      if (active_) {
        const auto mask = mask_.middleCols((b * heads_ + h) * len, len);
        dropped_ = p.cwiseProduct(mask);
        detail::gemm(d_o, false, dropped_, true, dv, T(1), T(0));
        dp_.array() *= mask.array();
      } else {
        detail::gemm(d_o, false, p, true, dv, T(1), T(0));  // dV = dO Pᵀ
      }
      // dS = P ⊙ (dP - <P, dP> per column), scaled; masked entries have P = 0.
      for (Index t = 0; t < len; ++t) {
        const Index valid = causal_ ? t + 1 : len;
        auto ds = dp_.col(t).head(valid).array();
        const auto pc = p.col(t).head(valid).array();
        const T dot = (pc * ds).sum();
        ds = scale * pc * (ds - dot);
        if (valid < len) dp_.col(t).tail(len - valid).setZero();
      }
      detail::gemm(k, false, dp_, false, dq, T(1), T(0));  // dQ = K dS
      detail::gemm(q, false, dp_, true, dk, T(1), T(0));   // dK = Q dSᵀ
    }
  }
  if (din[0].accumulate) *din[0].m += dqkv_;
}

template <typename T>
NodeId attention(Graph<T>& g, NodeId qkv, Index heads, bool causal, double dropout,
                 std::uint64_t seed, std::string name) {
  return g.apply(std::make_unique<AttentionOp<T>>(heads, causal, dropout, seed), {qkv},
                 std::move(name));
}

template class AttentionOp<float>;
template class AttentionOp<double>;
template NodeId attention<float>(Graph<float>&, NodeId, Index, bool, double, std::uint64_t,
                                 std::string);
template NodeId attention<double>(Graph<double>&, NodeId, Index, bool, double, std::uint64_t,
                                  std::string);

}  // namespace opu::trainer::graph
