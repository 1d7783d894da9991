// The classification loop (tasks/classification.h) on the MLP and GCN graphs: checkpoints,
// bit-for-bit resume, divergence handling, the node classification task.
#include "trainer/tasks/classification.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "test_support.h"
#include "trainer/feedback.h"
#include "trainer/models/gcn.h"
#include "trainer/models/mlp.h"
#include "trainer_test_support.h"

TEST_SUITE("trainer") {
  using namespace opu::trainer;
  using namespace opu::trainer::tasks;
  using opu::Result;
  using opu::StatusCode;

  namespace {

  // Everything one MLP run needs, built identically each time.
  std::unique_ptr<models::ClassifierModel<float>> mlp(double dropout = 0.0) {
    models::MlpConfig c;
    c.inputs = 30;
    c.hidden = {24, 16};
    c.classes = 4;
    c.dropout = dropout;
    c.seed = 5;
    return models::build_mlp<float>(c);
  }

  ClassifierNodes nodes_of(models::ClassifierModel<float>& m) {
    return {&m.graph, m.input, m.labels, m.logits, m.loss};
  }

  struct MlpRun {
    ImageDataset data;
    std::unique_ptr<models::ClassifierModel<float>> model;
    DigitalFeedback feedback;
    graph::GraphLearner learner;
    Sgd optimizer;
    SampleClassification task;
    ClassifierTrainer trainer;

    MlpRun(Method method, std::int64_t epochs, const std::string& checkpoint, float lr = 0.05F,
           double dropout = 0.0)
        : data{test::make_blobs(600, 30, 4, 5), test::make_blobs(100, 30, 4, 5)},
          model(mlp(dropout)),
          feedback(4, 24, 5),
          learner(model->graph, model->loss, model->logits, method, &feedback),
          optimizer(lr, 0.9F, 1e-4F),
          task(data, 16, 5),
          trainer(ClassifierTrainerOptions{epochs, 5, 3, checkpoint, {{"test", "mlp"}},
                                           model->signature},
                  nodes_of(*model), task, learner, optimizer) {}
  };

  // A random graph of 3 communities, GCN with dropout and Adam: the other family, and the RNG paths
  // (dropout masks) that resume must reproduce.
  GraphDataset make_graph(std::uint64_t seed) {
    const CounterRng rng(seed, "test/graph");
    constexpr std::int64_t kNodes = 90;
    GraphDataset g;
    g.name = "synthetic";
    g.nodes = test::make_blobs(kNodes, 12, 3, seed, 0.6F);
    std::vector<std::pair<std::int64_t, std::int64_t>> edges;
    std::uint64_t k = 0;
    for (std::int64_t u = 0; u < kNodes; ++u) {
      for (std::int64_t v = u + 1; v < kNodes; ++v) {
        const bool same = g.nodes.labels[static_cast<std::size_t>(u)] ==
                          g.nodes.labels[static_cast<std::size_t>(v)];
        if (rng.uniform(k++) < (same ? 0.15F : 0.01F)) edges.emplace_back(u, v);
      }
    }
    g.n_edges = static_cast<std::int64_t>(edges.size());
    g.adjacency =
        std::make_shared<const Eigen::SparseMatrix<float>>(normalized_adjacency(kNodes, edges));
    g.split.resize(kNodes);
    for (std::int64_t i = 0; i < kNodes; ++i) {
      g.split[static_cast<std::size_t>(i)] = i < 15 ? 1 : (i < 45 ? 2 : 3);
    }
    return g;
  }

  std::unique_ptr<models::ClassifierModel<float>> gcn(const GraphDataset& data) {
    models::GcnConfig c;
    c.inputs = 12;
    c.hidden = {16};
    c.classes = 3;
    c.dropout = 0.5;
    c.input_dropout = 0.5;
    c.seed = 3;
    return models::build_gcn<float>(c, data.adjacency);
  }

  struct GcnRun {
    GraphDataset data;
    std::unique_ptr<models::ClassifierModel<float>> model;
    DigitalFeedback feedback;
    graph::GraphLearner learner;
    Adam optimizer;
    NodeClassification task;
    ClassifierTrainer trainer;

    GcnRun(Method method, std::int64_t epochs, const std::string& checkpoint)
        : data(make_graph(3)),
          model(gcn(data)),
          feedback(3, 16, 3),
          learner(model->graph, model->loss, model->logits, method, &feedback),
          optimizer(0.01F, 5e-4F),
          task(data),
          trainer(ClassifierTrainerOptions{epochs, 3, 1, checkpoint, {{"test", "gcn"}},
                                           model->signature},
                  nodes_of(*model), task, learner, optimizer) {}
  };

  template <typename Run>
  void check_same_parameters(Run& a, Run& b) {
    const std::vector<Param*> pa = a.model->graph.params();
    const std::vector<Param*> pb = b.model->graph.params();
    REQUIRE(pa.size() == pb.size());
    for (std::size_t i = 0; i < pa.size(); ++i) {
      INFO(pa[i]->name);
      CHECK(pa[i]->value == pb[i]->value);  // bit for bit
    }
  }

  }  // namespace

  TEST_CASE("ClassifierTrainer: --resume continues bit for bit (MLP, DFA, dropout, SGD momentum)") {
    test::TempDir dir("resume_mlp");
    MlpRun straight(Method::kDfa, 3, "", 0.05F, 0.2);
    REQUIRE(straight.trainer.run().ok());

    {
      MlpRun first(Method::kDfa, 1, dir.str(), 0.05F, 0.2);
      REQUIRE(first.trainer.run().ok());
      CHECK(std::filesystem::exists(dir / "checkpoint.bin"));
    }
    MlpRun resumed(Method::kDfa, 3, dir.str(), 0.05F, 0.2);
    REQUIRE(resumed.trainer.resume(dir.str()).ok());
    CHECK(resumed.trainer.epochs_done() == 1);
    REQUIRE(resumed.trainer.run().ok());
    check_same_parameters(straight, resumed);
    REQUIRE(resumed.trainer.history().size() == 3);
    CHECK(resumed.trainer.history().back().loss == straight.trainer.history().back().loss);
    CHECK(resumed.trainer.history().back().accuracy == straight.trainer.history().back().accuracy);
    CHECK(straight.trainer.history().back().accuracy.at("test") > 0.8);
  }

  TEST_CASE("ClassifierTrainer: --resume continues bit for bit (GCN, dropout, Adam)") {
    test::TempDir dir("resume_gcn");
    GcnRun straight(Method::kBp, 12, "");
    REQUIRE(straight.trainer.run().ok());
    {
      GcnRun first(Method::kBp, 5, dir.str());
      REQUIRE(first.trainer.run().ok());
    }
    GcnRun resumed(Method::kBp, 12, dir.str());
    REQUIRE(resumed.trainer.resume(dir.str()).ok());
    REQUIRE(resumed.trainer.run().ok());
    check_same_parameters(straight, resumed);
  }

  TEST_CASE("ClassifierTrainer: GCN learns a community graph under BP and DFA, shallow trails") {
    std::map<Method, double> accuracy;
    for (const Method m : {Method::kBp, Method::kDfa, Method::kShallow}) {
      GcnRun run(m, 100, "");
      REQUIRE(run.trainer.run().ok());
      accuracy[m] = run.trainer.history().back().accuracy.at("test");
      const EpochRecord& last = run.trainer.history().back();
      CHECK(last.accuracy.count("val") == 1);
      CHECK(last.accuracy.count("train") == 1);
    }
    INFO("bp " << accuracy[Method::kBp] << " dfa " << accuracy[Method::kDfa] << " shallow "
               << accuracy[Method::kShallow]);
    // 3 well-separated communities: chance is 1/3. Margins are loose on purpose (45 test nodes).
    CHECK(accuracy[Method::kBp] > 0.8);
    CHECK(accuracy[Method::kDfa] > 0.7);
  }

  TEST_CASE("ClassifierTrainer: a diverging run stops with a clear message, keeps the last checkpoint") {
    test::TempDir dir("nan");
    {
      MlpRun good(Method::kBp, 1, dir.str());
      REQUIRE(good.trainer.run().ok());
    }
    std::ifstream in(dir / "checkpoint.bin", std::ios::binary);
    const std::string before((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
    // Same setup, absurd learning rate: the loss overflows within a few steps.
    MlpRun bad(Method::kBp, 3, dir.str(), 1e30F);
    REQUIRE(bad.trainer.resume(dir.str()).ok());
    const opu::Status status = bad.trainer.run();
    CHECK(status.code() == StatusCode::kFailedPrecondition);
    INFO(status.message());
    CHECK(status.message().find("epoch 2") != std::string::npos);
    CHECK((status.message().find("not finite") != std::string::npos ||
           status.message().find("training loss is") != std::string::npos));
    CHECK(status.message().find("after epoch 1") != std::string::npos);
    std::ifstream again(dir / "checkpoint.bin", std::ios::binary);
    const std::string after((std::istreambuf_iterator<char>(again)),
                            std::istreambuf_iterator<char>());
    CHECK(before == after);
  }

  TEST_CASE("ClassifierTrainer: bad checkpoints are rejected naming the problem") {
    test::TempDir dir("bad_ckpt");
    {
      MlpRun run(Method::kDfa, 1, dir.str());
      REQUIRE(run.trainer.run().ok());
    }
    SUBCASE("missing") {
      MlpRun run(Method::kDfa, 2, "");
      CHECK(run.trainer.resume(dir / "nowhere").code() == StatusCode::kNotFound);
    }
    SUBCASE("corrupt byte") {
      std::fstream f(dir / "checkpoint.bin", std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(200);
      f.write("\x42", 1);
      f.close();
      MlpRun run(Method::kDfa, 2, "");
      const opu::Status s = run.trainer.resume(dir.str());
      CHECK(s.code() == StatusCode::kDataLoss);
      CHECK(s.message().find("checksum") != std::string::npos);
    }
    SUBCASE("another architecture") {
      MlpRun run(Method::kDfa, 2, "", 0.05F, 0.2);
      const opu::Status s = run.trainer.resume(dir.str());
      CHECK(s.code() == StatusCode::kFailedPrecondition);
      CHECK(s.message().find("-dropout") != std::string::npos);
    }
    SUBCASE("another method") {
      MlpRun run(Method::kDfa, 2, "");
      graph::GraphLearner other(run.model->graph, run.model->loss, run.model->logits, Method::kBp,
                                nullptr);
      ClassifierTrainerOptions options{2, 5, 3, "", {{"test", "other"}}, run.model->signature};
      ClassifierTrainer trainer(options, nodes_of(*run.model), run.task, other, run.optimizer);
      const opu::Status s = trainer.resume(dir.str());
      CHECK(s.code() == StatusCode::kFailedPrecondition);
      CHECK(s.message().find("other") != std::string::npos);
    }
  }
}
