#include "trainer/graph/learner.h"

#include <cmath>
#include <string>

namespace opu::trainer::graph {
namespace {

using Flags = std::vector<std::uint8_t>;

Flags both(const Flags& a, const Flags& b) {
  Flags out(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] != 0 && b[i] != 0 ? 1 : 0;
  return out;
}

}  // namespace

GraphLearner::GraphLearner(Graph<float>& graph, NodeId loss, NodeId error, Method method,
                           FeedbackSource* feedback)
    : graph_(graph), loss_(loss), error_node_(error), method_(method), feedback_(feedback) {
  const NodeId n = graph.size();
  if (loss < 0 || loss >= n || graph.node(loss).kind != NodeKind::kOp ||
      graph.node(loss).rows != 1) {
    throw StatusError(invalid_argument("GraphLearner: the loss must be a 1x1 op node"));
  }
  const auto un = static_cast<std::size_t>(n);
  const std::vector<FeedbackPointRef>& points = graph.feedback_points();
  Flags is_point(un, 0);
  for (const FeedbackPointRef& p : points) {
    is_point[static_cast<std::size_t>(p.node)] = 1;
    d_max_ = std::max(d_max_, graph.node(p.node).rows);
  }
  if (method != Method::kBp && points.empty()) {
    throw StatusError(invalid_argument("method " + method_name(method) +
                                       " needs a graph with at least one feedback point"));
  }

  // The top segment: nodes whose every consumer that matters for the loss is a top non-point.
  const Flags reaches_loss = graph.reaches(loss);
  const std::vector<std::vector<NodeId>> consumers = graph.consumers();
  top_.assign(un, 0);
  top_[static_cast<std::size_t>(loss)] = 1;
  for (NodeId i = loss - 1; i >= 0; --i) {
    const auto ui = static_cast<std::size_t>(i);
    if (reaches_loss[ui] == 0) continue;
    bool all = true;
    for (NodeId c : consumers[ui]) {
      const auto uc = static_cast<std::size_t>(c);
      if (reaches_loss[uc] != 0 && (top_[uc] == 0 || is_point[uc] != 0)) all = false;
    }
    top_[ui] = all ? 1 : 0;
  }

  // Trainable parameters: those the loss depends on (shallow: in the top segment only).
  Flags trainable(un, 0);
  for (NodeId i = 0; i < n; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    Node<float>& node = graph.node(i);
    if (node.kind != NodeKind::kParameter || reaches_loss[ui] == 0) continue;
    if (method == Method::kShallow && top_[ui] == 0) continue;
    trainable[ui] = 1;
    trainable_.push_back(node.param);
    trainable_nodes_.push_back(i);
  }

  Flags is_op(un, 0);
  for (NodeId i = 0; i < n; ++i) {
    is_op[static_cast<std::size_t>(i)] = graph.node(i).kind == NodeKind::kOp ? 1 : 0;
  }
  Flags not_point(un), top_not_point(un), below(un);
  for (std::size_t i = 0; i < un; ++i) {
    not_point[i] = is_point[i] == 0 ? 1 : 0;
    top_not_point[i] = top_[i] != 0 && is_point[i] == 0 ? 1 : 0;
    below[i] = top_[i] == 0 || is_point[i] != 0 ? 1 : 0;
  }

  // BP: every node that leads to a trainable parameter receives and runs.
  const Flags useful = graph.leads_to(trainable);
  bp_pass_ = {both(useful, is_op), useful};

  if (method == Method::kDfa) {
    if (error < 0 || error >= n || graph.node(error).is_index()) {
      throw StatusError(invalid_argument("GraphLearner: the error node must be a float node"));
    }
    const auto ue = static_cast<std::size_t>(error);
    if (top_[ue] == 0 || reaches_loss[ue] == 0) {
      throw StatusError(invalid_argument(
          "GraphLearner: the error node '" + graph.node(error).name +
          "' must be in the top segment (its gradient may not pass through a feedback point)"));
    }
    if (feedback == nullptr) {
      throw StatusError(invalid_argument("method dfa needs a feedback source"));
    }
    if (feedback->n_in() != graph.node(error).rows || feedback->n_out() < d_max_) {
      throw StatusError(invalid_argument(
          "feedback source maps " + std::to_string(feedback->n_in()) + " -> " +
          std::to_string(feedback->n_out()) + ", want " + std::to_string(graph.node(error).rows) +
          " (rows of the error node '" + graph.node(error).name +
          "') -> >= " + std::to_string(d_max_) + " (d_max)"));
    }
    // The paper's 1/sqrt(d_max) for a U[-1,1) matrix, other sources first brought to its scale.
    scale_ = kPaperStd / (feedback->entry_std() * std::sqrt(static_cast<double>(d_max_)));
    // Phase 1: the top segment, feeding the error node even when it is a point.
    Flags targets1 = trainable;
    targets1[ue] = 1;
    const Flags useful1 = graph.leads_to(targets1);
    Flags receives1 = both(useful1, not_point);
    receives1[ue] = useful1[ue];
    top_pass_ = {both(both(useful1, is_op), top_not_point), receives1};
    // Phase 2: from the points (seeded) down; nothing is fed into a point from above.
    below_pass_ = {both(both(useful, is_op), below), both(useful, not_point)};
  } else if (method == Method::kShallow) {
    top_pass_ = {both(both(useful, is_op), top_not_point), both(useful, not_point)};
  }

  // Alignment: plain reverse mode to the points, no parameter gradients.
  const Flags to_points = graph.leads_to(is_point);
  align_pass_ = {both(to_points, is_op), to_points};

  one_ = Matrix<float>::Ones(1, 1);
  signals_.resize(points.size());
  true_grads_.resize(points.size());
}

Status GraphLearner::seed_points(bool measure_alignment) {
  // e = dL/d(error node): its true gradient, from the top segment.
  if (graph_.has_gradient(error_node_)) {
    const Matrix<float>& g = graph_.gradient(error_node_);
    resize_to(error_, g.rows(), g.cols());
    error_ = g;
  } else {
    resize_to(error_, graph_.node(error_node_).rows, graph_.node(error_node_).cols());
    error_.setZero();
  }
  OPU_RETURN_IF_ERROR(feedback_->project(error_, projection_));
  projection_ *= static_cast<float>(scale_);
  const Index error_cols = error_.cols();
  const std::vector<FeedbackPointRef>& points = graph_.feedback_points();
  for (std::size_t k = 0; k < points.size(); ++k) {
    const Node<float>& node = graph_.node(points[k].node);
    const Index rows = node.rows;
    const Index cols = node.cols();
    if (error_cols == 0 || cols % error_cols != 0) {
      return invalid_argument("feedback point '" + points[k].name + "' has " +
                              std::to_string(cols) + " columns, want a multiple of the error's " +
                              std::to_string(error_cols));
    }
    Matrix<float>& signal = graph_.seed_buffer(points[k].node);
    resize_to(signal, rows, cols);
    const Index per = cols / error_cols;
    if (per == 1) {
      signal = projection_.topRows(rows);
    } else {
      // TinyDFA's broadcast: the projection of each error column goes to its `per` positions,
      // divided by sqrt(per).
      const auto shrink = static_cast<float>(1.0 / std::sqrt(static_cast<double>(per)));
      for (Index j = 0; j < cols; ++j) signal.col(j) = shrink * projection_.col(j / per).head(rows);
    }
    if (measure_alignment) {
      resize_to(signals_[k], rows, cols);
      signals_[k] = signal;
    }
  }
  return {};
}

Result<double> GraphLearner::compute_gradients(const ForwardContext& context,
                                               bool measure_alignment) {
  graph_.forward(context, loss_);
  const double loss = graph_.value(loss_)(0, 0);
  if (!std::isfinite(loss)) return loss;
  const std::vector<FeedbackPointRef>& points = graph_.feedback_points();
  measure_alignment = measure_alignment && !points.empty();

  if (measure_alignment) {
    graph_.clear_gradients();
    graph_.seed(loss_, one_);
    graph_.run_backward(align_pass_);
    for (std::size_t k = 0; k < points.size(); ++k) {
      const Node<float>& node = graph_.node(points[k].node);
      resize_to(true_grads_[k], node.rows, node.cols());
      if (graph_.has_gradient(points[k].node)) {
        true_grads_[k] = graph_.gradient(points[k].node);
      } else {
        true_grads_[k].setZero();
      }
    }
  }

  graph_.clear_gradients();
  graph_.seed(loss_, one_);
  switch (method_) {
    case Method::kBp:
      graph_.run_backward(bp_pass_);
      if (measure_alignment) {
        for (std::size_t k = 0; k < points.size(); ++k) {
          resize_to(signals_[k], true_grads_[k].rows(), true_grads_[k].cols());
          signals_[k] = true_grads_[k];
        }
      }
      break;
    case Method::kShallow:
      graph_.run_backward(top_pass_);
      if (measure_alignment) {
        for (std::size_t k = 0; k < points.size(); ++k) {
          const Node<float>& node = graph_.node(points[k].node);
          resize_to(signals_[k], node.rows, node.cols());
          signals_[k].setZero();
        }
      }
      break;
    case Method::kDfa:
      graph_.run_backward(top_pass_);
      OPU_RETURN_IF_ERROR(seed_points(measure_alignment));
      graph_.run_backward(below_pass_);
      break;
  }
  // Parameters nothing reached (a feedback slice of zeros never reaches them either way) get 0.
  for (std::size_t i = 0; i < trainable_nodes_.size(); ++i) {
    if (!graph_.has_gradient(trainable_nodes_[i])) trainable_[i]->grad.setZero();
  }

  alignment_.clear();
  if (measure_alignment) {
    for (std::size_t k = 0; k < points.size(); ++k) {
      alignment_.push_back(cosine_alignment(points[k].name, signals_[k], true_grads_[k]));
    }
  }
  return loss;
}

}  // namespace opu::trainer::graph
