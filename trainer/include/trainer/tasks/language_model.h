// Training a language model on a text corpus, step by step (the Transformer's loop): a batch of
// random windows per step, the method's gradients (GraphLearner), gradient-norm clipping, the
// scheduled learning rate, Adam; every `eval_every` steps the validation loss in nats per
// character, tokens per second and alignment.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/graph/learner.h"
#include "trainer/optimizer.h"
#include "trainer/tasks/schedule.h"
#include "trainer/tasks/text.h"

namespace opu::trainer::tasks {

struct LanguageModelOptions {
  std::int64_t steps = 2000;
  Index batch = 32;                // windows per step (of the model's context)
  std::int64_t eval_every = 200;   // steps between evaluations (0: at the end only)
  std::int64_t eval_chars = 0;     // characters of the validation split evaluated (0: all)
  std::int64_t align_every = 100;  // steps between alignment measurements (0: never)
  double clip = 0.5;               // gradient-norm clipping (0: none); the paper's 0.5
  std::uint64_t seed = 1;          // the data order
};

/// One evaluation, with what training did since the previous one.
struct LanguageModelRecord {
  std::int64_t step = 0;
  double train_loss = 0.0;  // mean training loss (nats per character) since the last record
  double val_loss = 0.0;    // nats per character on the validation split
  double val_perplexity = 0.0;
  double tokens_per_s = 0.0;         // training tokens per second of training (evaluation excluded)
  double step_s = 0.0;               // seconds per training step
  double lr = 0.0;                   // the rate of the last step
  double grad_norm = 0.0;            // mean gradient norm before clipping since the last record
  std::vector<Alignment> alignment;  // mean over the measurements since the last record
  double wall_s = 0.0;               // since the start, evaluations included
  double device_time_s = 0.0;        // device feedback: device time since the last record
  std::int64_t frames = 0;           // device feedback: camera frames since the last record
  nlohmann::json to_json() const;
};

struct LanguageModelCallbacks {
  std::function<void(std::int64_t step, std::int64_t steps, double loss)> on_step;
  std::function<void(const LanguageModelRecord&)> on_eval;
  std::function<void(std::int64_t step, const std::vector<Alignment>&)> on_alignment;
};

/// Borrowed model, corpus, learner, optimiser and schedule must outlive it.
class LanguageModelTrainer {
 public:
  LanguageModelTrainer(LanguageModelOptions options, const LanguageModelNodes& model,
                       const TextCorpus& corpus, graph::GraphLearner& learner, Optimizer& optimizer,
                       LearningRate& rate);
  /// Trains options.steps steps. A non-finite training loss stops with FAILED_PRECONDITION naming
  /// the step; a failing feedback source stops with its error.
  Status run(const LanguageModelCallbacks& callbacks = {});
  /// Evaluates the validation split now.
  TextEvaluation evaluate();
  const std::vector<LanguageModelRecord>& history() const { return history_; }
  std::int64_t steps_done() const { return step_; }

 private:
  LanguageModelOptions options_;
  LanguageModelNodes model_;
  const TextCorpus& corpus_;
  graph::GraphLearner& learner_;
  Optimizer& optimizer_;
  LearningRate& rate_;
  std::int64_t step_ = 0;
  std::vector<LanguageModelRecord> history_;
};

}  // namespace opu::trainer::tasks
