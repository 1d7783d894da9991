#include "transformer_app.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>
#include <string>

#include "feedback_setup.h"
#include "trainer/datasets.h"
#include "trainer/graph/learner.h"
#include "trainer/models/transformer.h"
#include "trainer/optimizer.h"
#include "trainer/random.h"
#include "trainer/tasks/language_model.h"
#include "trainer/tasks/records.h"
#include "trainer/tasks/schedule.h"
#include "trainer/tasks/text.h"

namespace opu::trainer::app {
namespace {

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// A sample of a text that is not UTF-8 (bytes) is written with U+FFFD for the invalid bytes.
constexpr auto kReplace = nlohmann::json::error_handler_t::replace;

using tasks::number_or_null;

graph::Activation activation_of(const std::string& name) {
  if (name == "gelu") return graph::Activation::kGelu;
  if (name == "tanh") return graph::Activation::kTanh;
  if (name == "sigmoid") return graph::Activation::kSigmoid;
  return graph::Activation::kRelu;  // finalize() checked the name
}

std::string eval_line(const tasks::LanguageModelRecord& r, std::int64_t steps) {
  std::ostringstream s;
  s << "step " << std::setw(6) << r.step << "/" << steps << "  train " << fixed(r.train_loss, 4)
    << "  val " << fixed(r.val_loss, 4) << " nats/char (ppl " << fixed(r.val_perplexity, 2) << ")";
  for (const Alignment& a : r.alignment) s << "  align[" << a.point << "] " << fixed(a.mean, 3);
  s << "  " << fixed(r.tokens_per_s, 0) << " tok/s  " << fixed(r.step_s, 3) << " s/step  "
    << fixed(r.wall_s, 1) << " s";
  if (r.frames > 0)
    s << "  device " << fixed(r.device_time_s, 2) << " s, " << r.frames << " frames";
  return s.str();
}

void summary_table(std::ostream& out, const std::vector<tasks::LanguageModelRecord>& history,
                   const std::string& title) {
  out << "\n" << title << "\n";
  if (history.empty()) return;
  out << "   step   train     val     ppl";
  for (const Alignment& a : history.front().alignment) out << "  align " << a.point;
  out << "    tok/s\n";
  const std::size_t every = std::max<std::size_t>(1, (history.size() + 19) / 20);
  for (std::size_t i = 0; i < history.size(); ++i) {
    if (i % every != every - 1 && i + 1 != history.size()) continue;
    const tasks::LanguageModelRecord& r = history[i];
    out << std::setw(7) << r.step << "  " << fixed(r.train_loss, 4) << "  " << fixed(r.val_loss, 4)
        << "  " << std::setw(6) << fixed(r.val_perplexity, 2);
    for (const Alignment& head : history.front().alignment) {
      // A record without a measurement (alignment every N steps) shows "-".
      double mean = std::nan("");
      for (const Alignment& a : r.alignment) {
        if (a.point == head.point) mean = a.mean;
      }
      out << "  " << std::setw(static_cast<int>(head.point.size()) + 6) << fixed(mean, 3);
    }
    out << "  " << std::setw(7) << fixed(r.tokens_per_s, 0) << "\n";
  }
}

}  // namespace

Result<nlohmann::json> run_transformer(Options o, std::ostream& out, std::ostream& err,
                                       bool progress_bar) {
  nlohmann::json summary;
  auto fail = [&](const Status& status) -> Result<nlohmann::json> {
    if (progress_bar) err << "\n";
    err << "opu-train: error: " << status.to_string() << "\n";
    summary["error"] = status.to_string();
    summary["model"] = "transformer";
    summary["method"] = o.method;
    summary["feedback"] = o.feedback;
    if (!summary.contains("val_loss")) summary["val_loss"] = nullptr;
    if (!summary.contains("steps")) summary["steps"] = 0;
    out << summary.dump() << std::endl;
    return status;
  };
  const Result<Method> method = parse_method(o.method);
  if (!method.ok()) return fail(method.status());

  // --- data ---
  std::string path = o.data;
  if (path.empty()) {
    Result<std::string> found = find_data("tinyshakespeare/input.txt");
    if (!found.ok()) return fail(not_found(found.status().message() + ", or pass --data FILE"));
    path = *found;
  }
  Result<tasks::TextCorpus> corpus = tasks::load_text(path);
  if (!corpus.ok()) return fail(corpus.status());
  if (static_cast<std::int64_t>(corpus->train.size()) <= o.context ||
      static_cast<std::int64_t>(corpus->validation.size()) < 2) {
    return fail(invalid_argument(path + ": " + std::to_string(corpus->train.size()) +
                                 " training characters, want more than --context " +
                                 std::to_string(o.context)));
  }

  // --- model, feedback, learner ---
  models::TransformerConfig c;
  c.vocab = corpus->vocabulary.size();
  c.layers = o.layers;
  c.d_model = o.d_model;
  c.heads = o.heads;
  c.d_ff = o.d_ff;
  c.context = o.context;
  c.pre_ln = o.pre_ln;
  c.positions =
      o.positions == "learned" ? models::Positions::kLearned : models::Positions::kSinusoidal;
  c.activation = activation_of(o.activation);
  c.dropout = *o.dropout;
  // BP ignores the points, but alignment is measured at them under every method.
  c.points = o.dfa_points == "micro" ? models::DfaPoints::kMicro : models::DfaPoints::kMacro;
  c.error_at_logits = o.dfa_error == "logits";
  c.seed = o.seed;
  std::unique_ptr<models::TransformerModel<float>> model;
  try {
    model = models::build_transformer<float>(c);
  } catch (const StatusError& e) {
    return fail(e.status());
  }
  graph::Graph<float>& g = model->graph;
  graph::Index d_max = 0;
  for (const graph::FeedbackPointRef& p : g.feedback_points()) {
    d_max = std::max(d_max, g.node(p.node).rows);
  }
  FeedbackSetup feedback;
  if (*method == Method::kDfa) {
    Result<FeedbackSetup> made = make_feedback(o, g.node(model->error()).rows, d_max);
    if (!made.ok()) return fail(made.status());
    feedback = std::move(*made);
  }
  if (!o.calibration.empty() && !feedback.calibration) {
    spdlog::warn("--calibration {} is ignored: only device feedback uses a calibration",
                 o.calibration);
  }
  std::unique_ptr<graph::GraphLearner> learner;
  std::unique_ptr<tasks::LearningRate> rate;
  try {
    learner = std::make_unique<graph::GraphLearner>(g, model->loss, model->error(), *method,
                                                    feedback.feedback.get());
    rate = std::make_unique<tasks::LearningRate>(*tasks::parse_schedule(*o.schedule), *o.lr,
                                                 *o.warmup);
  } catch (const StatusError& e) {
    return fail(e.status());
  }
  std::unique_ptr<Optimizer> optimizer;
  if (*o.optimizer == "adam") {
    // The paper's Adam: eps 1e-9, beta2 as chosen.
    optimizer = std::make_unique<Adam>(*o.lr, *o.weight_decay, 0.9F, *o.beta2, 1e-9F);
  } else {
    Result<std::unique_ptr<Optimizer>> made =
        make_optimizer(*o.optimizer, *o.lr, o.momentum, *o.weight_decay);
    if (!made.ok()) return fail(made.status());
    optimizer = std::move(*made);
  }
  tasks::LanguageModelOptions lm;
  lm.steps = *o.steps;
  lm.batch = *o.batch;
  lm.eval_every = o.eval_every;
  lm.eval_chars = o.eval_chars;
  lm.align_every = *o.align_every;
  lm.clip = o.clip;
  lm.seed = o.seed;
  const tasks::LanguageModelNodes nodes{&g, model->tokens, model->targets, model->loss, c.context};
  std::unique_ptr<tasks::LanguageModelTrainer> trainer;
  try {
    trainer = std::make_unique<tasks::LanguageModelTrainer>(lm, nodes, *corpus, *learner,
                                                            *optimizer, *rate);
  } catch (const StatusError& e) {
    return fail(e.status());
  }

  // --- outputs ---
  const std::string feedback_name = feedback.feedback ? feedback.feedback->describe() : "none";
  std::ofstream metrics;
  if (!o.metrics.empty()) {
    metrics.open(o.metrics, std::ios::trunc);
    if (!metrics) return fail(failed_precondition("--metrics " + o.metrics + ": cannot write"));
    nlohmann::json config{{"type", "config"},
                          {"options", to_json(o)},
                          {"model", c.describe()},
                          {"parameters", g.num_parameters()},
                          {"feedback", feedback_name},
                          {"data", path},
                          {"vocabulary", c.vocab},
                          {"train_chars", corpus->train.size()},
                          {"validation_chars", corpus->validation.size()},
                          {"unigram_nats", corpus->unigram_nats}};
    if (feedback.calibration) {
      config["calibration"] = {{"file", feedback.calibration->file},
                               {"exposure_us", feedback.calibration->exposure_us},
                               {"masked_pixels", feedback.calibration->masked_pixels}};
    }
    metrics << config.dump() << "\n";
  }
  out << "opu-train: " << c.describe() << " (" << g.num_parameters() << " parameters) on " << path
      << " (" << c.vocab << " characters; " << corpus->train.size() << " training, "
      << corpus->validation.size() << " validation; unigram " << fixed(corpus->unigram_nats, 3)
      << " nats/char), method " << o.method;
  if (*method != Method::kBp) out << " (" << o.dfa_points << " points)";
  if (feedback.feedback) out << ", feedback " << feedback_name << " of dL/d(" << o.dfa_error << ")";
  out << ", " << *o.optimizer << " lr " << *o.lr << " " << *o.schedule << " (warm-up " << *o.warmup
      << ", beta2 " << *o.beta2 << "), " << *o.steps << " steps of " << *o.batch << "x" << o.context
      << " characters" << std::endl;

  tasks::LanguageModelCallbacks callbacks;
  if (progress_bar) {
    callbacks.on_step = [&](std::int64_t step, std::int64_t steps, double loss) {
      if (step % 10 != 0 && step != steps) return;
      constexpr int kWidth = 30;
      const auto filled = static_cast<int>(kWidth * step / std::max<std::int64_t>(steps, 1));
      err << "\r step " << step << "/" << steps << " [" << std::string(filled, '#')
          << std::string(kWidth - filled, '.') << "] loss " << fixed(loss, 4) << "   "
          << std::flush;
    };
  }
  callbacks.on_eval = [&](const tasks::LanguageModelRecord& r) {
    if (progress_bar) err << "\r" << std::string(80, ' ') << "\r" << std::flush;
    out << eval_line(r, *o.steps) << std::endl;
    if (metrics.is_open()) {
      nlohmann::json j = r.to_json();
      j["type"] = "eval";
      metrics << j.dump() << "\n" << std::flush;
    }
  };
  callbacks.on_alignment = [&](std::int64_t step, const std::vector<Alignment>& alignment) {
    if (!metrics.is_open()) return;
    nlohmann::json j{{"type", "alignment"}, {"step", step}};
    for (const Alignment& a : alignment) {
      j["points"][a.point] = {{"mean", number_or_null(a.mean)}, {"std", number_or_null(a.std)}};
    }
    metrics << j.dump() << "\n";
  };

  const Status status = trainer->run(callbacks);
  const std::vector<tasks::LanguageModelRecord>& history = trainer->history();
  summary["model"] = "transformer";
  summary["method"] = o.method;
  summary["dfa_points"] = o.dfa_points;
  summary["feedback"] = *method == Method::kDfa ? o.feedback : "none";
  summary["dataset"] = path;
  summary["seed"] = o.seed;
  summary["steps"] = trainer->steps_done();
  summary["parameters"] = g.num_parameters();
  summary["unigram_nats"] = corpus->unigram_nats;
  if (!history.empty()) {
    const tasks::LanguageModelRecord& last = history.back();
    double best = last.val_loss;
    double train_seconds = 0.0;
    double wall = last.wall_s;
    double device_time = 0.0;
    std::int64_t frames = 0;
    std::int64_t previous = 0;
    for (const tasks::LanguageModelRecord& r : history) {
      best = std::min(best, r.val_loss);
      train_seconds += r.step_s * static_cast<double>(r.step - previous);
      previous = r.step;
      device_time += r.device_time_s;
      frames += r.frames;
    }
    const double tokens = static_cast<double>(last.step * *o.batch * o.context);
    summary["val_loss"] = number_or_null(last.val_loss);
    summary["val_perplexity"] = number_or_null(last.val_perplexity);
    summary["best_val_loss"] = number_or_null(best);
    summary["train_loss"] = number_or_null(last.train_loss);
    summary["tokens_per_s"] = tokens / train_seconds;
    summary["step_s"] = train_seconds / static_cast<double>(last.step);
    // The latest measurement (records between two measurements have none).
    nlohmann::json alignment = nlohmann::json::object();
    for (auto r = history.rbegin(); r != history.rend() && alignment.empty(); ++r) {
      for (const Alignment& a : r->alignment) alignment[a.point] = number_or_null(a.mean);
    }
    summary["alignment"] = alignment;
    summary["wall_s"] = wall;
    summary["device_time_s"] = device_time;
    summary["frames"] = frames;
  }
  if (!status.ok()) return fail(status);
  if (o.sample > 0) {
    // Generation starts after a newline when the text has one (a new line of the play).
    std::int32_t start = corpus->vocabulary.id(U'\n');
    if (start < 0) start = corpus->validation.front();
    const std::vector<std::int32_t> ids =
        models::generate(*model, {start}, o.sample, o.temperature, derive_seed(o.seed, "sample"));
    const std::string text = corpus->vocabulary.decode(ids);
    out << "\nsample (" << o.sample << " characters, temperature " << o.temperature << "):\n"
        << text << "\n";
    summary["sample"] = text;
  }
  summary_table(out, history,
                "summary: transformer " + o.method +
                    (feedback.feedback ? " (" + feedback_name + ")" : std::string()));
  if (metrics.is_open()) {
    nlohmann::json j = summary;
    j["type"] = "summary";
    metrics << j.dump(-1, ' ', false, kReplace) << "\n";
  }
  out << summary.dump(-1, ' ', false, kReplace) << std::endl;
  return summary;
}

}  // namespace opu::trainer::app
