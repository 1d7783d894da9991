// One training step's gradients on a graph under BP, DFA or shallow training, with feedback
// points on any nodes (TinyDFA's DFA / DFALayer semantics; docs/trainer.md, "Feedback points
// anywhere").
//
// The graph has a scalar loss node, feedback points (Graph::feedback_point) and an error node,
// the tensor whose gradient DFA projects (TinyDFA's DFA module: by default the model's output;
// the Transformer's final hidden state). Nodes split into
//   - the top segment: nodes whose gradient does not pass through any feedback point on its way
//     from the loss (every consumer is in the top segment and is not a point). They get the true
//     gradient under every method; the error node must be one of them;
//   - the rest, whose gradients come, under DFA, from the points.
// One step:
//   bp      reverse mode through everything; the points are ignored.
//   shallow reverse mode through the top segment only; only its parameters train.
//   dfa     (1) reverse mode through the top segment (its parameters get true gradients) up to
//           the error node: e = dL/d(error), one column per position of that node;
//           (2) the feedback source projects e once: P = B e (d_max x columns), scaled by
//           kPaperStd / (std(B) sqrt(d_max)) (TinyDFA's 1/sqrt(d_max));
//           (3) each point's gradient is replaced by its first d_l rows of P (whatever arrived
//           from above is dropped, and is never computed), and reverse mode continues below the
//           points from those signals only: each segment between points learns by local
//           backprop. A point with k times more columns than e (a point per token, an error per
//           sequence) receives column j / k of P in its column j, divided by sqrt(k) (TinyDFA's
//           broadcast); any other ratio is an error.
// Alignment (measure_alignment): one extra reverse sweep without parameter gradients gives the
// true gradient at every point; the cosine with the method's teaching signal is taken per column
// (position) and summarised by mean and std.
//
// Thread safety: none (one graph, one thread).
#pragma once

#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/feedback.h"
#include "trainer/graph/graph.h"
#include "trainer/method.h"

namespace opu::trainer::graph {

class GraphLearner {
 public:
  /// `loss`: a 1 x 1 op node. `error`: DFA's error node (ignored by bp and shallow). `feedback`:
  /// required for DFA, mapping rows(error) -> n_out >= d_max (the widest point). Throws
  /// StatusError (INVALID_ARGUMENT) on a graph that cannot be trained by `method` (no points for
  /// dfa or shallow, an error node below a point, a feedback source of the wrong shape).
  GraphLearner(Graph<float>& graph, NodeId loss, NodeId error, Method method,
               FeedbackSource* feedback);

  Method method() const { return method_; }
  /// The parameters the method trains (shallow: the top segment's).
  const std::vector<Param*>& trainable() const { return trainable_; }
  /// Whether node `id` is in the top segment.
  bool in_top_segment(NodeId id) const { return top_[static_cast<std::size_t>(id)] != 0; }
  /// The widest feedback point (d_max).
  Index max_feedback_size() const { return d_max_; }

  /// Forward in `context` (inputs already set), then the gradients of trainable() by the method
  /// (gradients of parameters that nothing reached are zero). Returns the loss. A non-finite loss
  /// returns at once (the caller stops). Fails when the feedback source does, or when a point's
  /// columns are not a multiple of the error's.
  Result<double> compute_gradients(const ForwardContext& context, bool measure_alignment);

  /// Alignment per point from the last step that measured it.
  const std::vector<Alignment>& alignment() const { return alignment_; }
  /// The teaching signal at point k in the last step that measured alignment (dfa: the scaled
  /// projection; bp: the gradient that reached the point; shallow: zeros).
  const Matrix<float>& teaching_signal(std::size_t k) const { return signals_[k]; }
  /// The true gradient at point k in the last step that measured alignment.
  const Matrix<float>& true_gradient(std::size_t k) const { return true_grads_[k]; }
  /// DFA: the last error e (rows(error) x columns).
  const Matrix<float>& error() const { return error_; }
  const FeedbackSource* feedback() const { return method_ == Method::kDfa ? feedback_ : nullptr; }
  double feedback_scale() const { return scale_; }

 private:
  Status seed_points(bool measure_alignment);

  Graph<float>& graph_;
  NodeId loss_;
  NodeId error_node_;
  Method method_;
  FeedbackSource* feedback_;
  double scale_ = 1.0;
  Index d_max_ = 0;
  std::vector<std::uint8_t> top_;
  std::vector<Param*> trainable_;
  std::vector<NodeId> trainable_nodes_;
  BackwardPass bp_pass_;     // bp; shallow's is the top part of it
  BackwardPass top_pass_;    // dfa phase 1 and shallow: the top segment
  BackwardPass below_pass_;  // dfa phase 2: from the points down
  BackwardPass align_pass_;  // true gradients at the points
  Matrix<float> one_;        // dL/dL
  Matrix<float> error_;
  Matrix<float> projection_;
  std::vector<Matrix<float>> signals_;
  std::vector<Matrix<float>> true_grads_;
  std::vector<Alignment> alignment_;
};

}  // namespace opu::trainer::graph
