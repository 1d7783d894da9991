// Every op of the graph engine against central finite differences in double precision (the
// tolerance is explained in graph_gradcheck.h), every input and parameter gradient, with random
// inputs; float and double agree; the check itself rejects a wrong backward.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <numbers>
#include <vector>

#include "graph_gradcheck.h"
#include "opu_sim/status.h"
#include "trainer/graph/graph.h"
#include "trainer/graph/ops_attention.h"
#include "trainer/graph/ops_dense.h"
#include "trainer/graph/ops_embedding.h"
#include "trainer/graph/ops_loss.h"
#include "trainer/graph/ops_norm.h"
#include "trainer/graph/ops_sparse.h"

TEST_SUITE("trainer_graph") {
  using namespace opu::trainer::graph;
  using opu::trainer::ForwardContext;
  using opu::trainer::test::check_gradients;
  using opu::trainer::test::random_matrix_d;
  namespace test = opu::trainer::test;

  namespace {

  const ForwardContext kTraining{true, 5};

  /// A float input of rows x cols (seq_len) with random values whose gradient is checked.
  NodeId random_input(Graph<double>& g, const std::string& name, Index rows, Index cols,
                      std::uint64_t seed, Index seq_len = 1, double scale = 1.0) {
    const NodeId id = g.input(name, rows, true);
    g.set_input(id, random_matrix_d(rows, cols, seed, scale), seq_len);
    return id;
  }

  NodeId random_param(Graph<double>& g, const std::string& name, Index rows, Index cols,
                      std::uint64_t seed, double scale = 1.0) {
    return g.parameter(name, random_matrix_d(rows, cols, seed, scale));
  }

  void require_ok(const test::GradCheckResult& r, const std::string& what) {
    INFO(what << ": " << r.checked << " entries, worst ratio " << r.worst << "\n" << r.report);
    CHECK(r.checked > 0);
    CHECK(r.ok);
  }

  /// Pushes values at least `gap` away from 0 (ReLU's kink).
  Matrix<double> away_from_zero(Matrix<double> m, double gap = 0.05) {
    for (Index i = 0; i < m.size(); ++i) {
      double& v = m.data()[i];
      if (std::abs(v) < gap) v = v < 0 ? -gap : gap;
    }
    return m;
  }

  /// y = 1.01 x forward but dy backward: a backward that is wrong by 1%.
  class WrongScaleOp final : public Op<double> {
   public:
    std::string kind() const override { return "wrong_scale"; }
    Index output_rows(const std::string&, Inputs in) const override { return in[0]->rows; }
    void forward(Inputs in, Node<double>& out, const ForwardContext&) override {
      resize_to(out.data, out.rows, in[0]->cols());
      out.data = 1.01 * in[0]->value();
    }
    void backward(Inputs, const Node<double>& out, std::span<GradSlot<double>> din) override {
      if (din[0]) din[0].assign(out.grad());
    }
  };

  }  // namespace

  TEST_CASE("graph gradcheck: linear with and without bias, every gradient") {
    Graph<double> g;
    const NodeId x = random_input(g, "x", 4, 6, 1);
    const NodeId w = random_param(g, "w", 3, 4, 2);
    const NodeId b = random_param(g, "b", 3, 1, 3);
    const NodeId y = linear(g, x, w, b);
    const NodeId w2 = random_param(g, "w2", 2, 3, 4);
    const NodeId z = linear(g, y, w2, kNoNode);
    require_ok(check_gradients(g, z, kTraining), "linear");
  }

  TEST_CASE("graph gradcheck: activations") {
    for (Activation a :
         {Activation::kRelu, Activation::kGelu, Activation::kTanh, Activation::kSigmoid}) {
      Graph<double> g;
      const NodeId x = g.input("x", 5, true);
      g.set_input(x, away_from_zero(random_matrix_d(5, 7, 11)));
      const NodeId y = activation(g, a, x);
      require_ok(check_gradients(g, y, kTraining), activation_name(a));
    }
  }

  TEST_CASE("graph: GELU is the exact x Phi(x)") {
    Graph<double> g;
    const NodeId x = g.input("x", 1);
    Matrix<double> v(1, 3);
    v << -1.0, 0.5, 2.0;
    g.set_input(x, v);
    const NodeId y = activation(g, Activation::kGelu, x);
    g.forward(kTraining);
    for (Index i = 0; i < 3; ++i) {
      const double xv = v(0, i);
      CHECK(g.value(y)(0, i) == doctest::Approx(xv * 0.5 * std::erfc(-xv / std::sqrt(2.0))));
    }
  }

  TEST_CASE("graph gradcheck: add (same shape, a bias column, a node added to itself), scale") {
    Graph<double> g;
    const NodeId a = random_input(g, "a", 3, 4, 21);
    const NodeId b = random_input(g, "b", 3, 4, 22);
    const NodeId bias = random_param(g, "bias", 3, 1, 23);
    const NodeId s = add(g, a, b);
    const NodeId t = add(g, s, bias);
    const NodeId u = add(g, t, t);
    const NodeId v = scale(g, u, -0.7);
    require_ok(check_gradients(g, v, kTraining), "add/scale");
  }

  TEST_CASE(
      "graph gradcheck: dropout in training (a fixed mask per step), identity in evaluation") {
    Graph<double> g;
    const NodeId x = random_input(g, "x", 40, 50, 31);
    const NodeId y = dropout(g, x, 0.3, 99);
    require_ok(check_gradients(g, y, kTraining), "dropout");
    g.forward(kTraining);
    const Matrix<double>& out = g.value(y);
    const Matrix<double>& in = g.value(x);
    Index zeros = 0;
    for (Index i = 0; i < out.size(); ++i) {
      if (out.data()[i] == 0.0) {
        ++zeros;
      } else {
        CHECK(out.data()[i] == doctest::Approx(in.data()[i] / 0.7));
      }
    }
    // 2,000 Bernoulli(0.3) draws: mean 600, std 20.5; +-100 is ~5 sigma.
    CHECK(std::abs(static_cast<double>(zeros) - 600.0) < 100.0);
    g.forward(ForwardContext{false, 5});
    CHECK(g.value(y) == g.value(x));
    // Another step, another mask.
    g.forward(ForwardContext{true, 6});
    Index same = 0;
    Matrix<double> first = g.value(y);
    g.forward(kTraining);
    for (Index i = 0; i < first.size(); ++i)
      same += (first.data()[i] == 0.0) == (g.value(y).data()[i] == 0.0);
    CHECK(same < first.size());
  }

  TEST_CASE("graph gradcheck: concat and slice") {
    Graph<double> g;
    const NodeId a = random_input(g, "a", 2, 5, 41);
    const NodeId b = random_input(g, "b", 3, 5, 42);
    const NodeId c = random_param(g, "c", 1, 5, 43);
    const NodeId cat = concat(g, {a, b, c});
    CHECK(g.node(cat).rows == 6);
    const NodeId mid = slice(g, cat, 1, 4);
    const NodeId top = slice(g, cat, 0, 2);
    const NodeId both = concat(g, {mid, top, mid});
    require_ok(check_gradients(g, both, kTraining), "concat/slice");
    g.forward(kTraining);
    CHECK(g.value(mid).row(0) == g.value(a).row(1));
    CHECK(g.value(mid).row(1) == g.value(b).row(0));
  }

  TEST_CASE("graph gradcheck: layer norm") {
    Graph<double> g;
    const NodeId x = random_input(g, "x", 6, 7, 51, 1, 2.0);
    Matrix<double> gamma = random_matrix_d(6, 1, 52);
    gamma.array() += 1.0;
    const NodeId gm = g.parameter("gamma", gamma);
    const NodeId bt = random_param(g, "beta", 6, 1, 53);
    const NodeId y = layer_norm(g, x, gm, bt);
    require_ok(check_gradients(g, y, kTraining), "layer_norm");
    // With gamma = 1, beta = 0 every column has mean 0 and variance var / (var + eps).
    Graph<double> h;
    const NodeId hx = h.input("x", 6);
    h.set_input(hx, random_matrix_d(6, 7, 54, 3.0));
    const NodeId hy = layer_norm(h, hx, h.parameter("g", Matrix<double>::Ones(6, 1)),
                                 h.parameter("b", Matrix<double>::Zero(6, 1)));
    h.forward(kTraining);
    for (Index c = 0; c < 7; ++c) {
      CHECK(std::abs(h.value(hy).col(c).mean()) < 1e-12);
      CHECK(h.value(hy).col(c).squaredNorm() / 6.0 == doctest::Approx(1.0).epsilon(1e-4));
    }
  }

  TEST_CASE("graph gradcheck: attention, causal or not, 1 to 4 heads, with dropout") {
    struct Case {
      Index heads;
      bool causal;
      double dropout;
    };
    for (const Case& c : {Case{1, true, 0.0}, Case{2, true, 0.0}, Case{4, false, 0.0},
                          Case{2, true, 0.25}, Case{2, false, 0.25}}) {
      Graph<double> g;
      const Index d = 8;
      const Index len = 5;
      const NodeId qkv = random_input(g, "qkv", 3 * d, 3 * len, 61, len);
      const NodeId y = attention(g, qkv, c.heads, c.causal, c.dropout, 7);
      CHECK(g.node(y).rows == d);
      require_ok(check_gradients(g, y, kTraining), "attention heads " + std::to_string(c.heads) +
                                                       (c.causal ? " causal" : "") + " dropout " +
                                                       std::to_string(c.dropout));
    }
  }

  TEST_CASE("graph gradcheck: causal attention over several blocks of queries (70 positions)") {
    // Causal attention computes scores by blocks of 32 queries (keys up to the block's end):
    // 70 positions make blocks of 32, 32 and 6.
    for (double p : {0.0, 0.2}) {
      Graph<double> g;
      const NodeId qkv = random_input(g, "qkv", 3 * 4, 2 * 70, 62, 70);
      const NodeId y = attention(g, qkv, 2, true, p, 9);
      require_ok(check_gradients(g, y, kTraining),
                 "attention 70 positions dropout " + std::to_string(p));
    }
  }

  TEST_CASE("graph: causal attention of position t sees positions <= t only, per sequence") {
    Graph<double> g;
    const Index d = 4;
    const Index len = 6;
    const NodeId qkv = g.input("qkv", 3 * d);
    Matrix<double> v = random_matrix_d(3 * d, 2 * len, 71);
    g.set_input(qkv, v, len);
    const NodeId y = attention(g, qkv, 2, true);
    g.forward(kTraining);
    const Matrix<double> before = g.value(y);
    // Changing position 3 of sequence 0 changes outputs 3.. of sequence 0, nothing else.
    v.col(3).array() += 1.0;
    g.set_input(qkv, v, len);
    g.forward(kTraining);
    const Matrix<double>& after = g.value(y);
    for (Index c = 0; c < 2 * len; ++c) {
      const bool changed = (after.col(c) - before.col(c)).norm() > 1e-12;
      INFO("column " << c);
      CHECK(changed == (c >= 3 && c < len));
    }
    // The first position of a sequence attends to itself only: its output is its own value.
    CHECK((after.col(len) - v.block(2 * d, len, d, 1)).norm() < 1e-12);
  }

  TEST_CASE("graph gradcheck: embedding with repeated ids, positions (constant and learned)") {
    Graph<double> g;
    const NodeId ids = g.index_input("ids");
    const std::vector<std::int32_t> tokens{3, 1, 3, 0, 4, 4, 1, 3};
    g.set_ids(ids, tokens, 4);
    const NodeId table = random_param(g, "table", 5, 6, 81);
    const NodeId e = embedding(g, ids, table, std::sqrt(5.0));
    const NodeId fixed = g.constant("sin", sinusoidal_positions<double>(5, 7));
    const NodeId learned = random_param(g, "pos", 5, 9, 82);
    const NodeId p = add_positions(g, add_positions(g, e, fixed), learned);
    require_ok(check_gradients(g, p, kTraining), "embedding/positions");
    g.forward(kTraining);
    const Matrix<double>& out = g.value(p);
    const Matrix<double>& t = g.value(table);
    const Matrix<double>& s = g.value(fixed);
    const Matrix<double>& l = g.value(learned);
    // Column 5 is position 1 of sequence 1, token 4.
    CHECK((out.col(5) - (std::sqrt(5.0) * t.col(4) + s.col(1) + l.col(1))).norm() < 1e-12);
  }

  TEST_CASE("graph: sinusoidal positions are PyTorch's") {
    const Matrix<double> pe = sinusoidal_positions<double>(6, 4);
    CHECK(pe(0, 0) == 0.0);
    CHECK(pe(1, 0) == 1.0);
    CHECK(pe(0, 3) == doctest::Approx(std::sin(3.0)));
    CHECK(pe(2, 3) == doctest::Approx(std::sin(3.0 * std::pow(10000.0, -2.0 / 6.0))));
    CHECK(pe(5, 2) == doctest::Approx(std::cos(2.0 * std::pow(10000.0, -4.0 / 6.0))));
  }

  TEST_CASE("graph gradcheck: softmax cross-entropy with ignored targets") {
    Graph<double> g;
    const NodeId z = random_input(g, "z", 5, 6, 91, 1, 2.0);
    const NodeId t = g.index_input("t");
    const std::vector<std::int32_t> targets{0, 4, -1, 2, 2, -1};
    g.set_ids(t, targets);
    const NodeId loss = softmax_cross_entropy(g, z, t);
    require_ok(check_gradients(g, loss, kTraining), "softmax_cross_entropy");
    g.forward(kTraining);
    const Matrix<double>& zv = g.value(z);
    double want = 0.0;
    for (Index c = 0; c < 6; ++c) {
      const std::int32_t k = targets[static_cast<std::size_t>(c)];
      if (k < 0) continue;
      want -= zv(k, c) - std::log(zv.col(c).array().exp().sum());
    }
    CHECK(g.value(loss)(0, 0) == doctest::Approx(want / 4.0).epsilon(1e-12));
    const auto& op = dynamic_cast<const SoftmaxCrossEntropyOp<double>&>(*g.node(loss).op);
    CHECK(op.counted() == 4);
  }

  TEST_CASE("graph gradcheck: per-unit losses (BCE on logits, squared error), index or float targets") {
    for (PerUnitLoss kind : {PerUnitLoss::kBinaryCrossEntropy, PerUnitLoss::kSquaredError}) {
      INFO(per_unit_loss_name(kind));
      const bool bce = kind == PerUnitLoss::kBinaryCrossEntropy;
      auto build = [&](Graph<double>& g, NodeId z, NodeId t) {
        return bce ? binary_cross_entropy(g, z, t) : squared_error(g, z, t);
      };
      // Index targets: the one-hot of each class, a negative class leaves its column out.
      Graph<double> g;
      const NodeId z = random_input(g, "z", 4, 6, 93, 1, 3.0);
      const NodeId t = g.index_input("t");
      const std::vector<std::int32_t> classes{0, 3, -1, 2, 2, -1};
      g.set_ids(t, classes);
      const NodeId loss = build(g, z, t);
      require_ok(check_gradients(g, loss, kTraining), per_unit_loss_name(kind) + " (index)");
      g.forward(kTraining);
      const Matrix<double>& zv = g.value(z);
      double want = 0.0;
      for (Index c = 0; c < 6; ++c) {
        const std::int32_t k = classes[static_cast<std::size_t>(c)];
        if (k < 0) continue;
        for (Index i = 0; i < 4; ++i) {
          const double v = zv(i, c);
          const double target = i == k ? 1.0 : 0.0;
          want += bce ? std::log(1.0 + std::exp(v)) - target * v : 0.5 * (v - target) * (v - target);
        }
      }
      CHECK(g.value(loss)(0, 0) == doctest::Approx(want / 4.0).epsilon(1e-12));
      // Float targets (soft labels in [0, 1]): every column counted.
      Graph<double> f;
      const NodeId zf = random_input(f, "z", 3, 5, 94, 1, 3.0);
      const NodeId tf = f.input("t", 3);
      f.set_input(tf, (random_matrix_d(3, 5, 95).array().tanh() * 0.5 + 0.5).matrix());
      const NodeId lf = build(f, zf, tf);
      require_ok(check_gradients(f, lf, kTraining), per_unit_loss_name(kind) + " (float)");
      // Large logits stay finite.
      Graph<double> big;
      const NodeId zb = big.input("z", 2, true);
      big.set_input(zb, (Matrix<double>(2, 1) << 800.0, -800.0).finished());
      const NodeId tb = big.index_input("t");
      big.set_ids(tb, std::vector<std::int32_t>{1});
      const NodeId lb = build(big, zb, tb);
      big.forward(kTraining);
      CHECK(std::isfinite(big.value(lb)(0, 0)));
    }
  }

  TEST_CASE("graph gradcheck: sparse propagation x A (+ b), A not square, an input used twice") {
    // A 5 x 4 sparse matrix with an empty column and a repeated row, x (3 x 5).
    auto a = std::make_shared<SparseMatrix<double>>(5, 4);
    std::vector<Eigen::Triplet<double>> entries{{0, 0, 0.5}, {2, 0, -1.0}, {1, 1, 2.0},
                                                {4, 1, 0.25}, {2, 3, 1.5}, {3, 3, -0.75},
                                                {4, 3, 0.1}};
    a->setFromTriplets(entries.begin(), entries.end());
    a->makeCompressed();
    Graph<double> g;
    const NodeId x = random_input(g, "x", 3, 5, 121);
    const NodeId b = random_param(g, "b", 3, 1, 122);
    const NodeId y = propagate<double>(g, x, a, b);
    const NodeId y2 = propagate<double>(g, x, a);
    const NodeId out = add(g, y, y2);
    require_ok(check_gradients(g, out, kTraining), "propagate");
    g.forward(kTraining);
    Matrix<double> dense = Matrix<double>::Zero(5, 4);
    for (const Eigen::Triplet<double>& e : entries) dense(e.row(), e.col()) = e.value();
    const Matrix<double> want = (g.value(x) * dense).colwise() + g.value(b).col(0);
    CHECK((g.value(y) - want).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(g.value(y).col(2) == g.value(b).col(0));  // the empty column: the bias only
    // A graph of the wrong size is refused at run time, naming the node.
    Graph<double> bad;
    const NodeId xb = bad.input("x", 3);
    bad.set_input(xb, random_matrix_d(3, 4, 1));
    propagate<double>(bad, xb, a, kNoNode, "prop");
    CHECK_THROWS_WITH_AS(bad.forward(kTraining), doctest::Contains("'prop'"), opu::StatusError);
  }

  TEST_CASE("graph gradcheck: a small network of every op at once") {
    Graph<double> g;
    const Index d = 6;
    const Index len = 4;
    const NodeId ids = g.index_input("ids");
    g.set_ids(ids, std::vector<std::int32_t>{1, 2, 0, 3, 3, 2, 1, 0}, len);
    const NodeId tgt = g.index_input("targets");
    g.set_ids(tgt, std::vector<std::int32_t>{2, 0, 3, 3, 2, 1, 0, -1}, len);
    const NodeId emb = embedding(g, ids, random_param(g, "emb", d, 4, 101), 2.0);
    const NodeId x = add_positions(g, emb, g.constant("pos", sinusoidal_positions<double>(d, len)));
    const NodeId qkv = linear(g, x, random_param(g, "wqkv", 3 * d, d, 102, 0.5),
                              random_param(g, "bqkv", 3 * d, 1, 103));
    const NodeId att = attention(g, qkv, 2, true, 0.1, 3);
    const NodeId res = add(g, x, linear(g, att, random_param(g, "wo", d, d, 104, 0.5), kNoNode));
    const NodeId ln = layer_norm(g, res, g.parameter("g1", Matrix<double>::Ones(d, 1)),
                                 random_param(g, "b1", d, 1, 105));
    const NodeId hid = activation(
        g, Activation::kGelu,
        linear(g, ln, random_param(g, "w1", 8, d, 106), random_param(g, "bb1", 8, 1, 107)));
    const NodeId cat = concat(g, {dropout(g, hid, 0.2, 4), slice(g, ln, 0, 2)});
    const NodeId logits = linear(g, cat, random_param(g, "wout", 4, 10, 108), kNoNode);
    const NodeId loss = softmax_cross_entropy(g, logits, tgt);
    require_ok(check_gradients(g, loss, kTraining), "network");
  }

  TEST_CASE("graph gradcheck: rejects a backward that is wrong by 1%") {
    Graph<double> g;
    const NodeId x = random_input(g, "x", 3, 4, 111);
    const NodeId y = g.apply(std::make_unique<WrongScaleOp>(), {x});
    const test::GradCheckResult r = check_gradients(g, y, kTraining);
    CHECK_FALSE(r.ok);
    CHECK(r.worst > 100.0);
  }

  TEST_CASE("graph: float and double graphs compute the same values") {
    auto build = [](auto& g, auto matrix) {
      const Index d = 8;
      const NodeId ids = g.index_input("ids");
      g.set_ids(ids, std::vector<std::int32_t>{1, 2, 0, 3, 3, 2, 1, 0}, 4);
      const NodeId emb = embedding(g, ids, g.parameter("emb", matrix(d, 4, 1)), 1.0);
      const NodeId qkv = linear(g, emb, g.parameter("w", matrix(3 * d, d, 2)), kNoNode);
      const NodeId att = attention(g, qkv, 2, true);
      const NodeId ln =
          layer_norm(g, att, g.parameter("g", matrix(d, 1, 3)), g.parameter("b", matrix(d, 1, 4)));
      return activation(g, Activation::kGelu, ln);
    };
    Graph<double> gd;
    Graph<float> gf;
    const NodeId yd =
        build(gd, [](Index r, Index c, std::uint64_t s) { return random_matrix_d(r, c, s); });
    const NodeId yf = build(gf, [](Index r, Index c, std::uint64_t s) {
      return Matrix<float>(random_matrix_d(r, c, s).cast<float>());
    });
    gd.forward(kTraining);
    gf.forward(kTraining);
    CHECK((gd.value(yd) - gf.value(yf).cast<double>()).cwiseAbs().maxCoeff() < 1e-5);
  }

  TEST_CASE("graph: bad wiring is INVALID_ARGUMENT naming the node") {
    Graph<float> g;
    const NodeId x = g.input("x", 4);
    const NodeId w = g.parameter("w", Matrix<float>::Zero(3, 5));
    CHECK_THROWS_WITH_AS(linear(g, x, w, kNoNode, "proj"),
                         doctest::Contains("graph node 'proj': input 'x' has 4 rows"),
                         opu::StatusError);
    const NodeId ids = g.index_input("ids");
    CHECK_THROWS_AS(activation(g, Activation::kRelu, ids), opu::StatusError);
    CHECK_THROWS_AS(g.parameter("w", Matrix<float>::Zero(1, 1)), opu::StatusError);
    CHECK_THROWS_AS(attention(g, x, 3, true), opu::StatusError);
    g.feedback_point(x, "p");
    CHECK_THROWS_AS(g.feedback_point(x, "q"), opu::StatusError);
    CHECK_THROWS_AS(g.feedback_point(ids, "r"), opu::StatusError);
  }
}
