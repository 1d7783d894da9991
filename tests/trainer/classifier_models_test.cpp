// The classifiers as graphs (models/mlp.h, models/gcn.h): the whole models' gradients against
// finite differences in double precision with every loss and with dropout, the GCN's forward
// against its formula, signatures, feedback points, parameter names, initialisation and bad
// configurations.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "graph_gradcheck.h"
#include "opu_sim/status.h"
#include "trainer/datasets.h"
#include "trainer/models/gcn.h"
#include "trainer/models/mlp.h"

TEST_SUITE("trainer_graph") {
  using namespace opu::trainer;
  using namespace opu::trainer::models;
  using graph::Matrix;
  using test::check_gradients;
  using test::random_matrix_d;

  namespace {

  const ForwardContext kTraining{true, 3};

  // A ring of 7 nodes with two chords, normalised (self-loops included).
  std::shared_ptr<const graph::SparseMatrix<double>> small_graph() {
    const Eigen::SparseMatrix<float> a =
        normalized_adjacency(7, {{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}, {6, 0}, {0, 3}, {2, 5}});
    auto d = std::make_shared<graph::SparseMatrix<double>>(a.cast<double>());
    d->makeCompressed();
    return d;
  }

  void require_ok(const test::GradCheckResult& r, const std::string& what) {
    INFO(what << ": " << r.checked << " entries, worst ratio " << r.worst << "\n" << r.report);
    CHECK(r.checked > 0);
    CHECK(r.ok);
  }

  }  // namespace

  TEST_CASE("MLP graph: whole-model gradients against finite differences, every loss, dropout") {
    for (ClassifierLoss loss : {ClassifierLoss::kCrossEntropy, ClassifierLoss::kBce,
                                ClassifierLoss::kMse}) {
      for (graph::Activation act : {graph::Activation::kTanh, graph::Activation::kSigmoid,
                                    graph::Activation::kRelu}) {
        INFO(classifier_loss_name(loss) << " " << graph::activation_name(act));
        MlpConfig c;
        c.inputs = 6;
        c.hidden = {5, 4};
        c.classes = 3;
        c.activation = act;
        c.dropout = 0.25;
        c.loss = loss;
        c.seed = 4;
        auto m = build_mlp<double>(c);
        m->graph.set_input(m->input, random_matrix_d(6, 8, 11, 2.0));
        m->graph.set_ids(m->labels, std::vector<std::int32_t>{0, 2, 1, -1, 1, 0, 2, 2});
        require_ok(check_gradients(m->graph, m->loss, kTraining), "mlp");
      }
    }
  }

  TEST_CASE("GCN graph: whole-model gradients against finite differences, two hidden layers") {
    for (ClassifierLoss loss : {ClassifierLoss::kCrossEntropy, ClassifierLoss::kMse}) {
      GcnConfig c;
      c.inputs = 5;
      c.hidden = {6, 4};
      c.classes = 3;
      c.dropout = 0.3;
      c.input_dropout = 0.2;
      c.loss = loss;
      c.seed = 2;
      auto m = build_gcn<double>(c, small_graph());
      m->graph.set_input(m->input, random_matrix_d(5, 7, 21));
      // Nodes 4 and 6 outside the training split.
      m->graph.set_ids(m->labels, std::vector<std::int32_t>{0, 1, 2, 1, -1, 0, -1});
      require_ok(check_gradients(m->graph, m->loss, kTraining), classifier_loss_name(loss));
    }
  }

  TEST_CASE("GCN graph: in evaluation the logits are Kipf & Welling's formula") {
    // In evaluation (no dropout): Z = W2 relu(W1 X Â + b1) Â + b2, one column per node.
    GcnConfig c;
    c.inputs = 5;
    c.hidden = {4};
    c.classes = 3;
    c.seed = 9;
    const auto a = small_graph();
    auto m = build_gcn<double>(c, a);
    const Matrix<double> x = random_matrix_d(5, 7, 31);
    m->graph.set_input(m->input, x);
    m->graph.forward(ForwardContext{false, 0}, m->logits);
    Matrix<double> dense = Matrix<double>::Zero(7, 7);
    for (int k = 0; k < a->outerSize(); ++k) {
      for (graph::SparseMatrix<double>::InnerIterator it(*a, k); it; ++it) {
        dense(it.row(), it.col()) = it.value();
      }
    }
    auto param = [&](const std::string& name) -> const Matrix<double>& {
      return m->graph.node(m->graph.find(name)).value();
    };
    const Matrix<double> h =
        ((param("gcn0.weight") * x * dense).colwise() + param("gcn0.bias").col(0)).cwiseMax(0.0);
    const Matrix<double> z = (param("gcn1.weight") * h * dense).colwise() + param("gcn1.bias").col(0);
    CHECK((m->graph.value(m->logits) - z).cwiseAbs().maxCoeff() < 1e-12);
  }

  TEST_CASE("MLP and GCN graphs: signatures, points, parameters, initialisation, bad configs") {
    MlpConfig c;
    auto mlp = build_mlp<float>(c);
    CHECK(mlp->signature == "784-linear256-relu-[h1]-linear256-relu-[h2]-linear10");
    REQUIRE(mlp->graph.feedback_points().size() == 2);
    CHECK(mlp->graph.feedback_points()[0].name == "h1");
    CHECK(mlp->graph.node(mlp->graph.feedback_points()[1].node).rows == 256);
    CHECK(mlp->graph.num_parameters() == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
    const std::vector<Param*> p = mlp->graph.params();
    REQUIRE(p.size() == 6);
    CHECK(p[0]->name == "layer0.weight");
    CHECK(p[1]->name == "layer0.bias");
    CHECK(p[5]->name == "layer2.bias");
    CHECK(p[0]->decay);
    CHECK_FALSE(p[1]->decay);
    // nn.Linear's default: U(±1/sqrt(fan_in)) for weight and bias, a pure function of the seed.
    CHECK(p[0]->value.cwiseAbs().maxCoeff() <= 1.0F / std::sqrt(784.0F));
    CHECK(p[0]->value.cwiseAbs().maxCoeff() > 0.9F / std::sqrt(784.0F));
    CHECK(p[1]->value.cwiseAbs().maxCoeff() > 0.0F);
    CHECK(p[0]->value == build_mlp<float>(c)->graph.params()[0]->value);
    c.seed = 2;
    CHECK(p[0]->value != build_mlp<float>(c)->graph.params()[0]->value);
    c.dropout = 0.2;
    c.activation = graph::Activation::kTanh;
    CHECK(build_mlp<float>(c)->signature ==
          "784-linear256-tanh-[h1]-dropout-linear256-tanh-[h2]-dropout-linear10");

    GcnConfig gc;
    gc.inputs = 12;
    gc.classes = 3;
    auto a = std::make_shared<const graph::SparseMatrix<float>>(
        normalized_adjacency(4, {{0, 1}, {2, 3}}));
    auto gcn = build_gcn<float>(gc, a);
    CHECK(gcn->signature == "12-dropout-graph_conv16-relu-[h1]-dropout-graph_conv3");
    const std::vector<Param*> q = gcn->graph.params();
    REQUIRE(q.size() == 4);
    CHECK(q[0]->name == "gcn0.weight");
    // Kipf & Welling: Glorot weights, zero biases, weight decay on the first layer only.
    CHECK(q[0]->value.cwiseAbs().maxCoeff() <= std::sqrt(6.0F / 28.0F));
    CHECK(q[1]->value.isZero());
    CHECK(q[0]->decay);
    CHECK(q[1]->decay);
    CHECK_FALSE(q[2]->decay);
    CHECK_FALSE(q[3]->decay);
    gc.input_dropout = 0.0;
    CHECK(build_gcn<float>(gc, a)->signature == "12-graph_conv16-relu-[h1]-dropout-graph_conv3");

    MlpConfig bad;
    bad.hidden = {256, 0};
    CHECK_THROWS_WITH_AS(build_mlp<float>(bad), doctest::Contains("hidden size 0"),
                         opu::StatusError);
    bad.hidden = {8};
    bad.dropout = 1.0;
    CHECK_THROWS_AS(build_mlp<float>(bad), opu::StatusError);
    gc.dropout = -0.1;
    CHECK_THROWS_AS(build_gcn<float>(gc, a), opu::StatusError);
    CHECK_THROWS_AS(build_gcn<float>(GcnConfig{}, nullptr), opu::StatusError);
    CHECK(parse_classifier_loss("ce").ok());
    CHECK(parse_classifier_loss("hinge").status().code() == opu::StatusCode::kInvalidArgument);
    // A graph of another size than the features: an error naming the node at run time.
    gc.dropout = 0.5;
    auto wrong = build_gcn<float>(gc, a);
    wrong->graph.set_input(wrong->input, Matrix<float>::Zero(12, 5));
    CHECK_THROWS_WITH_AS(wrong->graph.forward(ForwardContext{}, wrong->logits),
                         doctest::Contains("columns (nodes), want 4"), opu::StatusError);
  }
}
