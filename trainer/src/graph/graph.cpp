#include "trainer/graph/graph.h"

#include <string>
#include <utility>

#include "opu_sim/status.h"

namespace opu::trainer::graph {

template <typename T>
void Graph<T>::check_id(NodeId id, const char* what) const {
  if (id < 0 || id >= size()) {
    throw StatusError(invalid_argument(std::string(what) + ": node " + std::to_string(id) +
                                       " does not exist (graph of " + std::to_string(size()) +
                                       " nodes)"));
  }
}

template <typename T>
NodeId Graph<T>::add_node(std::unique_ptr<Node<T>> node) {
  if (!node->name.empty() && find(node->name) != kNoNode) {
    throw StatusError(invalid_argument("graph: a node is already named '" + node->name + "'"));
  }
  if (!node->name.empty()) names_.emplace(node->name, size());
  nodes_.push_back(std::move(node));
  written_.push_back(0);
  return size() - 1;
}

template <typename T>
NodeId Graph<T>::find(const std::string& name) const {
  const auto it = names_.find(name);
  return it == names_.end() ? kNoNode : it->second;
}

template <typename T>
NodeId Graph<T>::input(std::string name, Index rows, bool requires_grad) {
  OPU_CHECK(rows > 0, "graph input '" + name + "': rows must be positive");
  auto n = std::make_unique<Node<T>>();
  n->name = std::move(name);
  n->kind = NodeKind::kInput;
  n->rows = rows;
  n->requires_grad = requires_grad;
  n->data.resize(rows, 0);
  return add_node(std::move(n));
}

template <typename T>
NodeId Graph<T>::index_input(std::string name) {
  auto n = std::make_unique<Node<T>>();
  n->name = std::move(name);
  n->kind = NodeKind::kIndexInput;
  n->rows = 1;
  return add_node(std::move(n));
}

template <typename T>
NodeId Graph<T>::constant(std::string name, Matrix<T> value) {
  auto n = std::make_unique<Node<T>>();
  n->name = std::move(name);
  n->kind = NodeKind::kConstant;
  n->rows = value.rows();
  n->data = std::move(value);
  return add_node(std::move(n));
}

template <typename T>
NodeId Graph<T>::parameter(std::string name, Matrix<T> value, bool decay) {
  OPU_CHECK(!name.empty(), "graph: parameters need a name");
  auto n = std::make_unique<Node<T>>();
  n->name = name;
  n->kind = NodeKind::kParameter;
  n->rows = value.rows();
  ParamOf<T>& p = params_.emplace_back();
  p.name = std::move(name);
  p.grad = Matrix<T>::Zero(value.rows(), value.cols());
  p.value = std::move(value);
  p.decay = decay;
  n->param = &p;
  return add_node(std::move(n));
}

template <typename T>
NodeId Graph<T>::apply(std::unique_ptr<Op<T>> op, std::vector<NodeId> inputs, std::string name) {
  OPU_CHECK(op != nullptr, "graph: null op");
  for (NodeId i : inputs) check_id(i, ("graph: input of " + op->kind()).c_str());
  if (name.empty()) name = op->kind() + std::to_string(size());
  std::vector<const Node<T>*> in;
  in.reserve(inputs.size());
  for (NodeId i : inputs) in.push_back(&node(i));
  auto n = std::make_unique<Node<T>>();
  n->rows = op->output_rows(name, in);
  n->name = std::move(name);
  n->kind = NodeKind::kOp;
  n->inputs = std::move(inputs);
  n->op = std::move(op);
  return add_node(std::move(n));
}

template <typename T>
void Graph<T>::feedback_point(NodeId id, std::string name) {
  check_id(id, "feedback_point");
  if (node(id).is_index()) {
    throw StatusError(invalid_argument("feedback point '" + name + "': node '" + node(id).name +
                                       "' holds ids, want a float tensor"));
  }
  for (const FeedbackPointRef& p : points_) {
    if (p.name == name || p.node == id) {
      throw StatusError(invalid_argument("feedback point '" + name + "' on node '" + node(id).name +
                                         "': the name or the node is taken by '" + p.name + "'"));
    }
  }
  points_.push_back({std::move(name), id});
}

template <typename T>
int Graph<T>::point_index(NodeId id) const {
  for (std::size_t k = 0; k < points_.size(); ++k) {
    if (points_[k].node == id) return static_cast<int>(k);
  }
  return -1;
}

template <typename T>
std::vector<ParamOf<T>*> Graph<T>::params() {
  std::vector<ParamOf<T>*> out;
  out.reserve(params_.size());
  for (ParamOf<T>& p : params_) out.push_back(&p);
  return out;
}

template <typename T>
std::int64_t Graph<T>::num_parameters() const {
  std::int64_t n = 0;
  for (const ParamOf<T>& p : params_) n += p.value.size();
  return n;
}

template <typename T>
void Graph<T>::set_input(NodeId id, const Eigen::Ref<const Matrix<T>>& value, Index seq_len) {
  Matrix<T>& buffer = input_buffer(id, value.cols(), seq_len);
  OPU_CHECK(value.rows() == buffer.rows(), "graph input '" + node(id).name +
                                               "': " + std::to_string(value.rows()) +
                                               " rows, want " + std::to_string(buffer.rows()));
  buffer = value;
}

template <typename T>
Matrix<T>& Graph<T>::input_buffer(NodeId id, Index cols, Index seq_len) {
  check_id(id, "input_buffer");
  Node<T>& n = node(id);
  OPU_CHECK(n.kind == NodeKind::kInput, "graph: '" + n.name + "' is not a float input");
  OPU_CHECK(seq_len > 0 && cols % seq_len == 0,
            "graph input '" + n.name + "': " + std::to_string(cols) +
                " columns are not whole sequences of " + std::to_string(seq_len));
  resize_to(n.data, n.rows, cols);
  n.seq_len = seq_len;
  return n.data;
}

template <typename T>
void Graph<T>::set_ids(NodeId id, std::span<const std::int32_t> ids, Index seq_len) {
  std::vector<std::int32_t>& buffer = ids_buffer(id, static_cast<Index>(ids.size()), seq_len);
  std::copy(ids.begin(), ids.end(), buffer.begin());
}

template <typename T>
std::vector<std::int32_t>& Graph<T>::ids_buffer(NodeId id, Index cols, Index seq_len) {
  check_id(id, "ids_buffer");
  Node<T>& n = node(id);
  OPU_CHECK(n.is_index(), "graph: '" + n.name + "' is not an index input");
  OPU_CHECK(seq_len > 0 && cols % seq_len == 0,
            "graph input '" + n.name + "': " + std::to_string(cols) +
                " columns are not whole sequences of " + std::to_string(seq_len));
  n.ids.resize(static_cast<std::size_t>(cols));
  n.seq_len = seq_len;
  return n.ids;
}

template <typename T>
void Graph<T>::forward(const ForwardContext& context, NodeId last) {
  if (last == kNoNode) last = size() - 1;
  check_id(last, "forward");
  for (NodeId i = 0; i <= last; ++i) {
    Node<T>& n = node(i);
    if (n.kind != NodeKind::kOp) continue;
    in_scratch_.clear();
    for (NodeId j : n.inputs) in_scratch_.push_back(&node(j));
    n.op->forward(in_scratch_, n, context);
  }
}

template <typename T>
void Graph<T>::clear_gradients() {
  std::fill(written_.begin(), written_.end(), std::uint8_t{0});
}

template <typename T>
void Graph<T>::seed(NodeId id, const Eigen::Ref<const Matrix<T>>& gradient) {
  Matrix<T>& g = seed_buffer(id);
  resize_to(g, gradient.rows(), gradient.cols());
  g = gradient;
}

template <typename T>
Matrix<T>& Graph<T>::seed_buffer(NodeId id) {
  check_id(id, "seed");
  written_[static_cast<std::size_t>(id)] = 1;
  return node(id).grad();
}

template <typename T>
void Graph<T>::run_backward(const BackwardPass& pass) {
  OPU_CHECK(pass.run.size() == nodes_.size() && pass.receives.size() == nodes_.size(),
            "run_backward: the pass was planned for another graph");
  for (NodeId i = size() - 1; i >= 0; --i) {
    const auto ui = static_cast<std::size_t>(i);
    Node<T>& n = node(i);
    if (n.kind != NodeKind::kOp || pass.run[ui] == 0 || written_[ui] == 0) continue;
    in_scratch_.clear();
    slot_scratch_.clear();
    bool any = false;
    for (NodeId j : n.inputs) {
      Node<T>& input = node(j);
      in_scratch_.push_back(&input);
      const auto uj = static_cast<std::size_t>(j);
      GradSlot<T> slot;
      if (pass.receives[uj] != 0 && !input.is_index()) {
        slot.m = &input.grad();
        slot.accumulate = written_[uj] != 0;
        // The same node twice (x + x): the later slot adds to what the earlier one wrote (ops
        // write their slots in input order).
        for (std::size_t k = 0; k < slot_scratch_.size(); ++k) {
          if (slot_scratch_[k].m == slot.m) slot.accumulate = true;
        }
        any = true;
      }
      slot_scratch_.push_back(slot);
    }
    if (!any) continue;
    n.op->backward(in_scratch_, n, slot_scratch_);
    for (NodeId j : n.inputs) {
      const auto uj = static_cast<std::size_t>(j);
      if (pass.receives[uj] != 0 && !node(j).is_index()) written_[uj] = 1;
    }
  }
}

template <typename T>
std::vector<std::uint8_t> Graph<T>::leads_to(const std::vector<std::uint8_t>& targets) const {
  OPU_CHECK(targets.size() == nodes_.size(), "leads_to: one flag per node");
  std::vector<std::uint8_t> out = targets;
  for (NodeId i = 0; i < size(); ++i) {
    const auto ui = static_cast<std::size_t>(i);
    for (NodeId j : node(i).inputs) {
      if (out[static_cast<std::size_t>(j)] != 0) out[ui] = 1;
    }
  }
  return out;
}

template <typename T>
std::vector<std::uint8_t> Graph<T>::reaches(NodeId to) const {
  check_id(to, "reaches");
  std::vector<std::uint8_t> out(nodes_.size(), 0);
  out[static_cast<std::size_t>(to)] = 1;
  for (NodeId i = to; i >= 0; --i) {
    if (out[static_cast<std::size_t>(i)] == 0) continue;
    for (NodeId j : node(i).inputs) out[static_cast<std::size_t>(j)] = 1;
  }
  return out;
}

template <typename T>
std::vector<std::vector<NodeId>> Graph<T>::consumers() const {
  std::vector<std::vector<NodeId>> out(nodes_.size());
  for (NodeId i = 0; i < size(); ++i) {
    for (NodeId j : node(i).inputs) {
      std::vector<NodeId>& c = out[static_cast<std::size_t>(j)];
      if (c.empty() || c.back() != i) c.push_back(i);
    }
  }
  return out;
}

template class Graph<float>;
template class Graph<double>;

}  // namespace opu::trainer::graph
