// opu-trainer-bench: prints ratios measured in one run (DESIGN.md §6).
//
//   step:   one training step (forward, loss, backward, SGD update) of DFA with digital feedback
//           vs BP, on 784-800-800-800-10 ReLU, batch 128 (the setting). Steps of the two
//           methods alternate so that machine noise hits both alike; medians are compared.
//   device: the DFA steps of one Fashion-MNIST-sized epoch (469 batches of 128) with feedback
//           from a device URI vs digital feedback, same model and data.
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
#include "opu_sim/threading.h"
#include "trainer/feedback.h"
#include "trainer/learner.h"
#include "trainer/losses.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/random.h"

using namespace opu::trainer;
using opu::Result;

namespace {

struct Setup {
  Model model;
  SoftmaxCrossEntropy loss;
  std::unique_ptr<FeedbackSource> feedback;
  std::unique_ptr<Learner> learner;
  Sgd optimizer{0.01F, 0.9F, 0.0F};

  Setup(const std::vector<Eigen::Index>& hidden, Method method,
        std::unique_ptr<FeedbackSource> source)
      : model(make_mlp(784, hidden, 10, ActivationKind::kRelu, 1)), feedback(std::move(source)) {
    learner = std::make_unique<Learner>(model, loss, method, feedback.get());
  }
  // One full step on (x, t).
  double step(const Eigen::MatrixXf& x, const Eigen::MatrixXf& t) {
    const auto start = std::chrono::steady_clock::now();
    model.input() = x;
    const Result<StepResult> r =
        learner->compute_gradients(t, Eigen::VectorXf(), ForwardContext{true, 0}, false);
    if (!r.ok()) throw opu::StatusError(r.status());
    optimizer.step(learner->trainable());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

void random_batch(std::int64_t batch, std::uint64_t seed, Eigen::MatrixXf& x, Eigen::MatrixXf& t) {
  const CounterRng rng(seed, "bench/batch");
  x.resize(784, batch);
  for (Eigen::Index i = 0; i < x.size(); ++i)
    x.data()[i] = rng.uniform(static_cast<std::uint64_t>(i));
  t = Eigen::MatrixXf::Zero(10, batch);
  for (Eigen::Index c = 0; c < batch; ++c)
    t(static_cast<Eigen::Index>(rng.below(1000000 + c, 10)), c) = 1.0F;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"opu-trainer-bench: DFA vs BP step, device vs digital feedback epoch"};
  int steps = 60;
  int threads = 1;
  std::int64_t batch = 128;
  std::string device_uri;
  std::int64_t epoch_batches = 469;
  cli.add_option("--steps", steps, "timed steps per method (after 5 warm-up steps)");
  cli.add_option("--threads", threads, "compute threads");
  cli.add_option("--batch", batch, "batch size");
  cli.add_option("--device", device_uri, "also time an epoch of DFA with feedback from this URI");
  cli.add_option("--epoch-batches", epoch_batches, "batches of the device epoch (469 = FMNIST)");
  CLI11_PARSE(cli, argc, argv);
  opu::set_compute_threads(threads);
  nlohmann::json report;

  // --- DFA step vs BP step on 784-800-800-800-10 ---
  const std::vector<Eigen::Index> wide = {800, 800, 800};
  Setup bp(wide, Method::kBp, nullptr);
  Setup dfa(wide, Method::kDfa, std::make_unique<DigitalFeedback>(10, 800, 1));
  Eigen::MatrixXf x, t;
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
    const std::vector<Eigen::Index> paper = {256, 256};
    Setup digital(paper, Method::kDfa, std::make_unique<DigitalFeedback>(10, 256, 1));
    auto* device_feedback = new DeviceFeedback(**device, 10, 256, recommended_linear_options());
    Setup on_device(paper, Method::kDfa, std::unique_ptr<FeedbackSource>(device_feedback));
    // Realistic errors: softmax - onehot of an untrained net; random batches, same for both.
    double wall_digital = 0.0, wall_device = 0.0;
    for (std::int64_t b = 0; b < epoch_batches; ++b) {
      random_batch(batch, 100 + static_cast<std::uint64_t>(b), x, t);
      wall_digital += digital.step(x, t);
      wall_device += on_device.step(x, t);
    }
    const FeedbackCost& cost = device_feedback->cost();
    std::printf("DFA epoch (%lld batches of %lld), 784-256-256-10\n",
                static_cast<long long>(epoch_batches), static_cast<long long>(batch));
    std::printf("  digital feedback   %8.3f s\n", wall_digital);
    std::printf("  device feedback    %8.3f s   (%s)\n", wall_device, device_uri.c_str());
    std::printf("  ratio device/digital %6.3f   (target <= 1.25)\n", wall_device / wall_digital);
    std::printf("  device: %lld frames, %.1f s of device time\n",
                static_cast<long long>(cost.frames),
                1e-9 * static_cast<double>(cost.device_time_ns));
    report["epoch"] = {{"digital_s", wall_digital},
                       {"device_s", wall_device},
                       {"ratio", wall_device / wall_digital},
                       {"device", device_uri},
                       {"frames", cost.frames},
                       {"device_time_s", 1e-9 * static_cast<double>(cost.device_time_ns)}};
  }
  std::cout << report.dump() << std::endl;
  return 0;
}
