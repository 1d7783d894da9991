// Classification tasks (data and metrics) and their epoch loop: mini-batches of samples (the
// MLP on images; any classifier of feature vectors) and full-batch node classification (the GCN
// on a citation graph; the graph networks that follow), per-epoch records, alignment every N
// steps, atomic checkpoints and bit-for-bit resume.
//
// Reproducibility: everything random is a pure function of the user seed and a counter (the data
// order of epoch k, the dropout masks of step s, the digital feedback matrix), so a checkpoint
// holds only the parameters, the optimiser state and the counters, and a resumed run produces the
// same bits as one that was never interrupted. (Device feedback with camera noise is the
// exception: the device's noise stream lives in the device.)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/datasets.h"
#include "trainer/graph/learner.h"
#include "trainer/optimizer.h"

namespace opu::trainer::tasks {

using graph::Index;
using graph::NodeId;

/// The nodes of a classifier graph that a task drives (models::ClassifierModel has them).
struct ClassifierNodes {
  graph::Graph<float>* graph = nullptr;
  NodeId input = graph::kNoNode;   // float: features x columns
  NodeId labels = graph::kNoNode;  // index: class per column, negative = not in the loss
  NodeId logits = graph::kNoNode;  // classes x columns
  NodeId loss = graph::kNoNode;
};

/// Where batches come from and how a classifier is scored.
class ClassificationTask {
 public:
  virtual ~ClassificationTask() = default;
  virtual Index input_size() const = 0;
  virtual Index output_size() const = 0;
  virtual std::int64_t steps_per_epoch() const = 0;
  /// Sets the input and labels of step `step` of `epoch` (0-based) in place.
  virtual void load_batch(std::int64_t epoch, std::int64_t step, const ClassifierNodes& model) = 0;
  /// Accuracy per split ("train", "val", "test") in evaluation mode. The "train" entry may be
  /// omitted when the trainer's running accuracy stands for it.
  virtual std::map<std::string, double> evaluate(const ClassifierNodes& model) = 0;
  /// Splits evaluate() reports, in display order.
  virtual std::vector<std::string> splits() const = 0;
};

/// Mini-batches of labelled samples (one per column), reshuffled every epoch from (seed, epoch).
/// The last partial batch is kept (like PyTorch's DataLoader default). Scored on the test split,
/// in chunks of 1,000 samples.
class SampleClassification final : public ClassificationTask {
 public:
  SampleClassification(const ImageDataset& data, std::int64_t batch, std::uint64_t seed);
  Index input_size() const override { return data_.train.features.rows(); }
  Index output_size() const override { return data_.train.n_classes; }
  std::int64_t steps_per_epoch() const override;
  void load_batch(std::int64_t epoch, std::int64_t step, const ClassifierNodes& model) override;
  std::map<std::string, double> evaluate(const ClassifierNodes& model) override;
  std::vector<std::string> splits() const override { return {"test"}; }

 private:
  const ImageDataset& data_;
  std::int64_t batch_;
  std::uint64_t seed_;
  std::int64_t order_epoch_ = -1;
  std::vector<std::int64_t> order_;
};

/// Full-batch node classification: every step sees the whole graph (one column per node); the
/// labels of nodes outside the training split are -1, so the loss sees the training nodes only.
class NodeClassification final : public ClassificationTask {
 public:
  explicit NodeClassification(const GraphDataset& data);
  Index input_size() const override { return data_.nodes.features.rows(); }
  Index output_size() const override { return data_.nodes.n_classes; }
  std::int64_t steps_per_epoch() const override { return 1; }
  void load_batch(std::int64_t epoch, std::int64_t step, const ClassifierNodes& model) override;
  std::map<std::string, double> evaluate(const ClassifierNodes& model) override;
  std::vector<std::string> splits() const override { return {"train", "val", "test"}; }

 private:
  void set_features(const ClassifierNodes& model) const;
  const GraphDataset& data_;
  std::vector<std::int32_t> train_labels_;
};

/// Correctly classified columns among those with a label >= 0: argmax of each logits column.
struct ClassCount {
  std::int64_t correct = 0;
  std::int64_t counted = 0;
};
ClassCount count_correct(const Eigen::Ref<const graph::Matrix<float>>& logits,
                         std::span<const std::int32_t> labels);

/// What one epoch did.
struct EpochRecord {
  std::int64_t epoch = 0;       // 1-based
  double loss = 0.0;            // mean training loss over the epoch's steps
  double train_accuracy = 0.0;  // running accuracy of the epoch (training mode), or evaluate()'s
  std::map<std::string, double> accuracy;  // per split from evaluate()
  std::vector<Alignment> alignment;        // mean over the epoch's measurements per point
  double wall_s = 0.0;
  double device_time_s = 0.0;
  std::int64_t frames = 0;
  nlohmann::json to_json() const;
  static EpochRecord from_json(const nlohmann::json& j);
};

struct ClassifierTrainerOptions {
  std::int64_t epochs = 15;
  std::uint64_t seed = 1;  // the run's seed, recorded in checkpoints (tasks and models own theirs)
  /// Measure alignment every N steps (0 = never). The measurement costs one extra BP backward.
  std::int64_t align_every = 50;
  std::string checkpoint_dir;  // empty = no checkpoints; else written after every epoch
  /// Free-form description stored in checkpoints and compared on resume (model, method, ...):
  /// a mismatch is FAILED_PRECONDITION naming both.
  nlohmann::json identity;
  /// The model's architecture (ClassifierModel::signature), checked on resume.
  std::string signature;
};

/// Called after each step (for progress bars), after each alignment measurement and each epoch.
struct ClassifierCallbacks {
  std::function<void(std::int64_t epoch, std::int64_t step, std::int64_t steps, double loss)>
      on_step;
  std::function<void(const EpochRecord&)> on_epoch;
  std::function<void(std::int64_t epoch, std::int64_t step, const std::vector<Alignment>&)>
      on_alignment;
};

/// Borrowed model, task, learner and optimiser must outlive it.
class ClassifierTrainer {
 public:
  /// Throws StatusError (INVALID_ARGUMENT) when the task's sizes are not the model's.
  ClassifierTrainer(ClassifierTrainerOptions options, const ClassifierNodes& model,
                    ClassificationTask& task, graph::GraphLearner& learner, Optimizer& optimizer);

  /// Restores DIR/checkpoint.bin (parameters, optimiser state, counters, history). NOT_FOUND when
  /// absent, DATA_LOSS when corrupt, FAILED_PRECONDITION when it belongs to another setup.
  Status resume(const std::string& dir);
  /// Trains from the current epoch up to options.epochs. Stops at the first non-finite loss with
  /// FAILED_PRECONDITION (the last checkpoint, written after the last good epoch, stays).
  Status run(const ClassifierCallbacks& callbacks = {});
  /// Writes DIR/checkpoint.bin atomically (temporary file, then rename).
  Status save_checkpoint(const std::string& dir) const;

  std::int64_t epochs_done() const { return epoch_; }
  std::int64_t global_step() const { return step_; }
  const std::vector<EpochRecord>& history() const { return history_; }

 private:
  ClassifierTrainerOptions options_;
  ClassifierNodes model_;
  ClassificationTask& task_;
  graph::GraphLearner& learner_;
  Optimizer& optimizer_;
  std::int64_t epoch_ = 0;  // completed epochs
  std::int64_t step_ = 0;   // completed steps over all epochs
  std::vector<EpochRecord> history_;
};

}  // namespace opu::trainer::tasks
