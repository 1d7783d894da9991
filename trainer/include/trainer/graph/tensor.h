// Tensors of the graph engine (docs/trainer.md, "Models as graphs").
//
// One convention everywhere, the trainer's: a tensor is `rows` features x `cols` positions, one
// position per column, column-major (an Eigen matrix). The positions of a batch of sequences are
// grouped sequence after sequence: column b * seq_len + t is position t of sequence b, and a node
// records seq_len next to its value. Ops that work per sequence (attention, positions) read
// seq_len; every other op works per column, so a batch of sequences needs no other storage than a
// batch of samples (seq_len 1). Integer tensors (token ids, class targets) are index nodes: one
// int32 per column.
//
// Everything is a template on the scalar type: float for training, double for the gradient
// checks against finite differences.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <string>

#include "trainer/param.h"

namespace opu::trainer::graph {

using Index = Eigen::Index;
template <typename T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;
template <typename T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Identifies a node of one graph (its position in insertion = topological order).
using NodeId = std::int32_t;
inline constexpr NodeId kNoNode = -1;

/// Resizes `m` when its shape differs (Eigen is built with EIGEN_NO_AUTOMATIC_RESIZING, and a
/// buffer of the right shape is reused as it is: a warm step allocates nothing).
template <typename Derived>
void resize_to(Eigen::PlainObjectBase<Derived>& m, Index rows, Index cols) {
  if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
}

/// A trainable tensor in double precision (gradient checks); Param (trainer/param.h) is the float one
/// that the optimisers and checkpoints use.
struct DoubleParam {
  std::string name;
  Eigen::MatrixXd value;
  Eigen::MatrixXd grad;
  bool decay = true;
};

template <typename T>
struct ParamFor;
template <>
struct ParamFor<float> {
  using type = Param;
};
template <>
struct ParamFor<double> {
  using type = DoubleParam;
};
/// The parameter type of a graph of scalar T.
template <typename T>
using ParamOf = typename ParamFor<T>::type;

/// Where an op's backward writes the gradient of one input. Reverse mode sums the contributions
/// of every consumer of a node: the first one to arrive overwrites (no zeroing pass), later ones
/// add. An empty slot means the input needs no gradient (data, or nothing trainable below it).
template <typename T>
struct GradSlot {
  Matrix<T>* m = nullptr;
  bool accumulate = false;

  explicit operator bool() const { return m != nullptr; }
  /// grad (+)= e, resizing on the first write.
  template <typename Expr>
  void assign(const Expr& e) {
    if (accumulate) {
      m->noalias() += e;
    } else {
      resize_to(*m, e.rows(), e.cols());
      m->noalias() = e;
    }
  }
  /// The buffer, shaped on the first write (its content is then to be overwritten) and kept as
  /// it is on later ones (to be added to): `accumulate` says which.
  Matrix<T>& target(Index rows, Index cols) {
    if (!accumulate) resize_to(*m, rows, cols);
    return *m;
  }
  /// The buffer for a hand-written accumulation: zeroed and shaped on the first write, kept
  /// (to add into) on later ones.
  Matrix<T>& zero_or_keep(Index rows, Index cols) {
    if (!accumulate) {
      resize_to(*m, rows, cols);
      m->setZero();
    }
    return *m;
  }
};

}  // namespace opu::trainer::graph
