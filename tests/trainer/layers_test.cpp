// Numerical vs analytic gradients for every layer and loss, and BP through a whole MLP.
//
// Finite differences in float32: central differences with step h have truncation error O(h² f''')
// and rounding error about eps_float |L| / h. With h = 1e-2 (1e-3 for the whole MLP), |L| ~ 1-10,
// both stay below ~1e-3, hence the tolerance |numeric - analytic| <= 2e-3 + 2e-2 |analytic|.
#include "trainer/layers.h"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>

#include "test_support.h"
#include "trainer/datasets.h"
#include "trainer/losses.h"
#include "trainer/model.h"
#include "trainer/random.h"

TEST_SUITE("trainer") {
  using namespace opu::trainer;
  using opu::Result;

  namespace {

  Eigen::MatrixXf random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed,
                                float scale = 1.0F) {
    const CounterRng rng(seed, "test/matrix");
    Eigen::MatrixXf m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = scale * rng.normal(i);
    return m;
  }

  void check_close(double numeric, double analytic, const std::string& what) {
    INFO(what << ": numeric " << numeric << " analytic " << analytic);
    CHECK(std::abs(numeric - analytic) <= 2e-3 + 2e-2 * std::abs(analytic));
  }

  // L = Σ R ⊙ layer(x): dL/dy = R. Checks dL/dx and every parameter gradient.
  void check_layer(Layer& layer, Eigen::MatrixXf x, std::uint64_t seed, float h = 1e-2F) {
    const ForwardContext context{true, 3};
    Eigen::MatrixXf y;
    layer.forward(x, y, context);
    const Eigen::MatrixXf r = random_matrix(y.rows(), y.cols(), seed + 1);
    auto objective = [&]() {
      Eigen::MatrixXf out;
      layer.forward(x, out, context);
      return static_cast<double>((out.cast<double>().array() * r.cast<double>().array()).sum());
    };
    Eigen::MatrixXf dx;
    layer.forward(x, y, context);
    layer.backward(x, y, r, &dx, true);
    REQUIRE(dx.rows() == x.rows());
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      const float saved = x.data()[i];
      x.data()[i] = saved + h;
      const double up = objective();
      x.data()[i] = saved - h;
      const double down = objective();
      x.data()[i] = saved;
      check_close((up - down) / (2.0 * h), dx.data()[i],
                  layer.kind() + " dx[" + std::to_string(i) + "]");
    }
    for (Param* p : layer.params()) {
      const Eigen::MatrixXf grad = p->grad;
      for (Eigen::Index i = 0; i < p->value.size(); ++i) {
        const float saved = p->value.data()[i];
        p->value.data()[i] = saved + h;
        const double up = objective();
        p->value.data()[i] = saved - h;
        const double down = objective();
        p->value.data()[i] = saved;
        check_close((up - down) / (2.0 * h), grad.data()[i],
                    p->name + "[" + std::to_string(i) + "]");
      }
    }
  }

  // Pushes values away from 0 so a ±h step never crosses ReLU's kink.
  Eigen::MatrixXf away_from_zero(Eigen::MatrixXf m) {
    for (Eigen::Index i = 0; i < m.size(); ++i) {
      float& v = m.data()[i];
      v = v >= 0.0F ? v + 0.1F : v - 0.1F;
    }
    return m;
  }

  }  // namespace

  TEST_CASE("Layers: numerical vs analytic gradients") {
    const std::uint64_t seed = opu::test::test_seed(11);
    INFO("seed " << seed);
    SUBCASE("linear") {
      Linear layer("lin", 5, 4, seed);
      check_layer(layer, random_matrix(5, 3, seed), seed);
    }
    SUBCASE("relu") {
      Activation layer(ActivationKind::kRelu);
      check_layer(layer, away_from_zero(random_matrix(6, 3, seed)), seed);
    }
    SUBCASE("tanh") {
      Activation layer(ActivationKind::kTanh);
      check_layer(layer, random_matrix(6, 3, seed), seed);
    }
    SUBCASE("sigmoid") {
      Activation layer(ActivationKind::kSigmoid);
      check_layer(layer, random_matrix(6, 3, seed), seed);
    }
    SUBCASE("dropout (fixed step: fixed mask)") {
      Dropout layer("drop", 0.5F, seed);
      check_layer(layer, random_matrix(8, 4, seed), seed);
    }
    SUBCASE("graph convolution") {
      // A 5-node path graph with self-loops, normalised.
      const auto adjacency = std::make_shared<const Eigen::SparseMatrix<float>>(
          normalized_adjacency(5, {{0, 1}, {1, 2}, {2, 3}, {3, 4}, {0, 4}}));
      GraphConv layer("gc", adjacency, 3, 2, seed);
      check_layer(layer, random_matrix(3, 5, seed), seed);
    }
  }

  TEST_CASE("Dropout: keeps 1-p of the elements, scales them, identity in evaluation") {
    Dropout layer("d", 0.25F, 5);
    const Eigen::MatrixXf x = Eigen::MatrixXf::Ones(100, 100);
    Eigen::MatrixXf y;
    layer.forward(x, y, ForwardContext{true, 1});
    const double kept = (y.array() > 0.0F).cast<double>().mean();
    CHECK(kept == doctest::Approx(0.75).epsilon(0.03));  // binomial sd 0.0043 at n = 1e4
    CHECK(y.maxCoeff() == doctest::Approx(1.0F / 0.75F));
    Eigen::MatrixXf y2;
    layer.forward(x, y2, ForwardContext{true, 1});
    CHECK(y == y2);  // same step, same mask
    layer.forward(x, y2, ForwardContext{true, 2});
    CHECK(y != y2);
    layer.forward(x, y2, ForwardContext{false, 2});
    CHECK(y2 == x);
  }

  TEST_CASE("Losses: numerical vs analytic gradients, weights select samples") {
    const std::uint64_t seed = opu::test::test_seed(12);
    const Eigen::MatrixXf z = random_matrix(4, 5, seed, 2.0F);
    Eigen::MatrixXf t = Eigen::MatrixXf::Zero(4, 5);
    for (int c = 0; c < 5; ++c) t(c % 4, c) = 1.0F;
    Eigen::VectorXf w(5);
    w << 1, 0, 1, 1, 0;
    SoftmaxCrossEntropy ce;
    BinaryCrossEntropy bce;
    MeanSquaredError mse;
    for (const Loss* loss : std::initializer_list<const Loss*>{&ce, &bce, &mse}) {
      for (const bool weighted : {false, true}) {
        const Eigen::VectorXf weights = weighted ? w : Eigen::VectorXf();
        Eigen::MatrixXf grad;
        loss->evaluate(z, t, weights, &grad);
        Eigen::MatrixXf zz = z;
        const float h = 1e-2F;
        for (Eigen::Index i = 0; i < z.size(); ++i) {
          zz.data()[i] = z.data()[i] + h;
          const double up = loss->evaluate(zz, t, weights, nullptr);
          zz.data()[i] = z.data()[i] - h;
          const double down = loss->evaluate(zz, t, weights, nullptr);
          zz.data()[i] = z.data()[i];
          check_close(
              (up - down) / (2.0 * h), grad.data()[i],
              loss->name() + (weighted ? " weighted" : "") + " [" + std::to_string(i) + "]");
        }
        if (weighted) CHECK(grad.col(1).isZero());
      }
    }
    // Cross-entropy of uniform logits is log(classes).
    CHECK(ce.evaluate(Eigen::MatrixXf::Zero(4, 5), t, Eigen::VectorXf(), nullptr) ==
          doctest::Approx(std::log(4.0)));
    CHECK(make_loss("nope").status().code() == opu::StatusCode::kInvalidArgument);
  }

  TEST_CASE("Model: BP through a whole MLP matches finite differences") {
    const std::uint64_t seed = opu::test::test_seed(13);
    INFO("seed " << seed);
    for (const ActivationKind act : {ActivationKind::kTanh, ActivationKind::kRelu}) {
      Model model = make_mlp(6, {7, 5}, 3, act, seed);
      const Eigen::MatrixXf x = random_matrix(6, 4, seed + 2);
      Eigen::MatrixXf t = Eigen::MatrixXf::Zero(3, 4);
      for (int c = 0; c < 4; ++c) t(c % 3, c) = 1.0F;
      SoftmaxCrossEntropy loss;
      const ForwardContext context{true, 0};
      Eigen::MatrixXf e;
      loss.evaluate(model.forward(x, context), t, Eigen::VectorXf(), &e);
      model.backward(model.num_layers() - 1, 0, e, nullptr, true);
      const float h = 1e-3F;
      // ReLU's kink: a ±h step that flips a hidden unit on or off makes the difference quotient
      // meaningless there; such elements are skipped (and must be rare).
      auto pattern = [&]() {
        std::vector<bool> on;
        for (std::size_t i = 0; i + 1 < model.num_layers(); ++i) {
          if (model.layer(i).kind() != "linear") continue;
          const Eigen::MatrixXf& a = model.activation(i);
          for (Eigen::Index k = 0; k < a.size(); ++k) on.push_back(a.data()[k] > 0.0F);
        }
        return on;
      };
      auto objective = [&]() {
        return loss.evaluate(model.forward(x, context), t, Eigen::VectorXf(), nullptr);
      };
      const std::vector<bool> base = pattern();
      int checked = 0;
      int skipped = 0;
      for (Param* p : model.params()) {
        const Eigen::MatrixXf grad = p->grad;
        for (Eigen::Index i = 0; i < p->value.size(); ++i) {
          const float saved = p->value.data()[i];
          p->value.data()[i] = saved + h;
          const double up = objective();
          const bool up_same = pattern() == base;
          p->value.data()[i] = saved - h;
          const double down = objective();
          const bool down_same = pattern() == base;
          p->value.data()[i] = saved;
          if (!up_same || !down_same) {
            ++skipped;
            continue;
          }
          ++checked;
          check_close((up - down) / (2.0 * h), grad.data()[i],
                      activation_name(act) + " " + p->name + "[" + std::to_string(i) + "]");
        }
      }
      INFO(activation_name(act) << ": " << checked << " checked, " << skipped << " skipped");
      CHECK(skipped * 20 < checked);
    }
  }

  TEST_CASE("Model: signature, feedback points, bad input size") {
    Model model = make_mlp(784, {256, 256}, 10, ActivationKind::kRelu, 1);
    CHECK(model.signature() == "784-linear256-relu-[h1]-linear256-relu-[h2]-linear10");
    REQUIRE(model.feedback_points().size() == 2);
    CHECK(model.feedback_points()[0].after_layer == 1);
    CHECK(model.max_feedback_size() == 256);
    CHECK(model.num_parameters() == 784 * 256 + 256 + 256 * 256 + 256 + 2570);
    CHECK_THROWS_AS(model.forward(Eigen::MatrixXf::Zero(100, 2), ForwardContext{}),
                    opu::StatusError);
    // PyTorch's default init bound 1/sqrt(fan_in).
    CHECK(model.params()[0]->value.cwiseAbs().maxCoeff() <= 1.0F / std::sqrt(784.0F));
  }
}
