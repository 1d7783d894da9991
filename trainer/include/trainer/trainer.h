// The training loop: tasks (how batches are drawn and how accuracy is measured), per-epoch records,
// alignment every N steps, atomic checkpoints and bit-for-bit resume.
//
// Reproducibility: everything random is a pure function of the user seed and a counter (the data
// order of epoch k, the dropout masks of step s, the digital feedback matrix), so a checkpoint
// holds only the parameters, the optimiser state and the counters — and a resumed run produces the
// same bits as one that was never interrupted. (Device feedback with camera noise is the exception:
// the device's noise stream lives in the device.)
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/datasets.h"
#include "trainer/learner.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"

namespace opu::trainer {

/// Where batches come from and how a model is scored.
class Task {
 public:
  virtual ~Task() = default;
  virtual Eigen::Index input_size() const = 0;
  virtual Eigen::Index output_size() const = 0;
  virtual std::int64_t steps_per_epoch() const = 0;
  /// Fills `input` (model.input()), `targets` and per-sample `weights` for step `step` of `epoch`.
  virtual void load_batch(std::int64_t epoch, std::int64_t step, Eigen::MatrixXf& input,
                          Eigen::MatrixXf& targets, Eigen::VectorXf& weights) = 0;
  /// Accuracy per split ("train", "val", "test") in evaluation mode. The "train" entry may be
  /// omitted when the trainer's running accuracy stands for it.
  virtual std::map<std::string, double> evaluate(Model& model) = 0;
  /// Splits evaluate() reports, in display order.
  virtual std::vector<std::string> splits() const = 0;
};

/// Mini-batches of an image dataset, reshuffled every epoch from (seed, epoch). The last partial
/// batch is kept (like PyTorch's DataLoader default).
class ImageTask final : public Task {
 public:
  ImageTask(const ImageDataset& data, std::int64_t batch, std::uint64_t seed);
  Eigen::Index input_size() const override { return data_.train.features.rows(); }
  Eigen::Index output_size() const override { return data_.train.n_classes; }
  std::int64_t steps_per_epoch() const override;
  void load_batch(std::int64_t epoch, std::int64_t step, Eigen::MatrixXf& input,
                  Eigen::MatrixXf& targets, Eigen::VectorXf& weights) override;
  std::map<std::string, double> evaluate(Model& model) override;
  std::vector<std::string> splits() const override { return {"test"}; }

 private:
  const ImageDataset& data_;
  std::int64_t batch_;
  std::uint64_t seed_;
  std::int64_t order_epoch_ = -1;
  std::vector<std::int64_t> order_;
};

/// Full-batch node classification: every step sees the whole graph, the loss weights select the
/// training nodes.
class GraphTask final : public Task {
 public:
  explicit GraphTask(const GraphDataset& data);
  Eigen::Index input_size() const override { return data_.nodes.features.rows(); }
  Eigen::Index output_size() const override { return data_.nodes.n_classes; }
  std::int64_t steps_per_epoch() const override { return 1; }
  void load_batch(std::int64_t epoch, std::int64_t step, Eigen::MatrixXf& input,
                  Eigen::MatrixXf& targets, Eigen::VectorXf& weights) override;
  std::map<std::string, double> evaluate(Model& model) override;
  std::vector<std::string> splits() const override { return {"train", "val", "test"}; }

 private:
  const GraphDataset& data_;
  Eigen::MatrixXf targets_;
  Eigen::VectorXf train_weights_;
};

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

struct TrainerOptions {
  std::int64_t epochs = 15;
  std::uint64_t seed = 1;  // the run's seed, recorded in checkpoints (tasks and layers own theirs)
  /// Measure alignment every N steps (0 = never). The measurement costs one extra BP backward.
  std::int64_t align_every = 50;
  std::string checkpoint_dir;  // empty = no checkpoints; else written after every epoch
  /// Free-form description stored in checkpoints and compared on resume (model, method, ...):
  /// a mismatch is FAILED_PRECONDITION naming both.
  nlohmann::json identity;
};

/// Called after each step (for progress bars) and after each epoch.
struct TrainerCallbacks {
  std::function<void(std::int64_t epoch, std::int64_t step, std::int64_t steps, double loss)>
      on_step;
  std::function<void(const EpochRecord&)> on_epoch;
  std::function<void(std::int64_t epoch, std::int64_t step, const std::vector<Alignment>&)>
      on_alignment;
};

class Trainer {
 public:
  Trainer(TrainerOptions options, Model& model, Task& task, Learner& learner, Optimizer& optimizer);

  /// Restores DIR/checkpoint.bin (parameters, optimiser state, counters, history). NOT_FOUND when
  /// absent, DATA_LOSS when corrupt, FAILED_PRECONDITION when it belongs to another setup.
  Status resume(const std::string& dir);
  /// Trains from the current epoch up to options.epochs. Stops at the first non-finite loss with
  /// FAILED_PRECONDITION (the last checkpoint, written after the last good epoch, stays).
  Status run(const TrainerCallbacks& callbacks = {});
  /// Writes DIR/checkpoint.bin atomically (temporary file, then rename).
  Status save_checkpoint(const std::string& dir) const;

  std::int64_t epochs_done() const { return epoch_; }
  std::int64_t global_step() const { return step_; }
  const std::vector<EpochRecord>& history() const { return history_; }

 private:
  TrainerOptions options_;
  Model& model_;
  Task& task_;
  Learner& learner_;
  Optimizer& optimizer_;
  std::int64_t epoch_ = 0;  // completed epochs
  std::int64_t step_ = 0;   // completed steps over all epochs
  std::vector<EpochRecord> history_;
  Eigen::MatrixXf targets_;
  Eigen::VectorXf weights_;
};

}  // namespace opu::trainer
