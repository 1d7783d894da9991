// The paper's Transformer language model as a graph (docs/trainer.md, "The Transformer"):
// decoder-only (causal self-attention), post-LayerNorm blocks as the paper's
// CustomTransformerEncoderLayer (pre-LN as an option), sinusoidal positions (learned as an
// option), untied input and output embeddings, and the DFA feedback points of the paper's two
// variants:
//   macro ("simple"): one point at each block's output;
//   micro ("full"):   after the attention sublayer (its residual sum and norm), after the FFN's
//                     hidden activation (and its dropout), and at the block's output.
// The error DFA projects is dL/d(final hidden state) per token, as the paper (the DFA module sits
// before the decoder); error_at_logits moves it after the decoder (the vocabulary error).
//
// Weights are initialised as the paper's PyTorch code does: embedding and decoder U(-0.1, 0.1)
// (decoder bias 0), attention input projection Xavier-uniform with zero bias, output projection
// U(±1/sqrt(d)) with zero bias, FFN layers nn.Linear's default U(±1/sqrt(fan_in)), layer norms 1
// and 0; the token embedding is scaled by sqrt(d_model) before the positions are added.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/graph/graph.h"
#include "trainer/graph/ops_dense.h"

namespace opu::trainer::models {

using graph::Index;
using graph::NodeId;

/// Where the DFA feedback points go.
enum class DfaPoints { kNone, kMacro, kMicro };
std::string dfa_points_name(DfaPoints points);
Result<DfaPoints> parse_dfa_points(const std::string& name);

enum class Positions { kSinusoidal, kLearned };

struct TransformerConfig {
  Index vocab = 0;  // characters of the corpus
  Index layers = 4;
  Index d_model = 128;
  Index heads = 4;
  Index d_ff = 512;
  Index context = 128;  // the longest sequence (positions)
  bool pre_ln = false;
  Positions positions = Positions::kSinusoidal;
  graph::Activation activation = graph::Activation::kRelu;  // the paper's default
  double dropout = 0.1;  // every dropout of the paper's model: positions, attention, residuals, FFN
  DfaPoints points = DfaPoints::kMacro;
  bool error_at_logits = false;
  std::uint64_t seed = 1;

  /// INVALID_ARGUMENT naming the field when a size is out of range.
  Status validate() const;
  /// "transformer L4 d128 h4 ff512 ctx128 post-ln sinusoidal relu vocab65 dropout0.1".
  std::string describe() const;
};

/// The built model: its graph and the nodes a task needs.
template <typename T>
struct TransformerModel {
  TransformerConfig config;
  graph::Graph<T> graph;
  NodeId tokens = graph::kNoNode;   // index input: token ids, seq_len positions per sequence
  NodeId targets = graph::kNoNode;  // index input: the next token of each position
  NodeId hidden = graph::kNoNode;   // the final hidden state (d_model per token)
  NodeId logits = graph::kNoNode;   // vocab per token
  NodeId loss = graph::kNoNode;     // mean cross-entropy in nats per token
  /// DFA's error node: hidden, or logits with error_at_logits.
  NodeId error() const { return config.error_at_logits ? logits : hidden; }
};

/// Builds the graph (feedback points as config.points). Throws StatusError on a bad config.
template <typename T>
std::unique_ptr<TransformerModel<T>> build_transformer(const TransformerConfig& config);

/// Continues `prompt` (ids; at least one) by `count` tokens, each drawn from the model's
/// next-token distribution at `temperature` (0 = the most likely token), feeding the last
/// `context` tokens each time. The draws are a pure function of `seed`.
std::vector<std::int32_t> generate(TransformerModel<float>& model, std::vector<std::int32_t> prompt,
                                   std::int64_t count, double temperature, std::uint64_t seed);

extern template struct TransformerModel<float>;
extern template struct TransformerModel<double>;

}  // namespace opu::trainer::models
