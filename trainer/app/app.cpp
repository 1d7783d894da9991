#include "app.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "calibrated_device.h"
#include "feedback_setup.h"
#include "opu_sim/threading.h"
#include "trainer/datasets.h"
#include "trainer/feedback.h"
#include "trainer/graph/learner.h"
#include "trainer/models/gcn.h"
#include "trainer/models/mlp.h"
#include "trainer/optimizer.h"
#include "trainer/tasks/classification.h"
#include "transformer_app.h"

namespace opu::trainer::app {
namespace {

std::string percent(double v) {
  if (!std::isfinite(v)) return "   -  ";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%6.2f", 100.0 * v);
  return buffer;
}

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

void draw_bar(std::ostream& err, std::int64_t epoch, std::int64_t epochs, std::int64_t step,
              std::int64_t steps, double loss) {
  constexpr int kWidth = 30;
  const auto filled = static_cast<int>(kWidth * step / std::max<std::int64_t>(steps, 1));
  err << "\r epoch " << epoch << "/" << epochs << " [" << std::string(filled, '#')
      << std::string(kWidth - filled, '.') << "] " << step << "/" << steps << " loss "
      << fixed(loss, 4) << "   " << std::flush;
}

std::string epoch_line(const tasks::EpochRecord& r, std::int64_t epochs) {
  std::ostringstream s;
  s << "epoch " << std::setw(3) << r.epoch << "/" << epochs << "  loss " << fixed(r.loss, 4)
    << "  train " << percent(r.train_accuracy) << "%";
  for (const auto& [split, value] : r.accuracy) {
    if (split != "train") s << "  " << split << " " << percent(value) << "%";
  }
  for (const Alignment& a : r.alignment) {
    s << "  align[" << a.point << "] " << fixed(a.mean, 3);
  }
  s << "  " << fixed(r.wall_s, 2) << " s";
  if (r.frames > 0)
    s << "  device " << fixed(r.device_time_s, 2) << " s, " << r.frames << " frames";
  return s.str();
}

void summary_table(std::ostream& out, const std::vector<tasks::EpochRecord>& history,
                   const std::string& title) {
  out << "\n" << title << "\n";
  if (history.empty()) return;
  out << " epoch    loss   train%";
  for (const auto& [split, value] : history.front().accuracy) {
    if (split != "train") out << "  " << std::setw(6) << split << "%";
  }
  for (const Alignment& a : history.front().alignment) out << "  align " << std::setw(3) << a.point;
  out << "   wall s\n";
  // At most ~20 rows: every k-th epoch and the last.
  const std::size_t every = std::max<std::size_t>(1, (history.size() + 19) / 20);
  for (std::size_t i = 0; i < history.size(); ++i) {
    if (i % every != every - 1 && i + 1 != history.size()) continue;
    const tasks::EpochRecord& r = history[i];
    out << std::setw(6) << r.epoch << "  " << std::setw(6) << fixed(r.loss, 4) << "  "
        << percent(r.train_accuracy);
    for (const auto& [split, value] : r.accuracy) {
      if (split != "train") out << "  " << std::setw(7) << percent(value);
    }
    for (const Alignment& a : r.alignment) out << "  " << std::setw(9) << fixed(a.mean, 3);
    out << "  " << std::setw(7) << fixed(r.wall_s, 2) << "\n";
  }
}

}  // namespace

Result<nlohmann::json> run_training(Options o, std::ostream& out, std::ostream& err,
                                    bool progress_bar) {
  nlohmann::json summary;
  auto fail = [&](const Status& status) -> Result<nlohmann::json> {
    if (progress_bar) err << "\n";
    err << "opu-train: error: " << status.to_string() << "\n";
    summary["error"] = status.to_string();
    summary["method"] = o.method;
    summary["feedback"] = o.feedback;
    if (!summary.contains("test_accuracy")) summary["test_accuracy"] = nullptr;
    if (!summary.contains("epochs")) summary["epochs"] = 0;
    out << summary.dump() << std::endl;
    return status;
  };
  if (const Status valid = finalize(o); !valid.ok()) return fail(valid);
  opu::set_compute_threads(o.threads);
  // The language model trains by steps on its own loop (transformer_app.cpp).
  if (o.model == "transformer") return run_transformer(std::move(o), out, err, progress_bar);
  const Result<Method> method = parse_method(o.method);
  if (!method.ok()) return fail(method.status());

  // --- data and model ---
  std::optional<ImageDataset> images;
  std::optional<GraphDataset> graph_data;
  std::unique_ptr<tasks::ClassificationTask> task;
  std::unique_ptr<models::ClassifierModel<float>> model;
  std::string data_name;
  Result<models::ClassifierLoss> loss = models::parse_classifier_loss(o.loss);
  if (!loss.ok()) return fail(loss.status());
  try {
    if (o.model == "mlp") {
      const std::string dir = o.data.empty() ? kFashionMnistDir : o.data;
      Result<ImageDataset> loaded = load_idx_folder(dir);
      if (!loaded.ok()) return fail(loaded.status());
      images = std::move(*loaded);
      data_name = dir;
      // Both splits with the training split's statistics (never the test set's own), or with
      // the constants given; the header of the metrics file records the values used.
      FeatureStats stats = !o.normalize ? feature_stats(images->train)
                                        : FeatureStats{(*o.normalize)[0], (*o.normalize)[1]};
      if (!(stats.std > 0.0F)) {
        return fail(invalid_argument(
            dir + ": every training pixel has the same value " + std::to_string(stats.mean) +
            ", so the inputs cannot be standardised; pass --normalize 0 1"));
      }
      o.normalize = std::vector<float>{stats.mean, stats.std};
      spdlog::info("inputs: (pixel - {:.4f}) / {:.4f}", stats.mean, stats.std);
      for (LabelledData* split : {&images->train, &images->test}) standardize(*split, stats);
      models::MlpConfig c;
      c.inputs = images->train.features.rows();
      c.hidden.assign(o.hidden->begin(), o.hidden->end());
      c.classes = images->train.n_classes;
      c.activation = graph::Activation::kRelu;  // finalize() checked the name
      if (o.activation == "tanh") {
        c.activation = graph::Activation::kTanh;
      } else if (o.activation == "sigmoid") {
        c.activation = graph::Activation::kSigmoid;
      }
      c.dropout = *o.dropout;
      c.loss = *loss;
      c.seed = o.seed;
      model = models::build_mlp<float>(c);
      task = std::make_unique<tasks::SampleClassification>(*images, *o.batch, o.seed);
    } else {
      std::string dir = o.data;
      if (dir.empty()) {
        Result<std::string> found = find_data("planetoid");
        if (!found.ok()) return fail(not_found(found.status().message() + ", or pass --data DIR"));
        dir = *found;
      }
      Result<GraphDataset> loaded = load_planetoid(dir, o.dataset);
      if (!loaded.ok()) return fail(loaded.status());
      graph_data = std::move(*loaded);
      data_name = dir + "/" + o.dataset;
      models::GcnConfig c;
      c.inputs = graph_data->nodes.features.rows();
      c.hidden.assign(o.hidden->begin(), o.hidden->end());
      c.classes = graph_data->nodes.n_classes;
      c.dropout = *o.dropout;
      c.input_dropout = *o.input_dropout;
      c.loss = *loss;
      c.seed = o.seed;
      model = models::build_gcn<float>(c, graph_data->adjacency);
      task = std::make_unique<tasks::NodeClassification>(*graph_data);
    }
  } catch (const StatusError& e) {
    return fail(e.status());
  }
  graph::Graph<float>& g = model->graph;
  const tasks::ClassifierNodes nodes{&g, model->input, model->labels, model->logits, model->loss};
  Result<std::unique_ptr<Optimizer>> optimizer =
      make_optimizer(*o.optimizer, *o.lr, o.momentum, *o.weight_decay);
  if (!optimizer.ok()) return fail(optimizer.status());

  // --- feedback ---
  graph::Index d_max = 0;
  for (const graph::FeedbackPointRef& p : g.feedback_points()) {
    d_max = std::max(d_max, g.node(p.node).rows);
  }
  FeedbackSetup feedback_setup;
  if (*method == Method::kDfa) {
    Result<FeedbackSetup> made = make_feedback(o, g.node(model->logits).rows, d_max);
    if (!made.ok()) return fail(made.status());
    feedback_setup = std::move(*made);
  }
  const std::optional<AppliedCalibration>& calibration = feedback_setup.calibration;
  const std::unique_ptr<FeedbackSource>& feedback = feedback_setup.feedback;
  if (!o.calibration.empty() && !calibration) {
    spdlog::warn("--calibration {} is ignored: only device feedback uses a calibration",
                 o.calibration);
  }

  std::unique_ptr<graph::GraphLearner> learner;
  std::unique_ptr<tasks::ClassifierTrainer> trainer_ptr;
  tasks::ClassifierTrainerOptions trainer_options;
  trainer_options.epochs = *o.epochs;
  trainer_options.seed = o.seed;
  trainer_options.align_every = *o.align_every;
  trainer_options.checkpoint_dir = o.checkpoint;
  trainer_options.signature = model->signature;
  // What must match for a checkpoint to be resumed (the learning rate or epochs may change).
  trainer_options.identity = {{"model", o.model},
                              {"method", o.method},
                              {"feedback", o.feedback},
                              {"seed", o.seed},
                              {"batch", *o.batch},
                              {"loss", o.loss},
                              {"dataset", o.model == "gcn" ? o.dataset : "idx"}};
  // Only for the noisy control, so that checkpoints of every other setup keep their identity.
  if (o.feedback == "digital-noisy") trainer_options.identity["feedback_snr"] = *o.feedback_snr;
  try {
    learner = std::make_unique<graph::GraphLearner>(g, model->loss, model->logits, *method,
                                                    feedback.get());
    trainer_ptr = std::make_unique<tasks::ClassifierTrainer>(trainer_options, nodes, *task,
                                                             *learner, **optimizer);
  } catch (const StatusError& e) {
    return fail(e.status());
  }
  tasks::ClassifierTrainer& trainer = *trainer_ptr;
  if (o.resume) {
    const Status resumed = trainer.resume(o.checkpoint);
    if (!resumed.ok()) return fail(resumed);
  }

  // --- outputs ---
  std::ofstream metrics;
  if (!o.metrics.empty()) {
    metrics.open(o.metrics, o.resume ? std::ios::app : std::ios::trunc);
    if (!metrics) return fail(failed_precondition("--metrics " + o.metrics + ": cannot write"));
    nlohmann::json config{{"type", "config"},
                          {"options", to_json(o)},
                          {"model", model->signature},
                          {"parameters", g.num_parameters()},
                          {"feedback", feedback ? feedback->describe() : "none"},
                          {"resumed_at_epoch", trainer.epochs_done()}};
    if (calibration) {
      config["calibration"] = {{"file", calibration->file},
                               {"exposure_us", calibration->exposure_us},
                               {"masked_pixels", calibration->masked_pixels}};
    }
    metrics << config.dump() << "\n";
  }
  out << "opu-train: " << o.model << " " << model->signature << " (" << g.num_parameters()
      << " parameters) on " << data_name << ", method " << o.method;
  if (feedback) out << ", feedback " << feedback->describe();
  out << ", " << *o.optimizer << " lr " << *o.lr << ", " << *o.epochs << " epochs";
  if (trainer.epochs_done() > 0) out << " (resuming after epoch " << trainer.epochs_done() << ")";
  out << std::endl;

  tasks::ClassifierCallbacks callbacks;
  if (progress_bar) {
    callbacks.on_step = [&](std::int64_t epoch, std::int64_t step, std::int64_t steps,
                            double step_loss) {
      if (step == steps || step % 10 == 0) draw_bar(err, epoch, *o.epochs, step, steps, step_loss);
    };
  }
  callbacks.on_epoch = [&](const tasks::EpochRecord& r) {
    if (progress_bar) err << "\r" << std::string(80, ' ') << "\r" << std::flush;
    out << epoch_line(r, *o.epochs) << std::endl;
    if (metrics.is_open()) {
      nlohmann::json j = r.to_json();
      j["type"] = "epoch";
      metrics << j.dump() << "\n" << std::flush;
    }
  };
  callbacks.on_alignment = [&](std::int64_t epoch, std::int64_t step,
                               const std::vector<Alignment>& alignment) {
    if (!metrics.is_open()) return;
    nlohmann::json j{{"type", "alignment"}, {"epoch", epoch}, {"step", step}};
    for (const Alignment& a : alignment) {
      j["points"][a.point] = {{"mean", std::isfinite(a.mean) ? nlohmann::json(a.mean) : nullptr},
                              {"std", std::isfinite(a.std) ? nlohmann::json(a.std) : nullptr}};
    }
    metrics << j.dump() << "\n";
  };

  const Status status = trainer.run(callbacks);
  const std::vector<tasks::EpochRecord>& history = trainer.history();
  summary["method"] = o.method;
  summary["feedback"] = *method == Method::kDfa ? o.feedback : "none";
  summary["model"] = o.model;
  summary["dataset"] = o.model == "gcn" ? o.dataset : data_name;
  summary["epochs"] = trainer.epochs_done();
  summary["seed"] = o.seed;
  if (!history.empty()) {
    const tasks::EpochRecord& last = history.back();
    double best = 0.0;
    double test_at_best_val = std::nan("");
    double best_val = -1.0;
    double wall = 0.0;
    double device_time = 0.0;
    std::int64_t frames = 0;
    for (const tasks::EpochRecord& r : history) {
      best = std::max(best, r.accuracy.count("test") ? r.accuracy.at("test") : 0.0);
      if (auto it = r.accuracy.find("val"); it != r.accuracy.end() && it->second > best_val) {
        best_val = it->second;
        test_at_best_val = r.accuracy.at("test");
      }
      wall += r.wall_s;
      device_time += r.device_time_s;
      frames += r.frames;
    }
    summary["test_accuracy"] = last.accuracy.count("test") ? last.accuracy.at("test") : 0.0;
    summary["best_test_accuracy"] = best;
    if (best_val >= 0.0) {
      summary["val_accuracy"] = last.accuracy.at("val");
      summary["test_accuracy_at_best_val"] = test_at_best_val;
    }
    summary["train_accuracy"] = last.train_accuracy;
    summary["final_loss"] = std::isfinite(last.loss) ? nlohmann::json(last.loss) : nullptr;
    nlohmann::json alignment = nlohmann::json::object();
    for (const Alignment& a : last.alignment) {
      alignment[a.point] = std::isfinite(a.mean) ? nlohmann::json(a.mean) : nullptr;
    }
    summary["alignment"] = alignment;
    summary["wall_s"] = wall;
    summary["device_time_s"] = device_time;
    summary["frames"] = frames;
  }
  if (!status.ok()) return fail(status);
  summary_table(out, history,
                "summary: " + o.model + " " + o.method +
                    (feedback ? " (" + feedback->describe() + ")" : std::string()));
  if (metrics.is_open()) {
    nlohmann::json j = summary;
    j["type"] = "summary";
    metrics << j.dump() << "\n";
  }
  out << summary.dump() << std::endl;
  return summary;
}

}  // namespace opu::trainer::app
