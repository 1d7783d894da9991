#include "trainer/tasks/classification.h"
#include "trainer/tasks/records.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <utility>

#include "log.h"
#include "trainer/random.h"

namespace opu::trainer::tasks {
namespace fs = std::filesystem;

ClassCount count_correct(const Eigen::Ref<const graph::Matrix<float>>& logits,
                         std::span<const std::int32_t> labels) {
  OPU_CHECK(static_cast<Index>(labels.size()) == logits.cols(),
            "count_correct: one label per column");
  ClassCount count;
  for (Index c = 0; c < logits.cols(); ++c) {
    const std::int32_t label = labels[static_cast<std::size_t>(c)];
    if (label < 0) continue;
    Index row = 0;
    logits.col(c).maxCoeff(&row);
    ++count.counted;
    if (row == label) ++count.correct;
  }
  return count;
}

// --- tasks
// ----------------------------------------------------------------------------------------

SampleClassification::SampleClassification(const ImageDataset& data, std::int64_t batch,
                                           std::uint64_t seed)
    : data_(data), batch_(batch), seed_(seed) {
  OPU_CHECK(batch > 0, "SampleClassification: batch must be positive");
}

std::int64_t SampleClassification::steps_per_epoch() const {
  return (data_.train.features.cols() + batch_ - 1) / batch_;
}

void SampleClassification::load_batch(std::int64_t epoch, std::int64_t step,
                                      const ClassifierNodes& model) {
  const std::int64_t n = data_.train.features.cols();
  if (order_epoch_ != epoch) {
    // The data order of an epoch is a pure function of (seed, epoch): resumable without state.
    order_ = permutation(CounterRng(seed_, "shuffle/epoch" + std::to_string(epoch)), n);
    order_epoch_ = epoch;
  }
  const std::int64_t first = step * batch_;
  const std::int64_t count = std::min(batch_, n - first);
  const std::int64_t* index = order_.data() + first;
  graph::Matrix<float>& input = model.graph->input_buffer(model.input, count);
  std::vector<std::int32_t>& labels = model.graph->ids_buffer(model.labels, count);
  for (std::int64_t c = 0; c < count; ++c) {
    input.col(c) = data_.train.features.col(index[c]);
    labels[static_cast<std::size_t>(c)] = data_.train.labels[static_cast<std::size_t>(index[c])];
  }
}

std::map<std::string, double> SampleClassification::evaluate(const ClassifierNodes& model) {
  const LabelledData& test = data_.test;
  constexpr std::int64_t kChunk = 1000;
  std::int64_t correct = 0;
  for (std::int64_t first = 0; first < test.features.cols(); first += kChunk) {
    const std::int64_t count = std::min(kChunk, test.features.cols() - first);
    model.graph->input_buffer(model.input, count) = test.features.middleCols(first, count);
    model.graph->forward(ForwardContext{false, 0}, model.logits);
    correct += count_correct(model.graph->value(model.logits),
                             std::span<const std::int32_t>(test.labels).subspan(
                                 static_cast<std::size_t>(first), static_cast<std::size_t>(count)))
                   .correct;
  }
  return {{"test", static_cast<double>(correct) / static_cast<double>(test.features.cols())}};
}

NodeClassification::NodeClassification(const GraphDataset& data) : data_(data) {
  train_labels_ = data.nodes.labels;
  for (std::size_t i = 0; i < train_labels_.size(); ++i) {
    if (data.split[i] != 1) train_labels_[i] = -1;
  }
}

void NodeClassification::set_features(const ClassifierNodes& model) const {
  // Full batch: the features are copied into the graph once and stay there (evaluate() leaves
  // the same matrix in place).
  const graph::Matrix<float>& input = model.graph->value(model.input);
  if (input.rows() != data_.nodes.features.rows() || input.cols() != data_.nodes.features.cols()) {
    model.graph->set_input(model.input, data_.nodes.features);
  }
}

void NodeClassification::load_batch(std::int64_t /*epoch*/, std::int64_t /*step*/,
                                    const ClassifierNodes& model) {
  set_features(model);
  if (model.graph->node(model.labels).ids.size() != train_labels_.size()) {
    model.graph->set_ids(model.labels, train_labels_);
  }
}

std::map<std::string, double> NodeClassification::evaluate(const ClassifierNodes& model) {
  set_features(model);
  model.graph->forward(ForwardContext{}, model.logits);
  const graph::Matrix<float>& logits = model.graph->value(model.logits);
  const char* names[4] = {"", "train", "val", "test"};
  std::int64_t correct[4] = {0, 0, 0, 0};
  std::int64_t total[4] = {0, 0, 0, 0};
  for (Index i = 0; i < logits.cols(); ++i) {
    const std::uint8_t s = data_.split[static_cast<std::size_t>(i)];
    Index row = 0;
    logits.col(i).maxCoeff(&row);
    ++total[s];
    if (row == data_.nodes.labels[static_cast<std::size_t>(i)]) ++correct[s];
  }
  std::map<std::string, double> result;
  for (int s = 1; s <= 3; ++s) {
    result[names[s]] =
        total[s] == 0 ? 0.0 : static_cast<double>(correct[s]) / static_cast<double>(total[s]);
  }
  return result;
}

// --- records
// --------------------------------------------------------------------------------------

namespace {
double number_or_nan(const nlohmann::json& j) {
  return j.is_number() ? j.get<double>() : std::numeric_limits<double>::quiet_NaN();
}
}  // namespace

nlohmann::json EpochRecord::to_json() const {
  nlohmann::json j;
  j["epoch"] = epoch;
  j["loss"] = number_or_null(loss);
  j["train_accuracy"] = number_or_null(train_accuracy);
  for (const auto& [split, value] : accuracy) {
    if (split != "train") j[split + "_accuracy"] = number_or_null(value);
  }
  j["alignment"] = alignment_json(alignment);
  j["wall_s"] = wall_s;
  j["device_time_s"] = device_time_s;
  j["frames"] = frames;
  return j;
}

EpochRecord EpochRecord::from_json(const nlohmann::json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch").get<std::int64_t>();
  r.loss = number_or_nan(j.at("loss"));
  r.train_accuracy = number_or_nan(j.at("train_accuracy"));
  for (const auto& [key, value] : j.items()) {
    const std::string suffix = "_accuracy";
    if (key.size() > suffix.size() && key.ends_with(suffix) && key != "train_accuracy") {
      r.accuracy[key.substr(0, key.size() - suffix.size())] = number_or_nan(value);
    }
  }
  for (const auto& [point, a] : j.at("alignment").items()) {
    r.alignment.push_back({point, number_or_nan(a.at("mean")), number_or_nan(a.at("std")),
                           a.at("samples").get<std::int64_t>()});
  }
  r.wall_s = j.at("wall_s").get<double>();
  r.device_time_s = j.at("device_time_s").get<double>();
  r.frames = j.at("frames").get<std::int64_t>();
  return r;
}

// --- the loop
// -------------------------------------------------------------------------------------

ClassifierTrainer::ClassifierTrainer(ClassifierTrainerOptions options, const ClassifierNodes& model,
                                     ClassificationTask& task, graph::GraphLearner& learner,
                                     Optimizer& optimizer)
    : options_(std::move(options)),
      model_(model),
      task_(task),
      learner_(learner),
      optimizer_(optimizer) {
  OPU_CHECK(model.graph != nullptr, "ClassifierTrainer: no graph");
  const Index inputs = model.graph->node(model.input).rows;
  const Index classes = model.graph->node(model.logits).rows;
  if (task.input_size() != inputs || task.output_size() != classes) {
    throw StatusError(invalid_argument(
        "ClassifierTrainer: the data has " + std::to_string(task.input_size()) + " inputs and " +
        std::to_string(task.output_size()) + " classes, the model " + std::to_string(inputs) +
        " -> " + std::to_string(classes)));
  }
}

Status ClassifierTrainer::run(const ClassifierCallbacks& callbacks) {
  graph::Graph<float>& g = *model_.graph;
  const std::vector<graph::FeedbackPointRef>& points = g.feedback_points();
  const std::int64_t steps = task_.steps_per_epoch();
  for (std::int64_t epoch = epoch_ + 1; epoch <= options_.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const FeedbackSource* feedback = learner_.feedback();
    const FeedbackCost cost_before = feedback == nullptr ? FeedbackCost{} : feedback->cost();
    double loss_sum = 0.0;
    std::int64_t correct = 0;
    std::int64_t counted = 0;
    std::vector<double> align_mean(points.size(), 0.0);
    std::vector<double> align_std(points.size(), 0.0);
    std::vector<std::int64_t> align_samples(points.size(), 0);
    std::vector<std::int64_t> align_count(points.size(), 0);
    for (std::int64_t s = 0; s < steps; ++s) {
      task_.load_batch(epoch - 1, s, model_);
      const ForwardContext context{true, static_cast<std::uint64_t>(step_)};
      const bool measure = options_.align_every > 0 && step_ % options_.align_every == 0;
      Result<double> loss = learner_.compute_gradients(context, measure);
      if (!loss.ok()) {
        return loss.status().with_context("epoch " + std::to_string(epoch) + " step " +
                                          std::to_string(s));
      }
      if (!std::isfinite(*loss)) {
        return failed_precondition("epoch " + std::to_string(epoch) + " step " + std::to_string(s) +
                                   ": training loss is " + std::to_string(*loss) +
                                   ", want a finite value (diverged: lower --lr); stopped" +
                                   (options_.checkpoint_dir.empty()
                                        ? std::string()
                                        : ", the last good checkpoint (after epoch " +
                                              std::to_string(epoch_) + ") is kept in " +
                                              options_.checkpoint_dir));
      }
      // The running accuracy of the training batch, from the logits of this step's forward.
      const ClassCount count = count_correct(g.value(model_.logits), g.node(model_.labels).ids);
      optimizer_.step(learner_.trainable());
      ++step_;
      loss_sum += *loss;
      correct += count.correct;
      counted += count.counted;
      if (measure) {
        const std::vector<Alignment>& a = learner_.alignment();
        for (std::size_t k = 0; k < a.size(); ++k) {
          if (a[k].samples == 0) continue;
          align_mean[k] += a[k].mean;
          align_std[k] += a[k].std;
          align_samples[k] += a[k].samples;
          ++align_count[k];
        }
        if (callbacks.on_alignment) callbacks.on_alignment(epoch, step_ - 1, a);
      }
      if (callbacks.on_step) callbacks.on_step(epoch, s + 1, steps, *loss);
    }
    for (Param* p : g.params()) {
      if (!p->value.allFinite()) {
        return failed_precondition("epoch " + std::to_string(epoch) + ": parameter " + p->name +
                                   " is not finite after the update, want finite weights "
                                   "(diverged: lower --lr); stopped");
      }
    }
    EpochRecord record;
    record.epoch = epoch;
    record.loss = loss_sum / static_cast<double>(steps);
    record.train_accuracy =
        counted == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(counted);
    record.accuracy = task_.evaluate(model_);
    if (auto it = record.accuracy.find("train"); it != record.accuracy.end()) {
      record.train_accuracy = it->second;  // evaluation mode beats the running figure
    }
    for (std::size_t k = 0; k < points.size(); ++k) {
      Alignment a{points[k].name, std::numeric_limits<double>::quiet_NaN(),
                  std::numeric_limits<double>::quiet_NaN(), align_samples[k]};
      if (align_count[k] > 0) {
        a.mean = align_mean[k] / static_cast<double>(align_count[k]);
        a.std = align_std[k] / static_cast<double>(align_count[k]);
      }
      record.alignment.push_back(a);
    }
    record.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (feedback != nullptr) {
      record.device_time_s =
          static_cast<double>(feedback->cost().device_time_ns - cost_before.device_time_ns) * 1e-9;
      record.frames = feedback->cost().frames - cost_before.frames;
    }
    epoch_ = epoch;
    history_.push_back(record);
    if (!options_.checkpoint_dir.empty()) {
      OPU_RETURN_IF_ERROR(save_checkpoint(options_.checkpoint_dir));
    }
    if (callbacks.on_epoch) callbacks.on_epoch(history_.back());
  }
  return {};
}

// --- checkpoints
// ----------------------------------------------------------------------------------
//
// checkpoint.bin = "OPUTRCK1" | u64 header length | header JSON | float32 tensor data | u64 FNV-1a
// of everything before it. The header lists the tensors (name, rows, cols) in data order.

namespace {
constexpr char kMagic[8] = {'O', 'P', 'U', 'T', 'R', 'C', 'K', '1'};
constexpr const char* kCheckpointFile = "checkpoint.bin";

std::uint64_t fnv1a(const char* data, std::size_t n, std::uint64_t h = 0xCBF29CE484222325ULL) {
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint8_t>(data[i]);
    h *= 0x100000001B3ULL;
  }
  return h;
}
}  // namespace

Status ClassifierTrainer::save_checkpoint(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return failed_precondition("checkpoint: cannot create " + dir + ": " + ec.message());
  nlohmann::json header;
  header["identity"] = options_.identity;
  header["signature"] = options_.signature;
  header["seed"] = options_.seed;
  header["epoch"] = epoch_;
  header["step"] = step_;
  header["optimizer"] = optimizer_.name();
  header["history"] = nlohmann::json::array();
  for (const EpochRecord& r : history_) header["history"].push_back(r.to_json());
  std::vector<std::pair<std::string, const Eigen::MatrixXf*>> tensors;
  for (Param* p : model_.graph->params()) tensors.emplace_back("param/" + p->name, &p->value);
  for (auto& [name, value] : const_cast<Optimizer&>(optimizer_).state()) {
    tensors.emplace_back("optimizer/" + name, &value);
  }
  header["tensors"] = nlohmann::json::array();
  for (const auto& [name, m] : tensors) header["tensors"].push_back({name, m->rows(), m->cols()});

  std::string blob(kMagic, sizeof(kMagic));
  const std::string text = header.dump();
  const std::uint64_t length = text.size();
  blob.append(reinterpret_cast<const char*>(&length), sizeof(length));
  blob += text;
  for (const auto& [name, m] : tensors) {
    blob.append(reinterpret_cast<const char*>(m->data()),
                static_cast<std::size_t>(m->size()) * sizeof(float));
  }
  const std::uint64_t checksum = fnv1a(blob.data(), blob.size());
  blob.append(reinterpret_cast<const char*>(&checksum), sizeof(checksum));

  // Atomic replacement: a crash leaves either the old file or the new one, never half of one.
  const fs::path final_path = fs::path(dir) / kCheckpointFile;
  const fs::path temp_path =
      fs::path(dir) / (std::string(kCheckpointFile) + ".tmp" + std::to_string(::getpid()));
  {
    std::ofstream out(temp_path, std::ios::binary | std::ios::trunc);
    out.write(blob.data(), static_cast<std::streamsize>(blob.size()));
    out.flush();
    if (!out) return failed_precondition("checkpoint: cannot write " + temp_path.string());
  }
  fs::rename(temp_path, final_path, ec);
  if (ec) {
    return failed_precondition("checkpoint: cannot rename " + temp_path.string() + " to " +
                               final_path.string() + ": " + ec.message());
  }
  return {};
}

Status ClassifierTrainer::resume(const std::string& dir) {
  const fs::path path = fs::path(dir) / kCheckpointFile;
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("checkpoint: " + path.string() + ": no such file");
  const std::string blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string where = "checkpoint " + path.string();
  if (blob.size() < sizeof(kMagic) + 16 || std::memcmp(blob.data(), kMagic, sizeof(kMagic)) != 0) {
    return data_loss(where + ": not a trainer checkpoint (bad magic or too short)");
  }
  std::uint64_t checksum = 0;
  std::memcpy(&checksum, blob.data() + blob.size() - sizeof(checksum), sizeof(checksum));
  if (fnv1a(blob.data(), blob.size() - sizeof(checksum)) != checksum) {
    return data_loss(where + ": checksum mismatch (truncated or corrupt)");
  }
  std::uint64_t length = 0;
  std::memcpy(&length, blob.data() + sizeof(kMagic), sizeof(length));
  const std::size_t header_at = sizeof(kMagic) + sizeof(length);
  if (length > blob.size() - header_at - sizeof(checksum)) {
    return data_loss(where + ": header length " + std::to_string(length) + " beyond the file");
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(blob.substr(header_at, length));
  } catch (const nlohmann::json::exception& e) {
    return data_loss(where + ": header is not JSON (" + e.what() + ")");
  }
  if (header.value("signature", "") != options_.signature) {
    return failed_precondition(where + ": model " + header.value("signature", "?") + ", want " +
                               options_.signature + " (same --model and --hidden)");
  }
  if (header.value("identity", nlohmann::json()) != options_.identity) {
    return failed_precondition(where + ": written by " + header["identity"].dump() + ", want " +
                               options_.identity.dump());
  }
  if (header.value("optimizer", "") != optimizer_.name()) {
    return failed_precondition(where + ": optimizer " + header.value("optimizer", "?") + ", want " +
                               optimizer_.name());
  }
  std::map<std::string, Param*> params;
  for (Param* p : model_.graph->params()) params["param/" + p->name] = p;
  std::size_t offset = header_at + length;
  std::size_t params_found = 0;
  std::map<std::string, Eigen::MatrixXf> optimizer_state;
  for (const nlohmann::json& t : header.at("tensors")) {
    const std::string name = t.at(0).get<std::string>();
    const auto rows = t.at(1).get<Eigen::Index>();
    const auto cols = t.at(2).get<Eigen::Index>();
    const std::size_t bytes = static_cast<std::size_t>(rows * cols) * sizeof(float);
    if (offset + bytes > blob.size() - sizeof(checksum)) {
      return data_loss(where + ": tensor " + name + " runs past the end of the file");
    }
    Eigen::MatrixXf value(rows, cols);
    std::memcpy(value.data(), blob.data() + offset, bytes);
    offset += bytes;
    if (name.starts_with("param/")) {
      auto it = params.find(name);
      if (it == params.end()) return failed_precondition(where + ": unknown tensor " + name);
      if (it->second->value.rows() != rows || it->second->value.cols() != cols) {
        return failed_precondition(where + ": " + name + " is " + std::to_string(rows) + "x" +
                                   std::to_string(cols) + ", want " +
                                   std::to_string(it->second->value.rows()) + "x" +
                                   std::to_string(it->second->value.cols()));
      }
      it->second->value = value;
      ++params_found;
    } else if (name.starts_with("optimizer/")) {
      optimizer_state[name.substr(10)] = std::move(value);
    }
  }
  if (params_found != params.size()) {
    return failed_precondition(where + ": " + std::to_string(params_found) +
                               " parameter tensors, want " + std::to_string(params.size()));
  }
  optimizer_.state() = std::move(optimizer_state);
  epoch_ = header.at("epoch").get<std::int64_t>();
  step_ = header.at("step").get<std::int64_t>();
  history_.clear();
  for (const nlohmann::json& r : header.at("history"))
    history_.push_back(EpochRecord::from_json(r));
  logger()->info("resumed from {} after epoch {} (step {})", path.string(), epoch_, step_);
  return {};
}

}  // namespace opu::trainer::tasks
