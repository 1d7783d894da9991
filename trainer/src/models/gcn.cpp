#include "trainer/models/gcn.h"

#include <cmath>
#include <string>
#include <utility>

#include "trainer/graph/ops_dense.h"
#include "trainer/random.h"

namespace opu::trainer::models {
using namespace opu::trainer::graph;

template <typename T>
std::unique_ptr<ClassifierModel<T>> build_gcn(const GcnConfig& c,
                                              std::shared_ptr<const SparseMatrix<T>> adjacency) {
  auto bad = [](const std::string& what) { throw StatusError(invalid_argument("gcn: " + what)); };
  if (adjacency == nullptr || adjacency->rows() != adjacency->cols()) {
    bad("the adjacency must be a square matrix");
  }
  if (c.inputs < 1 || c.classes < 1) bad("inputs and classes must be >= 1");
  for (Index h : c.hidden) {
    if (h < 1) bad("hidden size " + std::to_string(h) + ", want >= 1");
  }
  for (double p : {c.dropout, c.input_dropout}) {
    if (!(p >= 0.0 && p < 1.0)) bad("dropout " + std::to_string(p) + ", want in [0, 1)");
  }
  auto m = std::make_unique<ClassifierModel<T>>();
  Graph<T>& g = m->graph;
  m->input = g.input("input", c.inputs);
  m->labels = g.index_input("labels");
  m->signature = std::to_string(c.inputs);
  NodeId h = m->input;
  Index width = c.inputs;
  for (std::size_t l = 0; l <= c.hidden.size(); ++l) {
    const std::string name = "gcn" + std::to_string(l);
    const Index out = l < c.hidden.size() ? c.hidden[l] : c.classes;
    const double p = l == 0 ? c.input_dropout : c.dropout;
    if (p > 0.0) {
      h = dropout(g, h, p, derive_seed(c.seed, "dropout/" + name + ".dropout"), name + ".dropout");
      m->signature += "-dropout";
    }
    // Glorot-uniform weight, zero bias; Kipf & Welling (and the paper) decay the first layer only.
    const float bound = std::sqrt(6.0F / static_cast<float>(width + out));
    const bool decay = l == 0;
    const NodeId w = g.parameter(
        name + ".weight", uniform_init<T>(out, width, bound, c.seed, name + ".weight"), decay);
    const NodeId b = g.parameter(name + ".bias", graph::Matrix<T>::Zero(out, 1), decay);
    h = propagate(g, linear(g, h, w, kNoNode, name + ".linear"), adjacency, b, name);
    m->signature += "-graph_conv" + std::to_string(out);
    if (l < c.hidden.size()) {
      const std::string point = "h" + std::to_string(l + 1);
      h = activation(g, graph::Activation::kRelu, h, point);
      g.feedback_point(h, point);
      m->signature += "-relu-[" + point + "]";
    }
    width = out;
  }
  m->logits = h;
  m->loss = classifier_loss(g, c.loss, m->logits, m->labels);
  return m;
}

template std::unique_ptr<ClassifierModel<float>> build_gcn<float>(
    const GcnConfig&, std::shared_ptr<const SparseMatrix<float>>);
template std::unique_ptr<ClassifierModel<double>> build_gcn<double>(
    const GcnConfig&, std::shared_ptr<const SparseMatrix<double>>);

}  // namespace opu::trainer::models
