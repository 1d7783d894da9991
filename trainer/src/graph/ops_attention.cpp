#include "trainer/graph/ops_attention.h"

#include <cmath>
#include <memory>
#include <string>

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
      p.noalias() = k.transpose() * q;
      for (Index t = 0; t < len; ++t) {
        const Index valid = causal_ ? t + 1 : len;
        auto col = p.col(t).head(valid).array();
        const T top = col.maxCoeff();
        col = ((col - top) * scale).exp();
        col /= col.sum();
        if (valid < len) p.col(t).tail(len - valid).setZero();
      }
      auto o = y.block(h * dh, b * len, dh, len);
      if (active_) {
        dropped_ = p.cwiseProduct(mask_.middleCols((b * heads_ + h) * len, len));
        o.noalias() = v * dropped_;
      } else {
        o.noalias() = v * p;
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
  resize_to(dqkv_, qkv.rows(), qkv.cols());
  resize_to(dp_, len, len);
  for (Index b = 0; b < sequences; ++b) {
    for (Index h = 0; h < heads_; ++h) {
      const auto q = qkv.block(h * dh, b * len, dh, len);
      const auto k = qkv.block(d + h * dh, b * len, dh, len);
      const auto v = qkv.block(2 * d + h * dh, b * len, dh, len);
      const auto p = probs_.middleCols((b * heads_ + h) * len, len);
      const auto d_o = dy.block(h * dh, b * len, dh, len);
      auto dq = dqkv_.block(h * dh, b * len, dh, len);
      auto dk = dqkv_.block(d + h * dh, b * len, dh, len);
      auto dv = dqkv_.block(2 * d + h * dh, b * len, dh, len);
      dp_.noalias() = v.transpose() * d_o;
      if (active_) {
        const auto mask = mask_.middleCols((b * heads_ + h) * len, len);
        dropped_ = p.cwiseProduct(mask);
        dv.noalias() = d_o * dropped_.transpose();
        dp_.array() *= mask.array();
      } else {
        dv.noalias() = d_o * p.transpose();
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
      dq.noalias() = k * dp_;
      dk.noalias() = q * dp_.transpose();
    }
  }
  din[0].assign(dqkv_);
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
