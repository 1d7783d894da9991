// A model as a static graph of operations (docs/trainer.md, "Models as graphs").
//
// A model builder adds nodes once; their insertion order is a topological order (an op's inputs
// exist before it). Nodes are data inputs (float, or int32 ids), constants, parameters and ops.
// forward() runs the ops in order; reverse mode runs them backwards (run_backward()), each op
// writing the exact gradient of its inputs (summed over consumers: the first contribution
// overwrites, the others add, so no zeroing pass is needed). Every node keeps its value, its
// gradient and its op's scratch between steps, resized only when the batch shape changes: a warm
// step allocates nothing.
//
// Feedback points (DFA) are marks on nodes: feedback_point(node, name). The graph itself ignores
// them; GraphLearner (graph/learner.h) decides from them which gradients flow where.
//
// Thread safety: none; a graph belongs to one thread.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "trainer/graph/tensor.h"
#include "trainer/param.h"

namespace opu::trainer::graph {

enum class NodeKind {
  kInput,       // float data, set by the caller (requires_grad: gradient checks)
  kIndexInput,  // int32 ids (tokens, targets), one per column
  kConstant,    // a fixed tensor (sinusoidal positions)
  kParameter,   // a trainable tensor (ParamOf<T>, owned by the graph)
  kOp,          // the output of an operation
};

template <typename T>
class Op;

template <typename T>
struct Node {
  std::string name;
  NodeKind kind = NodeKind::kOp;
  Index rows = 0;     // fixed when the node is added (index nodes: 1)
  Index seq_len = 1;  // positions per sequence of the current value (cols % seq_len == 0)
  std::vector<NodeId> inputs;
  std::unique_ptr<Op<T>> op;      // kOp
  ParamOf<T>* param = nullptr;    // kParameter
  bool requires_grad = false;     // kInput
  Matrix<T> data;                 // the value, for every kind but parameters
  Matrix<T> gradient;             // dL/d(value), for every kind but parameters
  std::vector<std::int32_t> ids;  // kIndexInput

  bool is_index() const { return kind == NodeKind::kIndexInput; }
  const Matrix<T>& value() const { return param != nullptr ? param->value : data; }
  Matrix<T>& value() { return param != nullptr ? param->value : data; }
  const Matrix<T>& grad() const { return param != nullptr ? param->grad : gradient; }
  Matrix<T>& grad() { return param != nullptr ? param->grad : gradient; }
  Index cols() const { return is_index() ? static_cast<Index>(ids.size()) : value().cols(); }
  /// Sequences in the current value (cols / seq_len).
  Index sequences() const { return seq_len > 0 ? cols() / seq_len : 0; }
};

/// An operation: explicit forward, exact backward (checked against finite differences in double
/// precision by tests/trainer/graph_ops_test.cpp). An op instance belongs to one node and keeps
/// that node's scratch (softmax probabilities, normalisation statistics, dropout masks).
template <typename T>
class Op {
 public:
  using Inputs = std::span<const Node<T>* const>;
  virtual ~Op() = default;
  Op() = default;
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;

  /// Short kind name ("linear", "layer_norm", ...).
  virtual std::string kind() const = 0;
  /// Rows of the output of node `name` given its inputs (kinds and rows known, columns not yet).
  /// Throws StatusError (INVALID_ARGUMENT naming the node) on a mismatch.
  virtual Index output_rows(const std::string& name, Inputs in) const = 0;
  /// Computes out.value() (and out.seq_len) from the inputs' values.
  virtual void forward(Inputs in, Node<T>& out, const ForwardContext& context) = 0;
  /// Given out.grad() = dL/d(out) and the values of the last forward, writes dL/d(input k) into
  /// din[k] for every non-empty slot (index inputs never get one), in increasing k (a node that
  /// is an input twice gets two slots on one buffer, the second one accumulating).
  virtual void backward(Inputs in, const Node<T>& out, std::span<GradSlot<T>> din) = 0;
};

/// A node marked as a DFA feedback point.
struct FeedbackPointRef {
  std::string name;
  NodeId node = kNoNode;
};

/// Which nodes one reverse sweep runs and feeds (built by GraphLearner or a test).
struct BackwardPass {
  /// Per node: its op's backward runs (when some gradient reached it).
  std::vector<std::uint8_t> run;
  /// Per node: its consumers send it their contribution to its gradient.
  std::vector<std::uint8_t> receives;
};

template <typename T>
class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph(Graph&&) = default;
  Graph& operator=(Graph&&) = default;

  // --- building ------------------------------------------------------------------------------

  /// A float data input of `rows` features; `requires_grad` asks reverse mode for its gradient.
  NodeId input(std::string name, Index rows, bool requires_grad = false);
  /// An int32 input (one id per column).
  NodeId index_input(std::string name);
  /// A fixed tensor.
  NodeId constant(std::string name, Matrix<T> value);
  /// A trainable tensor; `decay`: weight decay applies to it. Names are unique in a graph (they
  /// key optimiser state and checkpoints).
  NodeId parameter(std::string name, Matrix<T> value, bool decay = true);
  /// An op on `inputs` (existing nodes). An empty name becomes "<kind><id>".
  NodeId apply(std::unique_ptr<Op<T>> op, std::vector<NodeId> inputs, std::string name = {});
  /// Marks `node`'s output as a DFA feedback point (any float node; names unique).
  void feedback_point(NodeId node, std::string name);

  // --- inspection ----------------------------------------------------------------------------

  NodeId size() const { return static_cast<NodeId>(nodes_.size()); }
  const Node<T>& node(NodeId id) const { return *nodes_[static_cast<std::size_t>(id)]; }
  Node<T>& node(NodeId id) { return *nodes_[static_cast<std::size_t>(id)]; }
  /// The node named `name`, kNoNode when none.
  NodeId find(const std::string& name) const;
  const std::vector<FeedbackPointRef>& feedback_points() const { return points_; }
  /// Index into feedback_points() of the point on `node`, -1 when it is none.
  int point_index(NodeId node) const;
  /// Every parameter, in insertion order.
  std::vector<ParamOf<T>*> params();
  std::int64_t num_parameters() const;

  // --- data ----------------------------------------------------------------------------------

  /// Copies a float input's value.
  void set_input(NodeId id, const Eigen::Ref<const Matrix<T>>& value, Index seq_len = 1);
  /// A float input's buffer, shaped rows x cols, to be filled in place.
  Matrix<T>& input_buffer(NodeId id, Index cols, Index seq_len = 1);
  /// Copies an index input's ids.
  void set_ids(NodeId id, std::span<const std::int32_t> ids, Index seq_len = 1);
  /// An index input's ids, resized to `cols`, to be filled in place.
  std::vector<std::int32_t>& ids_buffer(NodeId id, Index cols, Index seq_len = 1);

  // --- passes --------------------------------------------------------------------------------

  /// Runs the ops of nodes [0, last] in order (every node when last is kNoNode).
  void forward(const ForwardContext& context, NodeId last = kNoNode);
  const Matrix<T>& value(NodeId id) const { return node(id).value(); }

  /// Starts a reverse sweep: every gradient becomes "not written yet".
  void clear_gradients();
  /// Sets dL/d(node) (overwriting) and marks it written.
  void seed(NodeId id, const Eigen::Ref<const Matrix<T>>& gradient);
  /// The gradient buffer of `id`, marked written; the caller shapes and fills it.
  Matrix<T>& seed_buffer(NodeId id);
  bool has_gradient(NodeId id) const { return written_[static_cast<std::size_t>(id)] != 0; }
  const Matrix<T>& gradient(NodeId id) const { return node(id).grad(); }
  /// Runs, from the last node down to the first, the backward of every node that `pass` runs
  /// and that has a gradient, feeding the inputs that `pass` says receive one.
  void run_backward(const BackwardPass& pass);

  /// Per node: 1 when it is a target or some input of it leads to one (through inputs,
  /// transitively): the nodes whose gradient matters for the targets' gradients.
  std::vector<std::uint8_t> leads_to(const std::vector<std::uint8_t>& targets) const;
  /// Per node: 1 when `to` is reachable from it through consumers (the node itself included).
  std::vector<std::uint8_t> reaches(NodeId to) const;
  /// Per node: its consumers (nodes that take it as an input), in order.
  std::vector<std::vector<NodeId>> consumers() const;

 private:
  NodeId add_node(std::unique_ptr<Node<T>> node);
  void check_id(NodeId id, const char* what) const;

  std::vector<std::unique_ptr<Node<T>>> nodes_;
  std::unordered_map<std::string, NodeId> names_;
  std::deque<ParamOf<T>> params_;  // stable addresses
  std::vector<FeedbackPointRef> points_;
  std::vector<std::uint8_t> written_;  // per node: gradient written in this sweep
  std::vector<const Node<T>*> in_scratch_;
  std::vector<GradSlot<T>> slot_scratch_;
};

extern template class Graph<float>;
extern template class Graph<double>;

}  // namespace opu::trainer::graph
