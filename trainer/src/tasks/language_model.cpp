#include "trainer/tasks/language_model.h"
#include "trainer/tasks/records.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <utility>

namespace opu::trainer::tasks {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

/// Mean alignment per point over several measurements (NaN means are skipped).
class AlignmentAverage {
 public:
  void add(const std::vector<Alignment>& measured) {
    for (const Alignment& a : measured) {
      Sum& s = sums_[a.point];
      if (order_.size() < sums_.size()) order_.push_back(a.point);
      if (a.samples == 0 || !std::isfinite(a.mean)) continue;
      s.mean += a.mean;
      s.std += a.std;
      s.samples += a.samples;
      ++s.count;
    }
  }
  std::vector<Alignment> take() {
    std::vector<Alignment> out;
    for (const std::string& point : order_) {
      const Sum& s = sums_[point];
      Alignment a;
      a.point = point;
      a.samples = s.samples;
      a.mean = s.count > 0 ? s.mean / s.count : std::numeric_limits<double>::quiet_NaN();
      a.std = s.count > 0 ? s.std / s.count : std::numeric_limits<double>::quiet_NaN();
      out.push_back(a);
    }
    sums_.clear();
    order_.clear();
    return out;
  }

 private:
  struct Sum {
    double mean = 0.0;
    double std = 0.0;
    std::int64_t samples = 0;
    int count = 0;
  };
  std::map<std::string, Sum> sums_;
  std::vector<std::string> order_;
};

}  // namespace

nlohmann::json LanguageModelRecord::to_json() const {
  nlohmann::json j;
  j["step"] = step;
  j["train_loss"] = number_or_null(train_loss);
  j["val_loss"] = number_or_null(val_loss);
  j["val_perplexity"] = number_or_null(val_perplexity);
  j["tokens_per_s"] = tokens_per_s;
  j["step_s"] = step_s;
  j["lr"] = lr;
  j["grad_norm"] = number_or_null(grad_norm);
  j["alignment"] = alignment_json(alignment);
  j["wall_s"] = wall_s;
  j["device_time_s"] = device_time_s;
  j["frames"] = frames;
  return j;
}

LanguageModelTrainer::LanguageModelTrainer(LanguageModelOptions options,
                                           const LanguageModelNodes& model,
                                           const TextCorpus& corpus, graph::GraphLearner& learner,
                                           Optimizer& optimizer, LearningRate& rate)
    : options_(std::move(options)),
      model_(model),
      corpus_(corpus),
      learner_(learner),
      optimizer_(optimizer),
      rate_(rate) {
  OPU_CHECK(model.graph != nullptr, "LanguageModelTrainer: no graph");
  if (options_.steps < 1 || options_.batch < 1 || options_.eval_every < 0 ||
      options_.align_every < 0 || options_.eval_chars < 0 || !(options_.clip >= 0.0)) {
    throw StatusError(
        invalid_argument("LanguageModelTrainer: steps and batch must be >= 1, "
                         "eval_every, align_every, eval_chars and clip >= 0"));
  }
  if (static_cast<Index>(corpus.train.size()) <= model.context) {
    throw StatusError(invalid_argument(
        corpus.source + ": the training split has " + std::to_string(corpus.train.size()) +
        " characters, want more than the context " + std::to_string(model.context)));
  }
}

TextEvaluation LanguageModelTrainer::evaluate() {
  return evaluate_text(model_, corpus_.validation, options_.batch, options_.eval_chars);
}

Status LanguageModelTrainer::run(const LanguageModelCallbacks& callbacks) {
  using Clock = std::chrono::steady_clock;
  graph::Graph<float>& g = *model_.graph;
  const Index len = model_.context;
  const Index batch = options_.batch;
  const auto start = Clock::now();
  double train_seconds = 0.0;
  double loss_sum = 0.0;
  double norm_sum = 0.0;
  std::int64_t steps_since = 0;
  AlignmentAverage alignment;
  FeedbackCost cost_before = learner_.feedback() ? learner_.feedback()->cost() : FeedbackCost{};

  while (step_ < options_.steps) {
    ++step_;
    const auto t0 = Clock::now();
    std::vector<std::int32_t>& tokens = g.ids_buffer(model_.tokens, len * batch, len);
    std::vector<std::int32_t>& targets = g.ids_buffer(model_.targets, len * batch, len);
    sample_windows(corpus_.train, len, batch, options_.seed, static_cast<std::uint64_t>(step_ - 1),
                   tokens, targets);
    const bool measure =
        options_.align_every > 0 && (step_ == 1 || step_ % options_.align_every == 0);
    Result<double> loss = learner_.compute_gradients(
        ForwardContext{true, static_cast<std::uint64_t>(step_)}, measure);
    if (!loss.ok()) return loss.status().with_context("step " + std::to_string(step_));
    if (!std::isfinite(*loss)) {
      return failed_precondition("step " + std::to_string(step_) + ": training loss is " +
                                 std::to_string(*loss) +
                                 ", want a finite value (diverged: lower --lr)");
    }
    norm_sum += clip_grad_norm(learner_.trainable(), options_.clip);
    const double lr = rate_.at(step_);
    optimizer_.set_learning_rate(static_cast<float>(lr));
    optimizer_.step(learner_.trainable());
    train_seconds += seconds_since(t0);
    loss_sum += *loss;
    ++steps_since;
    if (measure) {
      alignment.add(learner_.alignment());
      if (callbacks.on_alignment) callbacks.on_alignment(step_, learner_.alignment());
    }
    if (callbacks.on_step) callbacks.on_step(step_, options_.steps, *loss);

    const bool last = step_ == options_.steps;
    if (last || (options_.eval_every > 0 && step_ % options_.eval_every == 0)) {
      const TextEvaluation eval = evaluate();
      rate_.observe(eval.nats_per_char);
      LanguageModelRecord r;
      r.step = step_;
      r.train_loss = loss_sum / static_cast<double>(steps_since);
      r.val_loss = eval.nats_per_char;
      r.val_perplexity = eval.perplexity;
      r.step_s = train_seconds / static_cast<double>(steps_since);
      r.tokens_per_s = static_cast<double>(steps_since * len * batch) / train_seconds;
      r.lr = lr;
      r.grad_norm = norm_sum / static_cast<double>(steps_since);
      r.alignment = alignment.take();
      r.wall_s = seconds_since(start);
      if (learner_.feedback() != nullptr) {
        const FeedbackCost& cost = learner_.feedback()->cost();
        r.frames = cost.frames - cost_before.frames;
        r.device_time_s =
            1e-9 * static_cast<double>(cost.device_time_ns - cost_before.device_time_ns);
        cost_before = cost;
      }
      history_.push_back(r);
      if (callbacks.on_eval) callbacks.on_eval(r);
      train_seconds = 0.0;
      loss_sum = 0.0;
      norm_sum = 0.0;
      steps_since = 0;
    }
  }
  return {};
}

}  // namespace opu::trainer::tasks
