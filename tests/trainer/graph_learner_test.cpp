// Feedback points anywhere: GraphLearner's BP, DFA and shallow gradients against hand-derived
// local gradients on a residual graph, the error broadcast from sequences to positions, and
// alignment (the MLP's, against its own hand-derived values, is in learner_test.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include "opu_sim/device.h"
#include "trainer/feedback.h"
#include "trainer/graph/learner.h"
#include "trainer/graph/ops_dense.h"
#include "trainer/graph/ops_loss.h"
#include "trainer/method.h"
#include "trainer/random.h"

TEST_SUITE("trainer_graph") {
  using namespace opu::trainer::graph;
  using opu::trainer::DigitalFeedback;
  using opu::trainer::FeedbackDistribution;
  using opu::trainer::ForwardContext;
  using opu::trainer::Method;
  using opu::trainer::Param;

  namespace {

  Matrix<float> random_matrix(Index rows, Index cols, std::uint64_t seed, float scale = 1.0F) {
    const opu::trainer::CounterRng rng(seed, "test/graph-learner");
    Matrix<float> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i)
      m.data()[i] = scale * rng.normal(static_cast<std::uint64_t>(i));
    return m;
  }

  bool close(const Matrix<float>& a, const Matrix<float>& b, float tol = 1e-5F) {
    if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
    return (a - b).cwiseAbs().maxCoeff() <= tol * (1.0F + b.cwiseAbs().maxCoeff());
  }

  }  // namespace

  // x -> a = relu(W1 x) [p1] -> b = a + relu(W2 a) [p2] -> logits = W3 b -> loss.
  struct Residual {
    Graph<float> g;
    NodeId x, t, w1, w2, w3, a, r, b, logits, loss;
  };

  void build_residual(Residual & m, std::uint64_t seed) {
    m.x = m.g.input("x", 5);
    m.t = m.g.index_input("t");
    m.w1 = m.g.parameter("w1", random_matrix(6, 5, seed + 1, 0.5F));
    m.w2 = m.g.parameter("w2", random_matrix(6, 6, seed + 2, 0.5F));
    m.w3 = m.g.parameter("w3", random_matrix(3, 6, seed + 3, 0.5F));
    m.a = activation(m.g, Activation::kRelu, linear(m.g, m.x, m.w1, kNoNode));
    m.r = activation(m.g, Activation::kRelu, linear(m.g, m.a, m.w2, kNoNode));
    m.b = add(m.g, m.a, m.r);
    m.logits = linear(m.g, m.b, m.w3, kNoNode);
    m.loss = softmax_cross_entropy(m.g, m.logits, m.t);
    m.g.feedback_point(m.a, "p1");
    m.g.feedback_point(m.b, "p2");
  }

  TEST_CASE("GraphLearner: DFA on a residual graph is local backprop from each point's slice") {
    Residual m;
    build_residual(m, 30);
    const Index batch = 8;
    m.g.set_input(m.x, random_matrix(5, batch, 4));
    m.g.set_ids(m.t, std::vector<std::int32_t>{0, 1, 2, 0, 1, 2, 2, 1});
    DigitalFeedback fb(3, 6, 9);
    GraphLearner learner(m.g, m.loss, m.logits, Method::kDfa, &fb);
    CHECK(learner.in_top_segment(m.w3));
    CHECK_FALSE(learner.in_top_segment(m.w2));
    CHECK(learner.max_feedback_size() == 6);
    REQUIRE(learner.compute_gradients({true, 0}, true).ok());

    // By hand: e = softmax - onehot over the batch; P = scale B e; s1 = s2 = P (both 6 rows).
    const Matrix<float>& logits = m.g.value(m.logits);
    Matrix<float> e(3, batch);
    const std::vector<std::int32_t>& t = m.g.node(m.t).ids;
    for (Index c = 0; c < batch; ++c) {
      Eigen::VectorXf p = (logits.col(c).array() - logits.col(c).maxCoeff()).exp();
      p /= p.sum();
      p(t[static_cast<std::size_t>(c)]) -= 1.0F;
      e.col(c) = p / static_cast<float>(batch);
    }
    CHECK(close(learner.error(), e));
    const double scale = opu::trainer::kPaperStd / (fb.entry_std() * std::sqrt(6.0));
    CHECK(learner.feedback_scale() == doctest::Approx(scale));
    const Matrix<float> s = static_cast<float>(scale) * fb.matrix() * e;
    CHECK(close(learner.teaching_signal(0), s));
    CHECK(close(learner.teaching_signal(1), s));
    const Matrix<float>& x = m.g.value(m.x);
    const Matrix<float>& a = m.g.value(m.a);
    const Matrix<float>& b = m.g.value(m.b);
    const Matrix<float> pre2 = m.g.value(m.w2) * a;
    const Matrix<float> pre1 = m.g.value(m.w1) * x;
    // W3 learns from the true gradient e; W2 from s2 through the relu; W1 from s1 only (what
    // reached a from above, s2 + W2ᵀ(...), is dropped at p1).
    CHECK(close(m.g.node(m.w3).param->grad, e * b.transpose()));
    const Matrix<float> d2 = (pre2.array() > 0.0F).select(s.array(), 0.0F).matrix();
    CHECK(close(m.g.node(m.w2).param->grad, d2 * a.transpose()));
    const Matrix<float> d1 = (pre1.array() > 0.0F).select(s.array(), 0.0F).matrix();
    CHECK(close(m.g.node(m.w1).param->grad, d1 * x.transpose()));
    for (const opu::trainer::Alignment& al : learner.alignment()) {
      CHECK(al.samples == batch);
      CHECK(std::abs(al.mean) <= 1.0);
    }

    // BP on the same graph: W3 is the same, the rest is the chain rule through the residual.
    Residual bp;
    build_residual(bp, 30);
    bp.g.set_input(bp.x, x);
    bp.g.set_ids(bp.t, t);
    GraphLearner bp_learner(bp.g, bp.loss, bp.logits, Method::kBp, nullptr);
    REQUIRE(bp_learner.compute_gradients({true, 0}, true).ok());
    CHECK(close(bp.g.node(bp.w3).param->grad, m.g.node(m.w3).param->grad));
    const Matrix<float> gb = bp.g.value(bp.w3).transpose() * e;
    const Matrix<float> g2 = (pre2.array() > 0.0F).select(gb.array(), 0.0F).matrix();
    const Matrix<float> ga = gb + bp.g.value(bp.w2).transpose() * g2;
    CHECK(close(bp.g.node(bp.w2).param->grad, g2 * a.transpose()));
    const Matrix<float> g1 = (pre1.array() > 0.0F).select(ga.array(), 0.0F).matrix();
    CHECK(close(bp.g.node(bp.w1).param->grad, g1 * x.transpose()));
    CHECK(close(learner.true_gradient(0), ga));
    CHECK(close(learner.true_gradient(1), gb));
    CHECK(bp_learner.alignment()[0].mean == doctest::Approx(1.0));
    CHECK(bp_learner.alignment()[1].mean == doctest::Approx(1.0));

    // Shallow: only W3 trains, with the true gradient.
    Residual sh;
    build_residual(sh, 30);
    sh.g.set_input(sh.x, x);
    sh.g.set_ids(sh.t, t);
    GraphLearner sh_learner(sh.g, sh.loss, sh.logits, Method::kShallow, nullptr);
    REQUIRE(sh_learner.trainable().size() == 1);
    CHECK(sh_learner.trainable()[0]->name == "w3");
    REQUIRE(sh_learner.compute_gradients({true, 0}, false).ok());
    CHECK(close(sh.g.node(sh.w3).param->grad, e * b.transpose()));
  }

  TEST_CASE("GraphLearner: the error may sit on a point, but an error below a point is refused") {
    Residual m;
    build_residual(m, 40);
    m.g.set_input(m.x, random_matrix(5, 6, 5));
    m.g.set_ids(m.t, std::vector<std::int32_t>{2, 1, 0, 0, 1, 2});
    // The error at p2 = b (TinyDFA's DFA module on the last DFALayer's output, the paper's
    // Transformer): e = dL/db, and p2's signal is the projection of its own true gradient.
    DigitalFeedback fb(6, 6, 3, FeedbackDistribution::kGaussian);
    GraphLearner learner(m.g, m.loss, m.b, Method::kDfa, &fb);
    REQUIRE(learner.compute_gradients({true, 0}, true).ok());
    CHECK(close(learner.error(), learner.true_gradient(1)));
    const float scale = static_cast<float>(opu::trainer::kPaperStd / std::sqrt(6.0));
    CHECK(close(learner.teaching_signal(1), scale * fb.matrix() * learner.error()));
    // An error node below p2 (its gradient passes through a point) cannot be DFA's error.
    DigitalFeedback fb2(6, 6, 3);
    CHECK_THROWS_WITH_AS(GraphLearner(m.g, m.loss, m.r, Method::kDfa, &fb2),
                         doctest::Contains("must be in the top segment"), opu::StatusError);
    // Shape and method checks.
    DigitalFeedback small(3, 4, 3);
    CHECK_THROWS_WITH_AS(GraphLearner(m.g, m.loss, m.logits, Method::kDfa, &small),
                         doctest::Contains(">= 6 (d_max)"), opu::StatusError);
    Graph<float> plain;
    const NodeId z = plain.input("z", 3);
    const NodeId tt = plain.index_input("t");
    const NodeId l = softmax_cross_entropy(
        plain, linear(plain, z, plain.parameter("w", random_matrix(3, 3, 1)), kNoNode), tt);
    CHECK_THROWS_WITH_AS(GraphLearner(plain, l, z, Method::kShallow, nullptr),
                         doctest::Contains("at least one feedback point"), opu::StatusError);
  }

  namespace {
  /// Mean over the positions of each sequence (d x N -> d x sequences): a per-sequence error
  /// from per-position features, for the broadcast test.
  class MeanPoolOp final : public Op<float> {
   public:
    std::string kind() const override { return "mean_pool"; }
    Index output_rows(const std::string&, Inputs in) const override { return in[0]->rows; }
    void forward(Inputs in, Node<float>& out, const ForwardContext&) override {
      const Index len = in[0]->seq_len;
      resize_to(out.data, out.rows, in[0]->sequences());
      out.seq_len = 1;
      for (Index b = 0; b < in[0]->sequences(); ++b) {
        out.data.col(b) = in[0]->value().middleCols(b * len, len).rowwise().mean();
      }
    }
    void backward(Inputs in, const Node<float>& out, std::span<GradSlot<float>> din) override {
      if (!din[0]) return;
      const Index len = in[0]->seq_len;
      Matrix<float>& g = din[0].zero_or_keep(in[0]->rows, in[0]->cols());
      for (Index j = 0; j < in[0]->cols(); ++j)
        g.col(j) += out.grad().col(j / len) / static_cast<float>(len);
    }
  };
  }  // namespace

  TEST_CASE("GraphLearner: one error per sequence is broadcast to the positions of a point") {
    Graph<float> g;
    const Index len = 4;
    const Index sequences = 3;
    const NodeId x = g.input("x", 5);
    const NodeId t = g.index_input("t");
    const NodeId w1 = g.parameter("w1", random_matrix(8, 5, 1, 0.5F));
    const NodeId h = activation(g, Activation::kTanh, linear(g, x, w1, kNoNode));
    g.feedback_point(h, "tokens");
    const NodeId pooled = g.apply(std::make_unique<MeanPoolOp>(), {h});
    const NodeId logits =
        linear(g, pooled, g.parameter("w2", random_matrix(3, 8, 2, 0.5F)), kNoNode);
    const NodeId loss = softmax_cross_entropy(g, logits, t);
    const Matrix<float> xv = random_matrix(5, len * sequences, 3);
    g.set_input(x, xv, len);
    g.set_ids(t, std::vector<std::int32_t>{1, 0, 2});
    DigitalFeedback fb(3, 8, 4);
    GraphLearner learner(g, loss, logits, Method::kDfa, &fb);
    REQUIRE(learner.compute_gradients({true, 0}, true).ok());
    REQUIRE(learner.error().cols() == sequences);
    const Matrix<float> p =
        static_cast<float>(learner.feedback_scale()) * fb.matrix() * learner.error();
    const Matrix<float>& s = learner.teaching_signal(0);
    REQUIRE(s.cols() == len * sequences);
    for (Index j = 0; j < s.cols(); ++j) {
      CHECK(close(s.col(j), p.col(j / len) / 2.0F));  // divided by sqrt(4 positions)
    }
    const Matrix<float>& hv = g.value(h);
    const Matrix<float> delta = (s.array() * (1.0F - hv.array().square())).matrix();
    CHECK(close(g.node(w1).param->grad, delta * xv.transpose()));
    CHECK(learner.alignment()[0].samples == len * sequences);
    // Another batch shape (2 sequences of 5): the buffers follow.
    g.set_input(x, random_matrix(5, 10, 5), 5);
    g.set_ids(t, std::vector<std::int32_t>{1, 0});
    REQUIRE(learner.compute_gradients({true, 1}, true).ok());
    CHECK(learner.teaching_signal(0).cols() == 10);
    CHECK(learner.error().cols() == 2);
  }
}
