#include "trainer/models/mlp.h"

#include <cmath>
#include <string>

#include "trainer/random.h"

namespace opu::trainer::models {
using namespace opu::trainer::graph;

template <typename T>
std::unique_ptr<ClassifierModel<T>> build_mlp(const MlpConfig& c) {
  auto bad = [](const std::string& what) { throw StatusError(invalid_argument("mlp: " + what)); };
  if (c.inputs < 1 || c.classes < 1) bad("inputs and classes must be >= 1");
  for (Index h : c.hidden) {
    if (h < 1) bad("hidden size " + std::to_string(h) + ", want >= 1");
  }
  if (!(c.dropout >= 0.0 && c.dropout < 1.0)) {
    bad("dropout " + std::to_string(c.dropout) + ", want in [0, 1)");
  }
  auto m = std::make_unique<ClassifierModel<T>>();
  Graph<T>& g = m->graph;
  m->input = g.input("input", c.inputs);
  m->labels = g.index_input("labels");
  m->signature = std::to_string(c.inputs);
  NodeId h = m->input;
  Index width = c.inputs;
  for (std::size_t l = 0; l <= c.hidden.size(); ++l) {
    const std::string name = "layer" + std::to_string(l);
    const Index out = l < c.hidden.size() ? c.hidden[l] : c.classes;
    // nn.Linear's default: weight and bias U(±1/sqrt(fan_in)); no decay on biases.
    const float bound = 1.0F / std::sqrt(static_cast<float>(width));
    const NodeId w = g.parameter(name + ".weight",
                                 uniform_init<T>(out, width, bound, c.seed, name + ".weight"));
    const NodeId b = g.parameter(name + ".bias",
                                 uniform_init<T>(out, 1, bound, c.seed, name + ".bias"), false);
    h = linear(g, h, w, b, name);
    m->signature += "-linear" + std::to_string(out);
    if (l < c.hidden.size()) {
      const std::string point = "h" + std::to_string(l + 1);
      h = activation(g, c.activation, h, point);
      g.feedback_point(h, point);
      m->signature += "-" + activation_name(c.activation) + "-[" + point + "]";
      if (c.dropout > 0.0) {
        h = dropout(g, h, c.dropout, derive_seed(c.seed, "dropout/" + name + ".dropout"),
                    name + ".dropout");
        m->signature += "-dropout";
      }
    }
    width = out;
  }
  m->logits = h;
  m->loss = classifier_loss(g, c.loss, m->logits, m->labels);
  return m;
}

template std::unique_ptr<ClassifierModel<float>> build_mlp<float>(const MlpConfig&);
template std::unique_ptr<ClassifierModel<double>> build_mlp<double>(const MlpConfig&);

}  // namespace opu::trainer::models
