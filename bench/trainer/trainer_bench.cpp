// opu-trainer-bench: prints ratios measured in one run (docs/design.md §6).
//
//   step:   one training step (forward, loss, backward, SGD update) of DFA with digital feedback
//           vs BP, on 784-800-800-800-10 ReLU, batch 128 (the setting). Steps of the two
//           methods alternate so that machine noise hits both alike; medians are compared.
//   device: the DFA steps of Fashion-MNIST epochs (469 batches of 128, standardised as opu-train
//           does) with feedback from a device URI vs digital feedback: two models trained side by
//           side on the same batches, their steps alternating. Real labels matter: as training
//           goes the errors thin out and identical codes share frames, as in opu-train.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "device_factory.h"
#include "opu_sim/cli_validators.h"
#include "opu_sim/device.h"
#include "opu_sim/threading.h"
#include "trainer/datasets.h"
#include "trainer/feedback.h"
#include "trainer/graph/learner.h"
#include "trainer/models/mlp.h"
#include "trainer/optimizer.h"
#include "trainer/random.h"

using namespace opu::trainer;
using opu::Result;

namespace {

struct Setup {
  std::unique_ptr<models::ClassifierModel<float>> model;
  std::unique_ptr<FeedbackSource> feedback;
  std::unique_ptr<graph::GraphLearner> learner;
  Sgd optimizer{0.01F, 0.9F, 0.0F};

  Setup(const std::vector<Eigen::Index>& hidden, Method method,
        std::unique_ptr<FeedbackSource> source)
      : feedback(std::move(source)) {
    models::MlpConfig c;
    c.hidden = hidden;
    model = models::build_mlp<float>(c);
    learner = std::make_unique<graph::GraphLearner>(model->graph, model->loss, model->logits,
                                                    method, feedback.get());
  }
  // One full step on (x, t).
  double step(const Eigen::MatrixXf& x, const std::vector<std::int32_t>& t) {
    const auto start = std::chrono::steady_clock::now();
    model->graph.set_input(model->input, x);
    model->graph.set_ids(model->labels, t);
    const Result<double> r = learner->compute_gradients(ForwardContext{true, 0}, false);
    if (!r.ok()) throw opu::StatusError(r.status());
    optimizer.step(learner->trainable());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

void random_batch(std::int64_t batch, std::uint64_t seed, Eigen::MatrixXf& x,
                  std::vector<std::int32_t>& t) {
  const CounterRng rng(seed, "bench/batch");
  x.resize(784, batch);
  for (Eigen::Index i = 0; i < x.size(); ++i)
    x.data()[i] = rng.uniform(static_cast<std::uint64_t>(i));
  t.resize(static_cast<std::size_t>(batch));
  for (Eigen::Index c = 0; c < batch; ++c)
    t[static_cast<std::size_t>(c)] = static_cast<std::int32_t>(rng.below(1000000 + c, 10));
}

// Batch `b` of an epoch over `data` (in order, the last batch short): inputs and labels.
void data_batch(const LabelledData& data, std::int64_t batch, std::int64_t b, Eigen::MatrixXf& x,
                std::vector<std::int32_t>& t) {
  const Eigen::Index first = b * batch;
  const Eigen::Index size = std::min<Eigen::Index>(batch, data.features.cols() - first);
  x.resize(data.features.rows(), size);
  x = data.features.middleCols(first, size);
  t.assign(data.labels.begin() + first, data.labels.begin() + first + size);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App cli{"opu-trainer-bench: DFA vs BP step, device vs digital feedback epoch"};
  int steps = 60;
  int threads = 1;
  std::int64_t batch = 128;
  std::string device_uri;
  int epochs = 2;
  opu::sim::LinearOptions linear = recommended_linear_options();
  std::string epoch_data = kFashionMnistDir;
  cli.add_option("--steps", steps, "timed steps per method (after 5 warm-up steps)")
      ->check(opu::in_range<int>(opu::ValueRange::integers(1, 1000000)));
  cli.add_option("--threads", threads, "compute threads")
      ->check(opu::in_range<int>(opu::ValueRange::integers(1, 256)));
  cli.add_option("--batch", batch, "batch size")
      ->check(opu::in_range<std::int64_t>(opu::ValueRange::integers(1, 1000000)));
  cli.add_option("--device", device_uri, "also time epochs of DFA with feedback from this URI");
  cli.add_option("--epochs", epochs, "device vs digital: epochs timed, each reported (2)")
      ->check(opu::in_range<int>(opu::ValueRange::integers(1, 1000000)));
  cli.add_option("--epoch-data", epoch_data,
                 "device vs digital: IDX folder trained on (Fashion-MNIST's by default)");
  cli.add_option("--reference-repeats", linear.reference_repeats,
                 "device feedback: reference frames per measurement (opu-train's default)")
      ->check(opu::in_range<int>(opu::ValueRange::integers(0, opu::sim::kMaxReferenceRepeats,
                                                           "0 = the device's default")));
  cli.add_option("--reference-max-age", linear.reference_max_age_s,
                 "device feedback: device seconds a reference is reused (0: every call)")
      ->check(opu::in_range<double>(opu::ValueRange::non_negative("device seconds")));
  CLI11_PARSE(cli, argc, argv);
  opu::set_compute_threads(threads);
  nlohmann::json report;

  // --- DFA step vs BP step on 784-800-800-800-10 ---
  const std::vector<Eigen::Index> wide = {800, 800, 800};
  Setup bp(wide, Method::kBp, nullptr);
  Setup dfa(wide, Method::kDfa, std::make_unique<DigitalFeedback>(10, 800, 1));
  Eigen::MatrixXf x;
  std::vector<std::int32_t> t;
  random_batch(batch, 1, x, t);
  for (int i = 0; i < 5; ++i) {
    bp.step(x, t);
    dfa.step(x, t);
  }
  std::vector<double> t_bp, t_dfa;
  for (int i = 0; i < steps; ++i) {
    t_bp.push_back(bp.step(x, t));
    t_dfa.push_back(dfa.step(x, t));
  }
  const double m_bp = median(t_bp), m_dfa = median(t_dfa);
  std::printf("784-800-800-800-10, batch %lld, %d thread(s), median of %d steps\n",
              static_cast<long long>(batch), threads, steps);
  std::printf("  BP step            %8.3f ms\n", 1e3 * m_bp);
  std::printf("  DFA step (digital) %8.3f ms\n", 1e3 * m_dfa);
  std::printf("  ratio DFA/BP       %8.3f   (target <= 0.85)\n", m_dfa / m_bp);
  report["step"] = {{"bp_ms", 1e3 * m_bp}, {"dfa_ms", 1e3 * m_dfa}, {"ratio", m_dfa / m_bp},
                    {"batch", batch},      {"threads", threads},    {"steps", steps}};

  // --- an epoch with device feedback vs digital (paper's 784-256-256-10) ---
  if (!device_uri.empty()) {
    Result<std::unique_ptr<opu::sim::Device>> device = app::open_feedback_device(device_uri);
    if (!device.ok()) {
      std::cerr << "opu-trainer-bench: " << device.status().to_string() << "\n";
      return 1;
    }
    Result<ImageDataset> dataset = load_idx_folder(epoch_data);
    if (!dataset.ok()) {
      std::cerr << "opu-trainer-bench: --epoch-data: " << dataset.status().to_string() << "\n";
      return 1;
    }
    LabelledData& train = dataset->train;
    if (train.features.rows() != 784 || train.n_classes != 10) {
      std::cerr << "opu-trainer-bench: --epoch-data " << epoch_data << " has "
                << train.features.rows() << " features and " << train.n_classes
                << " classes, want 784 and 10 (the paper's 784-256-256-10)\n";
      return 1;
    }
    standardize(train, feature_stats(train));
    const std::vector<Eigen::Index> paper = {256, 256};
    Setup digital(paper, Method::kDfa, std::make_unique<DigitalFeedback>(10, 256, 1));
    auto* device_feedback = new DeviceFeedback(**device, 10, 256, linear);
    Setup on_device(paper, Method::kDfa, std::unique_ptr<FeedbackSource>(device_feedback));
    const std::int64_t batches = (train.features.cols() + batch - 1) / batch;
    std::printf("DFA epochs (%lld batches of %lld), 784-256-256-10, %s\n",
                static_cast<long long>(batches), static_cast<long long>(batch), epoch_data.c_str());
    report["epochs"] = nlohmann::json::array();
    for (int epoch = 1; epoch <= epochs; ++epoch) {
      const FeedbackCost before = device_feedback->cost();
      double wall_digital = 0.0, wall_device = 0.0;
      for (std::int64_t b = 0; b < batches; ++b) {
        data_batch(train, batch, b, x, t);
        wall_digital += digital.step(x, t);
        wall_device += on_device.step(x, t);
      }
      const FeedbackCost& cost = device_feedback->cost();
      const std::int64_t frames = cost.frames - before.frames;
      const double device_s =
          1e-9 * static_cast<double>(cost.device_time_ns - before.device_time_ns);
      std::printf(
          "  epoch %d: digital %.3f s, device %.3f s, ratio device/digital %.3f "
          "(target <= 1.25); %lld frames (%.2f per sample), %.1f s of device time\n",
          epoch, wall_digital, wall_device, wall_device / wall_digital,
          static_cast<long long>(frames),
          static_cast<double>(frames) / static_cast<double>(train.features.cols()), device_s);
      report["epochs"].push_back({{"epoch", epoch},
                                  {"digital_s", wall_digital},
                                  {"device_s", wall_device},
                                  {"ratio", wall_device / wall_digital},
                                  {"frames", frames},
                                  {"device_time_s", device_s}});
    }
    report["device"] = device_uri;
  }
  std::cout << report.dump() << std::endl;
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const opu::StatusError& e) {  // a step's device call failed (e.g. a bad option)
    std::cerr << "opu-trainer-bench: " << e.what() << "\n";
    return 1;
  }
}
