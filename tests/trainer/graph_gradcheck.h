// A generic gradient check for graphs in double precision: every gradient that reverse mode
// gives for the graph's float leaves (parameters, and inputs created with requires_grad) against
// central finite differences of the same graph.
//
// The objective is Σ R ⊙ value(out), R a fixed random matrix (R = 1 for a 1 x 1 loss node), so
// that every output element and every leaf matters. Tolerance: central differences with step
// h = 1e-5 in double have truncation error ~h² |f'''| ~ 1e-10 and rounding error
// ~eps_double |f| / h ~ 1e-10 for |f| ~ 10, so |numeric - analytic| <= 1e-7 + 1e-6 |analytic|
// leaves a margin of about 1000x for the numerics while a wrong backward (a missing term, a
// transposed product, a wrong scale) misses by orders of magnitude more (the tests include an op
// with a deliberately wrong backward that this check must reject).
#pragma once

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "trainer/graph/graph.h"
#include "trainer/random.h"

namespace opu::trainer::test {

struct GradCheckResult {
  bool ok = true;
  std::int64_t checked = 0;  // gradient entries compared
  double worst = 0.0;        // largest |numeric - analytic| / (atol + rtol |analytic|)
  std::string report;        // the first failures, one per line
};

inline graph::Matrix<double> random_matrix_d(graph::Index rows, graph::Index cols,
                                             std::uint64_t seed, double scale = 1.0) {
  const CounterRng rng(seed, "test/graph-matrix");
  graph::Matrix<double> m(rows, cols);
  for (graph::Index i = 0; i < m.size(); ++i) {
    m.data()[i] = scale * static_cast<double>(rng.normal(static_cast<std::uint64_t>(i)));
  }
  return m;
}

/// Checks the gradients of every float leaf of `g` (parameters, inputs with requires_grad) for the
/// objective Σ R ⊙ value(out). Inputs and ids must be set; `context` is used for every forward.
inline GradCheckResult check_gradients(graph::Graph<double>& g, graph::NodeId out,
                                       const ForwardContext& context, std::uint64_t seed = 1,
                                       double h = 1e-5, double atol = 1e-7, double rtol = 1e-6) {
  using graph::NodeId;
  g.forward(context, out);
  const graph::Matrix<double> r =
      g.node(out).value().size() == 1
          ? graph::Matrix<double>::Ones(1, 1)
          : random_matrix_d(g.node(out).value().rows(), g.node(out).value().cols(), seed + 77);
  auto objective = [&]() {
    g.forward(context, out);
    return (g.value(out).array() * r.array()).sum();
  };

  // Analytic: reverse mode from R to every leaf.
  std::vector<std::uint8_t> targets(static_cast<std::size_t>(g.size()), 0);
  std::vector<NodeId> leaves;
  for (NodeId i = 0; i < g.size(); ++i) {
    const graph::Node<double>& n = g.node(i);
    if (n.kind == graph::NodeKind::kParameter ||
        (n.kind == graph::NodeKind::kInput && n.requires_grad)) {
      targets[static_cast<std::size_t>(i)] = 1;
      leaves.push_back(i);
    }
  }
  const std::vector<std::uint8_t> useful = g.leads_to(targets);
  graph::BackwardPass pass{useful, useful};
  for (NodeId i = 0; i < g.size(); ++i) {
    if (g.node(i).kind != graph::NodeKind::kOp) pass.run[static_cast<std::size_t>(i)] = 0;
  }
  g.forward(context, out);
  g.clear_gradients();
  g.seed(out, r);
  g.run_backward(pass);
  std::vector<graph::Matrix<double>> analytic;
  for (NodeId leaf : leaves) {
    const graph::Node<double>& n = g.node(leaf);
    analytic.push_back(g.has_gradient(leaf)
                           ? g.gradient(leaf)
                           : graph::Matrix<double>::Zero(n.value().rows(), n.value().cols()));
  }

  // Numeric: central differences, one element at a time.
  GradCheckResult result;
  std::ostringstream report;
  int failures = 0;
  for (std::size_t l = 0; l < leaves.size(); ++l) {
    graph::Matrix<double>& value = g.node(leaves[l]).value();
    const graph::Matrix<double>& a = analytic[l];
    if (a.rows() != value.rows() || a.cols() != value.cols()) {
      result.ok = false;
      report << g.node(leaves[l]).name << ": gradient is " << a.rows() << "x" << a.cols()
             << ", value " << value.rows() << "x" << value.cols() << "\n";
      continue;
    }
    for (graph::Index i = 0; i < value.size(); ++i) {
      const double saved = value.data()[i];
      value.data()[i] = saved + h;
      const double up = objective();
      value.data()[i] = saved - h;
      const double down = objective();
      value.data()[i] = saved;
      const double numeric = (up - down) / (2.0 * h);
      const double ana = a.data()[i];
      const double ratio = std::abs(numeric - ana) / (atol + rtol * std::abs(ana));
      result.worst = std::max(result.worst, ratio);
      ++result.checked;
      if (ratio > 1.0) {
        result.ok = false;
        if (failures++ < 8) {
          report << g.node(leaves[l]).name << "[" << i << "]: numeric " << numeric << " analytic "
                 << ana << "\n";
        }
      }
    }
  }
  g.forward(context, out);
  result.report = report.str();
  return result;
}

}  // namespace opu::trainer::test
