// BP, DFA and shallow gradients of the paper's MLP as a graph (GraphLearner on models/mlp.h)
// against hand-derived values; alignment; feedback sources (digital and through a Device).
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "opu_sim/sim_device.h"
#include "test_support.h"
#include "trainer/feedback.h"
#include "trainer/graph/learner.h"
#include "trainer/models/mlp.h"
#include "trainer/optimizer.h"
#include "trainer/random.h"
#include "trainer/tasks/classification.h"
#include "trainer_test_support.h"

TEST_SUITE("trainer") {
  using namespace opu::trainer;
  using opu::Result;

  namespace {

  // A device whose "optics" are an exact matrix: the Device path without a simulator.
  class MatrixDevice final : public opu::sim::Device {
   public:
    explicit MatrixDevice(Eigen::MatrixXf b) : b_(std::move(b)) {}
    opu::sim::DeviceInfo info() const override {
      opu::sim::DeviceInfo i;
      i.model = "matrix-device";
      i.simulated = true;
      i.max_n_in = 1 << 20;
      i.max_n_out = 1 << 20;
      i.frametime_us = 500;
      i.exposure_us = 400;
      i.max_exposure_us = 1e5;
      i.supports_linear = true;
      i.max_batch = 1 << 20;
      return i;
    }
    int calls = 0;
    std::int64_t last_batch = 0;

   protected:
    opu::Result<opu::sim::Frames> do_transform(const opu::sim::TransformRequest&) override {
      return opu::unimplemented("matrix-device: no frames");
    }
    opu::Result<opu::sim::Projections> do_linear_transform(
        const opu::sim::LinearRequest& request) override {
      ++calls;
      last_batch = request.batch;
      const Eigen::Map<const Eigen::MatrixXf> v(request.values.data(), request.n_in, request.batch);
      opu::sim::Projections p;
      p.values = b_.topRows(request.n_out) * v;
      p.info.frames = 4 * request.batch;
      p.info.device_time_start_ns = 1000;
      p.info.device_time_end_ns = 1000 + 500000 * p.info.frames;
      return p;
    }

   private:
    Eigen::MatrixXf b_;
  };

  struct Batch {
    Eigen::MatrixXf x;
    std::vector<std::int32_t> labels;
  };

  Batch make_batch(std::int64_t n_in, std::int32_t classes, std::int64_t batch,
                   std::uint64_t seed) {
    const LabelledData d = test::make_blobs(batch, n_in, classes, seed);
    return {d.features, d.labels};
  }

  /// The paper's MLP at a small size: 20-linear16-relu-[h1]-linear12-relu-[h2]-linear4.
  std::unique_ptr<models::ClassifierModel<float>> small_mlp(std::uint64_t seed = 3,
                                                            Eigen::Index inputs = 20,
                                                            std::vector<Eigen::Index> hidden = {16,
                                                                                                12},
                                                            Eigen::Index classes = 4) {
    models::MlpConfig c;
    c.inputs = inputs;
    c.hidden = std::move(hidden);
    c.classes = classes;
    c.seed = seed;
    return models::build_mlp<float>(c);
  }

  void set_batch(models::ClassifierModel<float>& m, const Batch& b) {
    m.graph.set_input(m.input, b.x);
    m.graph.set_ids(m.labels, b.labels);
  }

  }  // namespace

  TEST_CASE("MLP graph: alignment under BP is 1 by construction") {
    auto model = small_mlp();
    graph::GraphLearner learner(model->graph, model->loss, model->logits, Method::kBp, nullptr);
    set_batch(*model, make_batch(20, 4, 32, 1));
    REQUIRE(learner.compute_gradients({true, 0}, true).ok());
    REQUIRE(learner.alignment().size() == 2);
    for (const Alignment& a : learner.alignment()) {
      INFO(a.point);
      CHECK(a.samples == 32);
      CHECK(a.mean == doctest::Approx(1.0).epsilon(1e-5));
      CHECK(a.std < 1e-3);
    }
  }

  TEST_CASE("MLP graph: DFA teaching signal is the scaled B_l e and the top layer gets BP's") {
    auto model = small_mlp();
    auto reference = small_mlp();
    DigitalFeedback feedback(4, 16, 9);
    graph::GraphLearner dfa(model->graph, model->loss, model->logits, Method::kDfa, &feedback);
    graph::GraphLearner bp(reference->graph, reference->loss, reference->logits, Method::kBp,
                           nullptr);
    const Batch b = make_batch(20, 4, 8, 2);
    set_batch(*model, b);
    set_batch(*reference, b);
    REQUIRE(dfa.compute_gradients({true, 0}, true).ok());
    REQUIRE(bp.compute_gradients({true, 0}, false).ok());
    // Paper scaling: U[-1,1) matrix, 1/sqrt(d_max).
    CHECK(dfa.feedback_scale() == doctest::Approx(1.0 / 4.0));
    // e = dL/dlogits of the mean cross-entropy: (softmax - onehot) / batch.
    const Eigen::MatrixXf& logits = model->graph.value(model->logits);
    Eigen::MatrixXf e(4, 8);
    for (Eigen::Index c = 0; c < 8; ++c) {
      const Eigen::ArrayXf p = (logits.col(c).array() - logits.col(c).maxCoeff()).exp();
      e.col(c) = (p / p.sum()).matrix() / 8.0F;
      e(b.labels[static_cast<std::size_t>(c)], c) -= 1.0F / 8.0F;
    }
    CHECK(dfa.error().isApprox(e, 1e-5F));
    const Eigen::MatrixXf expected = (feedback.matrix() * e) * 0.25F;
    CHECK(dfa.teaching_signal(0).isApprox(expected.topRows(16), 1e-5F));
    CHECK(dfa.teaching_signal(1).isApprox(expected.topRows(12), 1e-5F));
    // The last linear layer (above h2) learns exactly as under BP.
    const std::vector<Param*> p_dfa = model->graph.params();
    const std::vector<Param*> p_bp = reference->graph.params();
    CHECK(p_dfa[4]->grad.isApprox(p_bp[4]->grad, 1e-5F));
    CHECK(p_dfa[5]->grad.isApprox(p_bp[5]->grad, 1e-5F));
    // Below, DFA's gradients differ from BP's (a random B cannot match W^T).
    CHECK(!p_dfa[0]->grad.isApprox(p_bp[0]->grad, 1e-2F));
    // δ_1 = (B_1 e) ⊙ relu'(a_1): the first layer's bias gradient is its row sum, its weight
    // gradient δ_1 xᵀ.
    const Eigen::MatrixXf& h1 = model->graph.value(model->graph.feedback_points()[0].node);
    const Eigen::MatrixXf delta =
        ((h1.array() > 0.0F).cast<float>() * expected.topRows(16).array()).matrix();
    CHECK(p_dfa[1]->grad.col(0).isApprox(delta.rowwise().sum(), 1e-5F));
    CHECK(p_dfa[0]->grad.isApprox(delta * b.x.transpose(), 1e-5F));
    // The alignment is the per-sample cosine of that signal with BP's gradient at the point.
    CHECK(dfa.alignment()[0].samples == 8);
    CHECK(std::abs(dfa.alignment()[0].mean) < 1.0);
  }

  TEST_CASE("MLP graph: shallow trains only above the last feedback point") {
    auto model = small_mlp();
    graph::GraphLearner shallow(model->graph, model->loss, model->logits, Method::kShallow,
                                nullptr);
    REQUIRE(shallow.trainable().size() == 2);
    CHECK(shallow.trainable()[0]->name == "layer2.weight");
    set_batch(*model, make_batch(20, 4, 8, 2));
    REQUIRE(shallow.compute_gradients({true, 0}, true).ok());
    // No signal at the feedback points: alignment is undefined (NaN, 0 samples).
    for (const Alignment& a : shallow.alignment()) {
      CHECK(a.samples == 0);
      CHECK(std::isnan(a.mean));
    }
    CHECK_THROWS_AS(graph::GraphLearner(model->graph, model->loss, model->logits, Method::kDfa,
                                        nullptr),
                    opu::StatusError);
    DigitalFeedback wrong(5, 16, 1);
    CHECK_THROWS_AS(graph::GraphLearner(model->graph, model->loss, model->logits, Method::kDfa,
                                        &wrong),
                    opu::StatusError);
    DigitalFeedback narrow(4, 12, 1);  // narrower than d_max = 16
    CHECK_THROWS_AS(graph::GraphLearner(model->graph, model->loss, model->logits, Method::kDfa,
                                        &narrow),
                    opu::StatusError);
  }

  TEST_CASE(
      "DeviceFeedback: equals digital feedback with the device's matrix; zero columns skipped") {
    const Eigen::MatrixXf b = DigitalFeedback(4, 16, 5, FeedbackDistribution::kGaussian).matrix();
    MatrixDevice device(b);
    DeviceFeedback via_device(device, 4, 16, opu::sim::LinearOptions{});
    Eigen::MatrixXf e = Eigen::MatrixXf::Zero(4, 6);
    e.col(1) << 0.1F, -0.2F, 0.05F, 0.05F;
    e.col(4) << -0.3F, 0.1F, 0.1F, 0.1F;
    Eigen::MatrixXf out;
    REQUIRE(via_device.project(e, out).ok());
    CHECK(device.calls == 1);
    CHECK(device.last_batch == 2);  // only the two non-zero columns travelled
    CHECK(out.isApprox(b * e, 1e-6F));
    CHECK(via_device.cost().frames == 8);
    CHECK(via_device.cost().device_time_ns == 500000 * 8);
    CHECK(via_device.entry_std() == 1.0);
    // Wrong shape: INVALID_ARGUMENT naming the sizes.
    const opu::Status bad = via_device.project(Eigen::MatrixXf::Zero(3, 2), out);
    CHECK(bad.code() == opu::StatusCode::kInvalidArgument);
    CHECK(bad.message().find("want the model's output size 4") != std::string::npos);
  }

  TEST_CASE("MLP graph: DFA through a device equals DFA with the same digital matrix") {
    // Digital Gaussian B and a device holding that same B: identical training trajectories.
    DigitalFeedback digital(4, 16, 5, FeedbackDistribution::kGaussian);
    MatrixDevice device(digital.matrix());
    DeviceFeedback via_device(device, 4, 16, opu::sim::LinearOptions{});
    auto m1 = small_mlp();
    auto m2 = small_mlp();
    graph::GraphLearner l1(m1->graph, m1->loss, m1->logits, Method::kDfa, &digital);
    graph::GraphLearner l2(m2->graph, m2->loss, m2->logits, Method::kDfa, &via_device);
    Sgd o1(0.05F, 0.9F, 0.0F), o2(0.05F, 0.9F, 0.0F);
    for (int step = 0; step < 5; ++step) {
      const Batch b = make_batch(20, 4, 16, 100 + step);
      set_batch(*m1, b);
      set_batch(*m2, b);
      REQUIRE(l1.compute_gradients({true, 0}, false).ok());
      REQUIRE(l2.compute_gradients({true, 0}, false).ok());
      o1.step(l1.trainable());
      o2.step(l2.trainable());
    }
    CHECK(device.calls == 5);
    const std::vector<Param*> p1 = m1->graph.params();
    const std::vector<Param*> p2 = m2->graph.params();
    for (std::size_t i = 0; i < p1.size(); ++i) CHECK(p1[i]->value.isApprox(p2[i]->value, 1e-5F));
    CHECK(!p1[0]->value.isApprox(small_mlp()->graph.params()[0]->value, 1e-3F));  // it trained
  }

  TEST_CASE("MLP graph: DFA alignment is positive and rises early in training") {
    const std::uint64_t seed = opu::test::test_seed(21);
    INFO("seed " << seed);
    ImageDataset data{test::make_blobs(2048, 40, 5, seed), test::make_blobs(256, 40, 5, seed)};
    auto model = small_mlp(seed, 40, {32, 32}, 5);
    DigitalFeedback feedback(5, 32, seed);
    graph::GraphLearner learner(model->graph, model->loss, model->logits, Method::kDfa,
                                &feedback);
    Sgd optimizer(0.05F, 0.9F, 0.0F);
    tasks::SampleClassification task(data, 32, seed);
    tasks::ClassifierTrainerOptions options;
    options.epochs = 3;
    options.align_every = 8;
    options.signature = model->signature;
    tasks::ClassifierTrainer trainer(
        options, {&model->graph, model->input, model->labels, model->logits, model->loss}, task,
        learner, optimizer);
    std::vector<double> h1;
    tasks::ClassifierCallbacks callbacks;
    callbacks.on_alignment = [&](std::int64_t, std::int64_t, const std::vector<Alignment>& a) {
      h1.push_back(a[0].mean);
    };
    REQUIRE(trainer.run(callbacks).ok());
    REQUIRE(h1.size() >= 20);
    // Early mean (first 3 measurements) below the late mean (last 3): the forward weights align
    // with B. At initialisation, alignment is near 0 (a random B against W^T).
    const double early = (h1[0] + h1[1] + h1[2]) / 3.0;
    const double late = (h1[h1.size() - 1] + h1[h1.size() - 2] + h1[h1.size() - 3]) / 3.0;
    INFO("early " << early << " late " << late);
    CHECK(late > 0.2);
    CHECK(late > early + 0.1);
    CHECK(trainer.history().back().accuracy.at("test") > 0.9);
  }
}

TEST_SUITE("trainer") {
  TEST_CASE("DeviceFeedback: through the simulator, close to the device's exact projection") {
    using namespace opu::trainer;
    // An ideal camera and 8 bit-planes: what remains is the encoding's rounding (~2^-8 relative),
    // so the projection must correlate with the exact B·e far above 0.98.
    opu::sim::SimConfig config;
    config.seed = opu::test::test_seed(3);
    config.n_in = 512;
    config.n_out = 64;
    config.camera.ideal = true;
    opu::Result<std::unique_ptr<opu::sim::SimDevice>> device = opu::sim::SimDevice::create(config);
    REQUIRE(device.ok());
    opu::sim::LinearOptions options;
    options.encoding = opu::sim::Encoding::kBitplanes;
    options.bitplanes = 8;
    DeviceFeedback feedback(**device, 10, 64, options);
    // Softmax-like errors: zero-sum columns, a few exactly zero (skipped by DeviceFeedback).
    const CounterRng rng(5, "test/errors");
    Eigen::MatrixXf e(10, 24);
    for (Eigen::Index i = 0; i < e.size(); ++i)
      e.data()[i] = rng.normal(static_cast<std::uint64_t>(i));
    for (Eigen::Index c = 0; c < e.cols(); ++c) e.col(c).array() -= e.col(c).mean();
    e.col(3).setZero();
    Eigen::MatrixXf out;
    REQUIRE(feedback.project(e, out).ok());
    opu::sim::LinearRequest request;
    request.n_in = 10;
    request.n_out = 64;
    request.batch = e.cols();
    request.values = std::span<const float>(e.data(), static_cast<std::size_t>(e.size()));
    request.options = options;
    opu::Result<Eigen::MatrixXf> exact = (*device)->exact_linear(request);
    REQUIRE(exact.ok());
    CHECK(out.col(3).isZero());
    const double correlation = out.cwiseProduct(*exact).sum() / (out.norm() * exact->norm());
    INFO("correlation " << correlation);
    CHECK(correlation > 0.98);
    CHECK(feedback.cost().frames > 0);
    CHECK(feedback.cost().device_time_ns > 0);
  }
}
