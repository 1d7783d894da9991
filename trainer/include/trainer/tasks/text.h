// Character-level language modelling on any text file (docs/trainer.md, "The Transformer"):
// the vocabulary is the file's characters, the first 90% is the training split and the last 10%
// the validation split; training batches are windows at random offsets; the metric is the
// validation loss in nats per character (and its perplexity).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/graph/graph.h"

namespace opu::trainer::tasks {

using graph::Index;
using graph::NodeId;

/// The distinct characters of a text, sorted: Unicode code points when the text is valid UTF-8,
/// else its bytes (any other encoding).
class CharVocabulary {
 public:
  CharVocabulary() = default;
  CharVocabulary(std::vector<char32_t> symbols, bool utf8);

  std::int32_t size() const { return static_cast<std::int32_t>(symbols_.size()); }
  bool utf8() const { return utf8_; }
  char32_t symbol(std::int32_t id) const { return symbols_[static_cast<std::size_t>(id)]; }
  /// The id of `c`, -1 when it is not in the vocabulary.
  std::int32_t id(char32_t c) const;
  /// The text of `ids` (UTF-8 when the vocabulary is, else the bytes).
  std::string decode(std::span<const std::int32_t> ids) const;

 private:
  std::vector<char32_t> symbols_;
  bool utf8_ = true;
};

struct TextCorpus {
  std::string source;  // the file (or a name for in-memory text)
  CharVocabulary vocabulary;
  std::vector<std::int32_t> train;       // the first 90% of the characters
  std::vector<std::int32_t> validation;  // the rest
  /// Cross-entropy on the validation split of the training split's character frequencies (with
  /// add-one smoothing), in nats per character: the baseline a model must beat.
  double unigram_nats = 0.0;
};

/// Splits `text` (UTF-8 or bytes) into the training fraction and the rest. INVALID_ARGUMENT when
/// either split would be shorter than 2 characters or there is a single distinct character.
Result<TextCorpus> make_corpus(std::string_view text, const std::string& source,
                               double train_fraction = 0.9);
/// Reads a text file: NOT_FOUND when missing, then make_corpus().
Result<TextCorpus> load_text(const std::string& path, double train_fraction = 0.9);

/// One training batch: `batch` windows of len + 1 characters at offsets drawn from (seed, step)
/// uniformly over the split; tokens are each window's first len characters, targets its last len
/// (the next character of each position), sequence after sequence (column b len + t).
void sample_windows(std::span<const std::int32_t> split, Index len, Index batch, std::uint64_t seed,
                    std::uint64_t step, std::vector<std::int32_t>& tokens,
                    std::vector<std::int32_t>& targets);

/// A language model as the evaluation sees it: its graph and nodes.
struct LanguageModelNodes {
  graph::Graph<float>* graph = nullptr;
  NodeId tokens = graph::kNoNode;
  NodeId targets = graph::kNoNode;
  NodeId loss = graph::kNoNode;  // a SoftmaxCrossEntropyOp
  Index context = 0;             // the longest window
};

struct TextEvaluation {
  double nats_per_char = 0.0;
  double perplexity = 0.0;
  std::int64_t chars = 0;  // characters predicted
};

/// Loss on `split` in evaluation mode: the split cut into consecutive windows of `context`
/// characters (each position predicting the next, the first of a window without earlier context,
/// as the paper's evaluate()), `batch` windows per forward, the last shorter window on its own.
/// `max_chars` > 0 evaluates the first max_chars + 1 characters only.
TextEvaluation evaluate_text(const LanguageModelNodes& model, std::span<const std::int32_t> split,
                             Index batch, std::int64_t max_chars = 0);

}  // namespace opu::trainer::tasks
