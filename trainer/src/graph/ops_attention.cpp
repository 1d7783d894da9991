#include "trainer/graph/ops_attention.h"

#include <cmath>
#include <memory>
#include <string>

#include "gemm.h"
#include "op_support.h"
#include "trainer/graph/ops_dense.h"

namespace opu::trainer::graph {
namespace {
// Queries per causal block: 32 of 128 positions skip 37.5% of the score and value products.
constexpr Index kQueryBlock = 32;
}  // namespace
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
  const Index block = causal_ ? std::min<Index>(kQueryBlock, len) : len;
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
      // S = Kᵀ Q / sqrt(dh), by blocks of queries: under the causal mask a block of queries
      // [t0, t1) needs the keys [0, t1) only (rows beyond are never read: the softmax zeroes them).
      for (Index t0 = 0; t0 < len; t0 += block) {
        const Index nq = std::min(block, len - t0);
        const Index nk = causal_ ? t0 + nq : len;
        detail::gemm(k.leftCols(nk), true, q.middleCols(t0, nq), false, p.block(0, t0, nk, nq),
                     scale, T(0));
      }
      for (Index t = 0; t < len; ++t) {
        const Index valid = causal_ ? t + 1 : len;
        auto col = p.col(t).head(valid).array();
        const T top = col.maxCoeff();
        col = (col - top).exp();
        col /= col.sum();
        if (valid < len) p.col(t).tail(len - valid).setZero();
      }
      if (active_) dropped_ = p.cwiseProduct(mask_.middleCols((b * heads_ + h) * len, len));
      const Eigen::Ref<const Matrix<T>, 0, Eigen::OuterStride<>> weights =
          active_ ? Eigen::Ref<const Matrix<T>, 0, Eigen::OuterStride<>>(dropped_)
                  : Eigen::Ref<const Matrix<T>, 0, Eigen::OuterStride<>>(p);
      auto o = y.block(h * dh, b * len, dh, len);
      for (Index t0 = 0; t0 < len; t0 += block) {  // O = V P, the same blocks
        const Index nq = std::min(block, len - t0);
        const Index nk = causal_ ? t0 + nq : len;
        detail::gemm(v.leftCols(nk), false, weights.block(0, t0, nk, nq), false,
                     o.middleCols(t0, nq), T(1), T(0));
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
  const Index block = causal_ ? std::min<Index>(kQueryBlock, len) : len;
  const Index last_block = (len - 1) / block * block;
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
      if (active_) dropped_ = p.cwiseProduct(mask_.middleCols((b * heads_ + h) * len, len));
      const Eigen::Ref<const Matrix<T>, 0, Eigen::OuterStride<>> weights =
          active_ ? Eigen::Ref<const Matrix<T>, 0, Eigen::OuterStride<>>(dropped_)
                  : Eigen::Ref<const Matrix<T>, 0, Eigen::OuterStride<>>(p);
      // dP = Vᵀ dO and dV = dO Pᵀ by the forward's blocks; the last block of queries sees every
      // key, so it writes dV (beta 0) and the earlier ones add to their keys.
      for (Index t0 = last_block; t0 >= 0; t0 -= block) {
        const Index nq = std::min(block, len - t0);
        const Index nk = causal_ ? t0 + nq : len;
        detail::gemm(v.leftCols(nk), true, d_o.middleCols(t0, nq), false, dp_.block(0, t0, nk, nq),
                     T(1), T(0));
        detail::gemm(d_o.middleCols(t0, nq), false, weights.block(0, t0, nk, nq), true,
                     dv.leftCols(nk), T(1), t0 == last_block ? T(0) : T(1));
      }
      // dS = P ⊙ (dP ⊙ mask - <P, dP ⊙ mask> per column), scaled; entries above the diagonal
      // (never computed under the causal mask) are zeroed.
      for (Index t = 0; t < len; ++t) {
        const Index valid = causal_ ? t + 1 : len;
        auto ds = dp_.col(t).head(valid).array();
        if (active_) ds *= mask_.col((b * heads_ + h) * len + t).head(valid).array();
        const auto pc = p.col(t).head(valid).array();
        const T dot = (pc * ds).sum();
        ds = scale * pc * (ds - dot);
        if (valid < len) dp_.col(t).tail(len - valid).setZero();
      }
      // dQ = K dS per block of queries; dK = Q dSᵀ accumulated like dV.
      for (Index t0 = last_block; t0 >= 0; t0 -= block) {
        const Index nq = std::min(block, len - t0);
        const Index nk = causal_ ? t0 + nq : len;
        detail::gemm(k.leftCols(nk), false, dp_.block(0, t0, nk, nq), false, dq.middleCols(t0, nq),
                     T(1), T(0));
        detail::gemm(q.middleCols(t0, nq), false, dp_.block(0, t0, nk, nq), true, dk.leftCols(nk),
                     T(1), t0 == last_block ? T(0) : T(1));
      }
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
