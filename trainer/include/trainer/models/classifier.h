// What the classifiers share (the MLP of models/mlp.h, the GCN of models/gcn.h and the graph
// networks that follow them): the built graph with the nodes a classification task drives, the
// loss on the logits, and nn.Linear's initialisation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "opu_sim/status.h"
#include "trainer/graph/graph.h"

namespace opu::trainer::models {

using graph::Index;
using graph::NodeId;

/// The loss on a classifier's logits against its class labels (a negative label leaves its
/// column out of the loss: the GCN's nodes outside the training split).
enum class ClassifierLoss {
  kCrossEntropy,  // softmax cross-entropy (the paper's)
  kBce,           // binary cross-entropy per class on the one-hot label
  kMse,           // ½ ‖logits - one-hot‖²
};
std::string classifier_loss_name(ClassifierLoss loss);
/// "cross_entropy" (or "ce"), "bce", "mse".
Result<ClassifierLoss> parse_classifier_loss(const std::string& name);

/// A classifier as a graph: features in (one sample or node per column), class logits out.
template <typename T>
struct ClassifierModel {
  graph::Graph<T> graph;
  NodeId input = graph::kNoNode;   // float: features x columns
  NodeId labels = graph::kNoNode;  // index: the class of each column (negative: not in the loss)
  NodeId logits = graph::kNoNode;  // classes x columns; DFA's error node
  NodeId loss = graph::kNoNode;    // 1 x 1
  /// The architecture, "784-linear256-relu-[h1]-linear256-relu-[h2]-linear10": printed, and
  /// checked by checkpoints on resume.
  std::string signature;
};

/// The loss node of `kind` on (logits, labels).
template <typename T>
NodeId classifier_loss(graph::Graph<T>& g, ClassifierLoss kind, NodeId logits, NodeId labels);

/// rows x cols uniform in [-bound, bound) from (seed, "init/" + name), element by element in
/// memory order (bound 0: zeros); the float draws of the trainer's first models, kept so that
/// a weight has the same value whatever the scalar type.
template <typename T>
graph::Matrix<T> uniform_init(Index rows, Index cols, float bound, std::uint64_t seed,
                              const std::string& name);

extern template struct ClassifierModel<float>;
extern template struct ClassifierModel<double>;

}  // namespace opu::trainer::models
