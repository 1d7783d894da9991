#include "trainer/models/classifier.h"

#include <string>

#include "trainer/graph/ops_loss.h"
#include "trainer/random.h"

namespace opu::trainer::models {

std::string classifier_loss_name(ClassifierLoss loss) {
  switch (loss) {
    case ClassifierLoss::kCrossEntropy:
      return "cross_entropy";
    case ClassifierLoss::kBce:
      return "bce";
    case ClassifierLoss::kMse:
      return "mse";
  }
  return "?";
}

Result<ClassifierLoss> parse_classifier_loss(const std::string& name) {
  if (name == "cross_entropy" || name == "ce") return ClassifierLoss::kCrossEntropy;
  if (name == "bce") return ClassifierLoss::kBce;
  if (name == "mse") return ClassifierLoss::kMse;
  return invalid_argument("loss: '" + name + "' is unknown, want cross_entropy, bce or mse");
}

template <typename T>
NodeId classifier_loss(graph::Graph<T>& g, ClassifierLoss kind, NodeId logits, NodeId labels) {
  switch (kind) {
    case ClassifierLoss::kBce:
      return graph::binary_cross_entropy(g, logits, labels, "loss");
    case ClassifierLoss::kMse:
      return graph::squared_error(g, logits, labels, "loss");
    case ClassifierLoss::kCrossEntropy:
      break;
  }
  return graph::softmax_cross_entropy(g, logits, labels, "loss");
}

template <typename T>
graph::Matrix<T> uniform_init(Index rows, Index cols, float bound, std::uint64_t seed,
                              const std::string& name) {
  graph::Matrix<T> m(rows, cols);
  const CounterRng rng(seed, "init/" + name);
  for (Index i = 0; i < m.size(); ++i) {
    m.data()[i] = bound == 0.0F
                      ? T(0)
                      : static_cast<T>(rng.uniform(static_cast<std::uint64_t>(i), -bound, bound));
  }
  return m;
}

template struct ClassifierModel<float>;
template struct ClassifierModel<double>;
template NodeId classifier_loss<float>(graph::Graph<float>&, ClassifierLoss, NodeId, NodeId);
template NodeId classifier_loss<double>(graph::Graph<double>&, ClassifierLoss, NodeId, NodeId);
template graph::Matrix<float> uniform_init<float>(Index, Index, float, std::uint64_t,
                                                  const std::string&);
template graph::Matrix<double> uniform_init<double>(Index, Index, float, std::uint64_t,
                                                    const std::string&);

}  // namespace opu::trainer::models
