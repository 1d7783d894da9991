#include "trainer/tasks/text.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>
#include <unordered_map>

#include "trainer/graph/ops_loss.h"
#include "trainer/param.h"
#include "trainer/random.h"

namespace opu::trainer::tasks {
namespace {

/// Decodes UTF-8 strictly (no overlong forms, no surrogates, at most U+10FFFF); false when `text`
/// is not UTF-8.
bool decode_utf8(std::string_view text, std::vector<char32_t>& out) {
  out.clear();
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    if (b0 < 0x80U) {
      out.push_back(b0);
      ++i;
      continue;
    }
    std::size_t extra = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((b0 & 0xE0U) == 0xC0U) {
      extra = 1;
      cp = b0 & 0x1FU;
      min = 0x80;
    } else if ((b0 & 0xF0U) == 0xE0U) {
      extra = 2;
      cp = b0 & 0x0FU;
      min = 0x800;
    } else if ((b0 & 0xF8U) == 0xF0U) {
      extra = 3;
      cp = b0 & 0x07U;
      min = 0x10000;
    } else {
      return false;
    }
    if (i + extra >= text.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      if ((b & 0xC0U) != 0x80U) return false;
      cp = (cp << 6U) | (b & 0x3FU);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    out.push_back(cp);
    i += extra + 1;
  }
  return true;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0U | (cp >> 6U)));
    out.push_back(static_cast<char>(0x80U | (cp & 0x3FU)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0U | (cp >> 12U)));
    out.push_back(static_cast<char>(0x80U | ((cp >> 6U) & 0x3FU)));
    out.push_back(static_cast<char>(0x80U | (cp & 0x3FU)));
  } else {
    out.push_back(static_cast<char>(0xF0U | (cp >> 18U)));
    out.push_back(static_cast<char>(0x80U | ((cp >> 12U) & 0x3FU)));
    out.push_back(static_cast<char>(0x80U | ((cp >> 6U) & 0x3FU)));
    out.push_back(static_cast<char>(0x80U | (cp & 0x3FU)));
  }
}

}  // namespace

CharVocabulary::CharVocabulary(std::vector<char32_t> symbols, bool utf8)
    : symbols_(std::move(symbols)), utf8_(utf8) {
  std::sort(symbols_.begin(), symbols_.end());
  symbols_.erase(std::unique(symbols_.begin(), symbols_.end()), symbols_.end());
}

std::int32_t CharVocabulary::id(char32_t c) const {
  const auto it = std::lower_bound(symbols_.begin(), symbols_.end(), c);
  if (it == symbols_.end() || *it != c) return -1;
  return static_cast<std::int32_t>(it - symbols_.begin());
}

std::string CharVocabulary::decode(std::span<const std::int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (std::int32_t i : ids) {
    const char32_t c = symbol(i);
    if (utf8_) {
      append_utf8(c, out);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

Result<TextCorpus> make_corpus(std::string_view text, const std::string& source,
                               double train_fraction) {
  if (!(train_fraction > 0.0 && train_fraction < 1.0)) {
    return invalid_argument(source + ": training fraction " + std::to_string(train_fraction) +
                            ", want in (0, 1)");
  }
  std::vector<char32_t> chars;
  const bool utf8 = decode_utf8(text, chars);
  if (!utf8) chars.assign(text.begin(), text.end());
  if (!utf8) {
    for (char32_t& c : chars) c &= 0xFFU;  // bytes, not sign-extended chars
  }
  TextCorpus corpus;
  corpus.source = source;
  corpus.vocabulary = CharVocabulary(chars, utf8);
  const CharVocabulary& vocab = corpus.vocabulary;
  if (vocab.size() < 2) {
    return invalid_argument(source + ": " + std::to_string(vocab.size()) +
                            " distinct characters, want at least 2 to model");
  }
  std::unordered_map<char32_t, std::int32_t> index;
  for (std::int32_t i = 0; i < vocab.size(); ++i) index[vocab.symbol(i)] = i;
  const auto n = static_cast<std::int64_t>(chars.size());
  const auto n_train =
      static_cast<std::int64_t>(std::floor(static_cast<double>(n) * train_fraction));
  if (n_train < 2 || n - n_train < 2) {
    return invalid_argument(source + ": " + std::to_string(n) +
                            " characters are too few to split into training (" +
                            std::to_string(n_train) + ") and validation (" +
                            std::to_string(n - n_train) + ") text of at least 2 each");
  }
  corpus.train.reserve(static_cast<std::size_t>(n_train));
  corpus.validation.reserve(static_cast<std::size_t>(n - n_train));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t id = index[chars[static_cast<std::size_t>(i)]];
    (i < n_train ? corpus.train : corpus.validation).push_back(id);
  }
  // The unigram baseline, add-one smoothed so that a character unseen in training costs finitely.
  std::vector<double> counts(static_cast<std::size_t>(vocab.size()), 1.0);
  for (std::int32_t id : corpus.train) counts[static_cast<std::size_t>(id)] += 1.0;
  const double total = static_cast<double>(n_train) + static_cast<double>(vocab.size());
  double nats = 0.0;
  for (std::int32_t id : corpus.validation)
    nats -= std::log(counts[static_cast<std::size_t>(id)] / total);
  corpus.unigram_nats = nats / static_cast<double>(corpus.validation.size());
  return corpus;
}

Result<TextCorpus> load_text(const std::string& path, double train_fraction) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(path + ": no such file (or not readable)");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return data_loss(path + ": read error");
  return make_corpus(buffer.str(), path, train_fraction);
}

void sample_windows(std::span<const std::int32_t> split, Index len, Index batch, std::uint64_t seed,
                    std::uint64_t step, std::vector<std::int32_t>& tokens,
                    std::vector<std::int32_t>& targets) {
  const auto n = static_cast<Index>(split.size());
  OPU_CHECK(len >= 1 && batch >= 1 && n > len, "sample_windows: " + std::to_string(n) +
                                                   " characters, windows of " +
                                                   std::to_string(len + 1));
  const CounterRng rng(seed, "text/windows");
  tokens.resize(static_cast<std::size_t>(len * batch));
  targets.resize(static_cast<std::size_t>(len * batch));
  for (Index b = 0; b < batch; ++b) {
    const auto start = static_cast<Index>(
        rng.below(step * static_cast<std::uint64_t>(batch) + static_cast<std::uint64_t>(b),
                  static_cast<std::uint64_t>(n - len)));
    const std::int32_t* w = split.data() + start;
    std::copy(w, w + len, tokens.begin() + b * len);
    std::copy(w + 1, w + len + 1, targets.begin() + b * len);
  }
}

TextEvaluation evaluate_text(const LanguageModelNodes& model, std::span<const std::int32_t> split,
                             Index batch, std::int64_t max_chars) {
  OPU_CHECK(model.graph != nullptr && model.context >= 1 && batch >= 1, "evaluate_text: no model");
  graph::Graph<float>& g = *model.graph;
  const auto* loss_op =
      dynamic_cast<const graph::SoftmaxCrossEntropyOp<float>*>(g.node(model.loss).op.get());
  OPU_CHECK(loss_op != nullptr, "evaluate_text: the loss node is not a softmax cross-entropy");
  auto n = static_cast<std::int64_t>(split.size());
  if (max_chars > 0) n = std::min(n, max_chars + 1);
  const std::int64_t predictions = n - 1;
  const Index len = model.context;
  double total = 0.0;
  std::int64_t counted = 0;
  std::vector<std::int32_t>* tokens = nullptr;
  std::vector<std::int32_t>* targets = nullptr;
  std::int64_t first = 0;
  while (first < predictions) {
    const std::int64_t left = predictions - first;
    // Full windows, `batch` at a time; then the last shorter one alone.
    const Index window = left >= len ? len : static_cast<Index>(left);
    const Index windows = window == len ? std::min<Index>(batch, left / len) : 1;
    tokens = &g.ids_buffer(model.tokens, window * windows, window);
    targets = &g.ids_buffer(model.targets, window * windows, window);
    for (Index w = 0; w < windows; ++w) {
      const std::int32_t* src = split.data() + first + w * window;
      std::copy(src, src + window, tokens->begin() + w * window);
      std::copy(src + 1, src + window + 1, targets->begin() + w * window);
    }
    g.forward(ForwardContext{false, 0}, model.loss);
    total += loss_op->total();
    counted += loss_op->counted();
    first += window * windows;
  }
  TextEvaluation result;
  result.chars = counted;
  result.nats_per_char = counted > 0 ? total / static_cast<double>(counted) : 0.0;
  result.perplexity = std::exp(result.nats_per_char);
  return result;
}

}  // namespace opu::trainer::tasks
