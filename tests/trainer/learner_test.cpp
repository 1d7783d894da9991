// BP, DFA and shallow gradients; alignment; feedback sources (digital and through a Device).
#include "trainer/learner.h"

#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include "opu_sim/sim_device.h"
#include "test_support.h"
#include "trainer/feedback.h"
#include "trainer/optimizer.h"
#include "trainer/random.h"
#include "trainer/trainer.h"
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
    Eigen::MatrixXf t;
  };

  Batch make_batch(std::int64_t n_in, std::int32_t classes, std::int64_t batch,
                   std::uint64_t seed) {
    const LabelledData d = test::make_blobs(batch, n_in, classes, seed);
    Batch b{d.features, Eigen::MatrixXf::Zero(classes, batch)};
    for (std::int64_t c = 0; c < batch; ++c) b.t(d.labels[static_cast<std::size_t>(c)], c) = 1.0F;
    return b;
  }

  }  // namespace

  TEST_CASE("Learner: alignment under BP is 1 by construction") {
    Model model = make_mlp(20, {16, 12}, 4, ActivationKind::kRelu, 3);
    SoftmaxCrossEntropy loss;
    Learner learner(model, loss, Method::kBp, nullptr);
    const Batch b = make_batch(20, 4, 32, 1);
    model.input() = b.x;
    Result<StepResult> r = learner.compute_gradients(b.t, Eigen::VectorXf(), {true, 0}, true);
    REQUIRE(r.ok());
    REQUIRE(learner.alignment().size() == 2);
    for (const Alignment& a : learner.alignment()) {
      INFO(a.point);
      CHECK(a.samples > 0);
      // Same gradient computed twice: equal up to float rounding of the cosine itself.
      CHECK(a.mean == doctest::Approx(1.0).epsilon(1e-5));
      CHECK(a.std < 1e-3);
    }
  }

  TEST_CASE(
      "Learner: DFA teaching signal is the scaled B_l e and the top block gets BP gradients") {
    Model model = make_mlp(20, {16, 12}, 4, ActivationKind::kRelu, 3);
    Model reference = make_mlp(20, {16, 12}, 4, ActivationKind::kRelu, 3);
    SoftmaxCrossEntropy loss;
    DigitalFeedback feedback(4, 16, 9);
    Learner dfa(model, loss, Method::kDfa, &feedback);
    Learner bp(reference, loss, Method::kBp, nullptr);
    const Batch b = make_batch(20, 4, 8, 2);
    model.input() = b.x;
    reference.input() = b.x;
    REQUIRE(dfa.compute_gradients(b.t, Eigen::VectorXf(), {true, 0}, true).ok());
    REQUIRE(bp.compute_gradients(b.t, Eigen::VectorXf(), {true, 0}, false).ok());
    // Paper scaling: U[-1,1) matrix, 1/sqrt(d_max).
    CHECK(dfa.feedback_scale() == doctest::Approx(1.0 / 4.0));
    Eigen::MatrixXf e;
    loss.evaluate(model.output(), b.t, Eigen::VectorXf(), &e);
    const Eigen::MatrixXf expected = (feedback.matrix() * e) * 0.25F;
    CHECK(dfa.teaching_signal(0).isApprox(expected.topRows(16), 1e-5F));
    CHECK(dfa.teaching_signal(1).isApprox(expected.topRows(12), 1e-5F));
    // The last linear layer (above h2) learns exactly as under BP.
    const std::vector<Param*> p_dfa = model.params();
    const std::vector<Param*> p_bp = reference.params();
    CHECK(p_dfa.back()->grad.isApprox(p_bp.back()->grad, 1e-5F));
    CHECK(p_dfa[4]->grad.isApprox(p_bp[4]->grad, 1e-5F));
    // Below, DFA's gradients differ from BP's (a random B cannot match W^T).
    CHECK(!p_dfa[0]->grad.isApprox(p_bp[0]->grad, 1e-2F));
    // δ_1 = (B_1 e) ⊙ relu'(a_1): the first layer's bias gradient is its row sum.
    const Eigen::MatrixXf& h1 = model.activation(1);
    const Eigen::MatrixXf delta =
        ((h1.array() > 0.0F).cast<float>() * expected.topRows(16).array()).matrix();
    CHECK(p_dfa[1]->grad.col(0).isApprox(delta.rowwise().sum(), 1e-5F));
  }

  TEST_CASE("Learner: shallow trains only above the last feedback point") {
    Model model = make_mlp(20, {16, 12}, 4, ActivationKind::kRelu, 3);
    SoftmaxCrossEntropy loss;
    Learner shallow(model, loss, Method::kShallow, nullptr);
    REQUIRE(shallow.trainable().size() == 2);
    CHECK(shallow.trainable()[0]->name == "layer2.weight");
    const Batch b = make_batch(20, 4, 8, 2);
    model.input() = b.x;
    REQUIRE(shallow.compute_gradients(b.t, Eigen::VectorXf(), {true, 0}, true).ok());
    // No signal at the feedback points: alignment is undefined (NaN, 0 samples).
    for (const Alignment& a : shallow.alignment()) {
      CHECK(a.samples == 0);
      CHECK(std::isnan(a.mean));
    }
    CHECK_THROWS_AS(Learner(model, loss, Method::kDfa, nullptr), opu::StatusError);
    DigitalFeedback wrong(5, 16, 1);
    CHECK_THROWS_AS(Learner(model, loss, Method::kDfa, &wrong), opu::StatusError);
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

  TEST_CASE("Learner: DFA through a device equals DFA with the same digital matrix") {
    // Digital Gaussian B and a device holding that same B: identical training trajectories.
    DigitalFeedback digital(4, 16, 5, FeedbackDistribution::kGaussian);
    MatrixDevice device(digital.matrix());
    DeviceFeedback via_device(device, 4, 16, opu::sim::LinearOptions{});
    Model m1 = make_mlp(20, {16, 12}, 4, ActivationKind::kRelu, 3);
    Model m2 = make_mlp(20, {16, 12}, 4, ActivationKind::kRelu, 3);
    SoftmaxCrossEntropy loss;
    Learner l1(m1, loss, Method::kDfa, &digital);
    Learner l2(m2, loss, Method::kDfa, &via_device);
    Sgd o1(0.05F, 0.9F, 0.0F), o2(0.05F, 0.9F, 0.0F);
    for (int step = 0; step < 5; ++step) {
      const Batch b = make_batch(20, 4, 16, 100 + step);
      m1.input() = b.x;
      m2.input() = b.x;
      REQUIRE(l1.compute_gradients(b.t, Eigen::VectorXf(), {true, 0}, false).ok());
      REQUIRE(l2.compute_gradients(b.t, Eigen::VectorXf(), {true, 0}, false).ok());
      o1.step(l1.trainable());
      o2.step(l2.trainable());
    }
    for (std::size_t i = 0; i < m1.params().size(); ++i) {
      CHECK(m1.params()[i]->value.isApprox(m2.params()[i]->value, 1e-5F));
    }
  }

  TEST_CASE("Learner: DFA alignment is positive and rises early in training") {
    const std::uint64_t seed = opu::test::test_seed(21);
    INFO("seed " << seed);
    ImageDataset data{test::make_blobs(2048, 40, 5, seed), test::make_blobs(256, 40, 5, seed)};
    Model model = make_mlp(40, {32, 32}, 5, ActivationKind::kRelu, seed);
    SoftmaxCrossEntropy loss;
    DigitalFeedback feedback(5, 32, seed);
    Learner learner(model, loss, Method::kDfa, &feedback);
    Sgd optimizer(0.05F, 0.9F, 0.0F);
    ImageTask task(data, 32, seed);
    TrainerOptions options;
    options.epochs = 3;
    options.align_every = 8;
    Trainer trainer(options, model, task, learner, optimizer);
    std::vector<double> h1;
    TrainerCallbacks callbacks;
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
