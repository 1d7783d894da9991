// Multi-head softmax attention over each sequence of a batch, with an optional causal mask.
#pragma once

#include <cstdint>
#include <string>

#include "trainer/graph/graph.h"

namespace opu::trainer::graph {

/// Scaled dot-product self-attention with H heads, per sequence. Input: the stacked projections
/// qkv (3d x N: q in rows [0, d), k in [d, 2d), v in [2d, 3d); head h uses rows [h d/H, (h+1) d/H)
/// of each, as PyTorch's nn.MultiheadAttention), N = seq_len x sequences. Output: the heads'
/// results stacked (d x N), to be followed by the output projection.
///
/// For sequence b and head h, with Q, K, V the dh x T blocks (dh = d/H, T = seq_len):
/// S = Kᵀ Q / sqrt(dh) (T x T: column t holds query t's scores over the keys), with keys s > t
/// masked when causal; P = softmax over each column; optional dropout on P (as PyTorch's
/// attention dropout); O = V P. P (and the dropout mask) are kept for backward:
/// dV = dO Pᵀ, dP = Vᵀ dO, dS = P ⊙ (dP - 1 (1ᵀ (P ⊙ dP))) / sqrt(dh), dQ = K dS, dK = Q dSᵀ.
template <typename T>
class AttentionOp final : public Op<T> {
 public:
  using typename Op<T>::Inputs;
  AttentionOp(Index heads, bool causal, double dropout, std::uint64_t seed);
  std::string kind() const override { return causal_ ? "causal_attention" : "attention"; }
  Index output_rows(const std::string& name, Inputs in) const override;
  void forward(Inputs in, Node<T>& out, const ForwardContext& context) override;
  void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) override;

 private:
  Index heads_;
  bool causal_;
  double p_;
  std::uint64_t seed_;
  bool active_ = false;  // dropout on in the last forward
  Matrix<T> probs_;      // T x (T * sequences * heads): P of (b, h) at column (b H + h) T
  Matrix<T> mask_;       // dropout mask, same layout
  Matrix<T> dropped_;    // P ⊙ mask of one (b, h)
  Matrix<T> dp_;         // T x T backward scratch
  Matrix<T> dqkv_;       // 3d x N backward scratch
};

/// Attention of `heads` heads on the stacked projections `qkv`.
template <typename T>
NodeId attention(Graph<T>& g, NodeId qkv, Index heads, bool causal, double dropout = 0.0,
                 std::uint64_t seed = 0, std::string name = {});

}  // namespace opu::trainer::graph
