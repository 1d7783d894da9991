// Helpers shared by the ops' implementations (private to the library).
#pragma once

#include <string>

#include "opu_sim/status.h"
#include "trainer/graph/graph.h"

namespace opu::trainer::graph::detail {

[[noreturn]] inline void bad_graph(const std::string& node, const std::string& what) {
  throw StatusError(invalid_argument("graph node '" + node + "': " + what));
}

/// Checks the input count and that inputs [0, n) are float (or index, per `index_mask` bit k).
template <typename T>
void expect_inputs(const std::string& node, std::span<const Node<T>* const> in, std::size_t n_min,
                   std::size_t n_max, unsigned index_mask = 0) {
  if (in.size() < n_min || in.size() > n_max) {
    bad_graph(node, std::to_string(in.size()) + " inputs, want " +
                        (n_min == n_max ? std::to_string(n_min)
                                        : std::to_string(n_min) + " to " + std::to_string(n_max)));
  }
  for (std::size_t k = 0; k < in.size(); ++k) {
    const bool want_index = ((index_mask >> k) & 1U) != 0;
    if (in[k]->is_index() != want_index) {
      bad_graph(node, "input " + std::to_string(k) + " ('" + in[k]->name + "') " +
                          (want_index ? "must hold ids" : "must be a float tensor, not ids"));
    }
  }
}

/// Shapes the output of an op and sets its sequence length.
template <typename T>
Matrix<T>& prepare(Node<T>& out, Index cols, Index seq_len) {
  resize_to(out.data, out.rows, cols);
  out.seq_len = seq_len;
  return out.data;
}

/// Checks that an input has `cols` columns at run time.
template <typename T>
void expect_cols(const Node<T>& out, const Node<T>& in, Index cols) {
  OPU_CHECK(in.cols() == cols, "graph node '" + out.name + "': input '" + in.name + "' has " +
                                   std::to_string(in.cols()) + " columns, want " +
                                   std::to_string(cols));
}

}  // namespace opu::trainer::graph::detail
