// Fuzz target: Planetoid graphs (trainer/src/datasets.cpp), as opu-train --model gcn reads Cora.
//
// Input: the three files of a graph, NAME.content, NAME.edges and NAME.split, one after the other,
// separated by lines "%%" (a missing part is an empty file), given to parse_planetoid(),
// load_planetoid() without the files.
// Properties: no crash, leak or undefined behaviour; an accepted graph is consistent: one label,
// one split entry and one feature column per node, labels in [-1, n_classes), a square adjacency
// over the nodes.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "trainer/datasets.h"

namespace {

// The text split at every line that is exactly "%%" (the separator lines are dropped).
std::vector<std::string_view> split_files(std::string_view text) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  std::size_t line = 0;
  while (line <= text.size()) {
    const std::size_t end = std::min(text.find('\n', line), text.size());
    if (text.substr(line, end - line) == "%%") {
      parts.push_back(text.substr(start, line - start));
      start = std::min(end + 1, text.size());
    }
    line = end + 1;
  }
  parts.push_back(text.substr(start));
  return parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::vector<std::string_view> parts = split_files(opu::fuzz::as_text(data, size));
  auto part = [&](std::size_t i) { return i < parts.size() ? parts[i] : std::string_view(); };
  opu::Result<opu::trainer::GraphDataset> graph =
      opu::trainer::parse_planetoid(part(0), part(1), part(2), "fuzz", "fuzz/fuzz");
  if (!graph.ok()) return 0;
  const auto n_nodes = static_cast<std::int64_t>(graph->nodes.labels.size());
  OPU_FUZZ_CHECK(n_nodes > 0 && graph->nodes.features.cols() == n_nodes &&
                     static_cast<std::int64_t>(graph->split.size()) == n_nodes,
                 "nodes disagree: " + std::to_string(n_nodes) + " labels");
  OPU_FUZZ_CHECK(graph->adjacency->rows() == n_nodes && graph->adjacency->cols() == n_nodes,
                 "adjacency of another size");
  OPU_FUZZ_CHECK(graph->nodes.n_classes >= 2, "fewer than 2 classes");
  for (const std::int32_t label : graph->nodes.labels) {
    OPU_FUZZ_CHECK(label >= -1 && label < graph->nodes.n_classes,
                   "label " + std::to_string(label) + " of " +
                       std::to_string(graph->nodes.n_classes) + " classes");
  }
  return 0;
}
