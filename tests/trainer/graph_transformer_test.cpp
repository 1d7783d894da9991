// The Transformer language model: its whole gradient against finite differences in double, its
// feedback points and segments, the text task, and short training runs that must learn.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>

#include "graph_gradcheck.h"
#include "opu_sim/device.h"
#include "trainer/feedback.h"
#include "trainer/graph/learner.h"
#include "trainer/models/transformer.h"
#include "trainer/optimizer.h"
#include "trainer/tasks/language_model.h"
#include "trainer/tasks/schedule.h"
#include "trainer/tasks/text.h"

#ifndef OPU_GRAPH_TEST_TEXT
#error "tests/trainer/CMakeLists.txt defines OPU_GRAPH_TEST_TEXT (data/tinyshakespeare/input.txt)"
#endif

TEST_SUITE("trainer_graph") {
  using namespace opu::trainer;
  using namespace opu::trainer::models;
  using graph::Matrix;
  using graph::NodeId;
  namespace test = opu::trainer::test;

  namespace {

  TransformerConfig tiny(Index vocab = 7) {
    TransformerConfig c;
    c.vocab = vocab;
    c.layers = 2;
    c.d_model = 8;
    c.heads = 2;
    c.d_ff = 12;
    c.context = 6;
    c.dropout = 0.1;
    c.seed = 5;
    return c;
  }

  template <typename T>
  void set_batch(TransformerModel<T>& m, Index len, Index sequences, std::uint64_t seed) {
    const CounterRng rng(seed, "test/tokens");
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(len * sequences));
    std::vector<std::int32_t> targets(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] =
          static_cast<std::int32_t>(rng.below(2 * i, static_cast<std::uint64_t>(m.config.vocab)));
      targets[i] = static_cast<std::int32_t>(
          rng.below(2 * i + 1, static_cast<std::uint64_t>(m.config.vocab)));
    }
    m.graph.set_ids(m.tokens, tokens, len);
    m.graph.set_ids(m.targets, targets, len);
  }

  /// A device whose optics are an exact matrix (as learner_test.cpp's).
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
    std::int64_t last_batch = 0;

   protected:
    opu::Result<opu::sim::Frames> do_transform(const opu::sim::TransformRequest&) override {
      return opu::unimplemented("matrix-device: no frames");
    }
    opu::Result<opu::sim::Projections> do_linear_transform(
        const opu::sim::LinearRequest& request) override {
      last_batch = request.batch;
      const Eigen::Map<const Eigen::MatrixXf> v(request.values.data(), request.n_in, request.batch);
      opu::sim::Projections p;
      p.values = b_.topRows(request.n_out) * v;
      p.info.frames = 2 * request.batch;
      return p;
    }

   private:
    Eigen::MatrixXf b_;
  };

  }  // namespace

  TEST_CASE("Transformer gradcheck: every parameter of a small post-LN model (dropout on)") {
    auto m = build_transformer<double>(tiny());
    set_batch(*m, 6, 2, 1);
    const test::GradCheckResult r =
        test::check_gradients(m->graph, m->loss, ForwardContext{true, 3});
    INFO(r.checked << " entries, worst ratio " << r.worst << "\n" << r.report);
    CHECK(r.checked == m->graph.num_parameters());
    CHECK(r.ok);
  }

  TEST_CASE("Transformer gradcheck: pre-LN, learned positions, GELU, shorter sequences") {
    TransformerConfig c = tiny();
    c.pre_ln = true;
    c.positions = Positions::kLearned;
    c.activation = graph::Activation::kGelu;
    auto m = build_transformer<double>(c);
    set_batch(*m, 4, 3, 2);  // 4 of the 6 positions
    const test::GradCheckResult r =
        test::check_gradients(m->graph, m->loss, ForwardContext{true, 8});
    INFO(r.checked << " entries, worst ratio " << r.worst << "\n" << r.report);
    CHECK(r.ok);
  }

  TEST_CASE("Transformer: feedback points, segments and what each method trains") {
    for (bool pre_ln : {false, true}) {
      INFO("pre_ln " << pre_ln);
      TransformerConfig c = tiny();
      c.pre_ln = pre_ln;
      c.points = DfaPoints::kMicro;
      auto micro = build_transformer<float>(c);
      const auto& points = micro->graph.feedback_points();
      REQUIRE(points.size() == 6);
      CHECK(points[0].name == "block0.attn");
      CHECK(points[1].name == "block0.ffn");
      CHECK(points[2].name == "block0");
      CHECK(micro->graph.node(points[1].node).rows == c.d_ff);
      c.points = DfaPoints::kMacro;
      auto macro = build_transformer<float>(c);
      REQUIRE(macro->graph.feedback_points().size() == 2);
      // Post-LN: the final hidden state is the last block's output, a point (as the paper's).
      CHECK((macro->graph.feedback_points()[1].node == macro->hidden) == !pre_ln);
      graph::GraphLearner shallow(macro->graph, macro->loss, macro->error(), Method::kShallow,
                                  nullptr);
      std::vector<std::string> names;
      for (const Param* p : shallow.trainable()) names.push_back(p->name);
      const std::vector<std::string> want =
          pre_ln ? std::vector<std::string>{"ln_f.weight", "ln_f.bias", "decoder.weight",
                                            "decoder.bias"}
                 : std::vector<std::string>{"decoder.weight", "decoder.bias"};
      CHECK(names == want);
    }
  }

  TEST_CASE(
      "Transformer: under DFA the decoder gets BP's gradient, the blocks a per-token signal") {
    const TransformerConfig c = tiny();
    auto bp = build_transformer<float>(c);
    auto dfa = build_transformer<float>(c);
    set_batch(*bp, 6, 3, 4);
    set_batch(*dfa, 6, 3, 4);
    graph::GraphLearner bp_learner(bp->graph, bp->loss, bp->error(), Method::kBp, nullptr);
    DigitalFeedback fb(c.d_model, c.d_model, 9);
    graph::GraphLearner dfa_learner(dfa->graph, dfa->loss, dfa->error(), Method::kDfa, &fb);
    REQUIRE(bp_learner.compute_gradients({true, 2}, true).ok());
    REQUIRE(dfa_learner.compute_gradients({true, 2}, true).ok());
    for (std::size_t i = 0; i < bp_learner.trainable().size(); ++i) {
      const Param* a = bp_learner.trainable()[i];
      const Param* b = dfa_learner.trainable()[i];
      REQUIRE(a->name == b->name);
      if (a->name.starts_with("decoder")) {
        CHECK((a->grad - b->grad).cwiseAbs().maxCoeff() <= 1e-6F);
      } else {
        CHECK((a->grad - b->grad).cwiseAbs().maxCoeff() > 0.0F);
      }
    }
    // e = dL/d(final hidden), one column per token; the last block's signal is B e, scaled.
    CHECK(dfa_learner.error().rows() == c.d_model);
    CHECK(dfa_learner.error().cols() == 18);
    const Matrix<float> want =
        static_cast<float>(dfa_learner.feedback_scale()) * fb.matrix() * dfa_learner.error();
    CHECK((dfa_learner.teaching_signal(1) - want).cwiseAbs().maxCoeff() < 1e-6F);
    CHECK(bp_learner.alignment()[0].mean == doctest::Approx(1.0));
    CHECK(dfa_learner.alignment()[1].samples == 18);
  }

  TEST_CASE(
      "Transformer: DFA through a device equals DFA with the same digital matrix, per token") {
    TransformerConfig c = tiny();
    c.points = DfaPoints::kMicro;
    c.error_at_logits = true;  // the vocabulary error: 7 rows -> d_max = d_ff = 12
    auto a = build_transformer<float>(c);
    auto b = build_transformer<float>(c);
    DigitalFeedback digital(c.vocab, c.d_ff, 5, FeedbackDistribution::kGaussian);
    MatrixDevice device(digital.matrix());
    DeviceFeedback via_device(device, c.vocab, c.d_ff, opu::sim::LinearOptions{});
    graph::GraphLearner la(a->graph, a->loss, a->error(), Method::kDfa, &digital);
    graph::GraphLearner lb(b->graph, b->loss, b->error(), Method::kDfa, &via_device);
    Adam oa(1e-3F, 0.0F), ob(1e-3F, 0.0F);
    for (int step = 0; step < 3; ++step) {
      set_batch(*a, 6, 2, 10 + static_cast<std::uint64_t>(step));
      set_batch(*b, 6, 2, 10 + static_cast<std::uint64_t>(step));
      // A target of -1 leaves a position out: its error column is zero and is not sent.
      a->graph.node(a->targets).ids[3] = -1;
      b->graph.node(b->targets).ids[3] = -1;
      REQUIRE(la.compute_gradients({true, 1}, false).ok());
      REQUIRE(lb.compute_gradients({true, 1}, false).ok());
      CHECK(device.last_batch == 11);
      oa.step(la.trainable());
      ob.step(lb.trainable());
    }
    for (std::size_t i = 0; i < la.trainable().size(); ++i) {
      CHECK(la.trainable()[i]->value.isApprox(lb.trainable()[i]->value, 1e-5F));
    }
    CHECK(via_device.cost().frames == 3 * 22);
  }

  TEST_CASE("Transformer: bad sizes are INVALID_ARGUMENT naming the field") {
    TransformerConfig c = tiny();
    c.heads = 3;
    CHECK(c.validate().message().find("not a multiple of the 3 heads") != std::string::npos);
    CHECK_THROWS_AS(build_transformer<float>(c), opu::StatusError);
    c = tiny();
    c.layers = 0;
    CHECK(c.validate().message().find("layers is 0") != std::string::npos);
    CHECK(parse_dfa_points("mezzo").status().code() == opu::StatusCode::kInvalidArgument);
  }

  TEST_CASE("Transformer: generation is reproducible and stays in the vocabulary") {
    auto m = build_transformer<float>(tiny());
    const std::vector<std::int32_t> a = generate(*m, {1, 2}, 20, 1.0, 3);
    const std::vector<std::int32_t> b = generate(*m, {1, 2}, 20, 1.0, 3);
    CHECK(a == b);
    REQUIRE(a.size() == 20);
    for (std::int32_t t : a) CHECK((t >= 0 && t < 7));
    // Temperature 0 picks the most likely token: the same whatever the seed.
    CHECK(generate(*m, {4}, 10, 0.0, 1) == generate(*m, {4}, 10, 0.0, 2));
  }

  // --- the text task ----------------------------------------------------------------------

  TEST_CASE("Text: vocabulary, 90/10 split, unigram baseline, UTF-8 or bytes") {
    const std::string text = "abcabcabcd\xc3\xa9\xc3\xa9";  // 12 characters, é twice
    opu::Result<tasks::TextCorpus> c = tasks::make_corpus(text, "mem");
    REQUIRE(c.ok());
    CHECK(c->vocabulary.utf8());
    CHECK(c->vocabulary.size() == 5);
    CHECK(c->train.size() == 10);  // floor(0.9 * 12)
    CHECK(c->validation.size() == 2);
    CHECK(c->vocabulary.decode(c->validation) == "\xc3\xa9\xc3\xa9");
    // é never occurs in training: add-one smoothing gives it 1 / (10 + 5).
    CHECK(c->unigram_nats == doctest::Approx(std::log(15.0)));
    // Not UTF-8: bytes.
    opu::Result<tasks::TextCorpus> b = tasks::make_corpus(
        "ab\xff"
        "ab\xff"
        "ab\xff"
        "ab",
        "bytes");
    REQUIRE(b.ok());
    CHECK_FALSE(b->vocabulary.utf8());
    CHECK(b->vocabulary.size() == 3);
    CHECK(b->vocabulary.decode(b->train).substr(0, 3) == "ab\xff");
    CHECK(tasks::make_corpus("aaaaaaaaaaaa", "one").status().message().find("want at least 2") !=
          std::string::npos);
    CHECK(tasks::make_corpus("ab", "short").status().code() == opu::StatusCode::kInvalidArgument);
    CHECK(tasks::load_text("/nonexistent/x.txt").status().code() == opu::StatusCode::kNotFound);
  }

  TEST_CASE("Text: windows are next-character pairs at reproducible offsets") {
    std::vector<std::int32_t> split(100);
    for (std::size_t i = 0; i < split.size(); ++i) split[i] = static_cast<std::int32_t>(i);
    std::vector<std::int32_t> tokens, targets, again, again_targets;
    tasks::sample_windows(split, 8, 5, 1, 7, tokens, targets);
    tasks::sample_windows(split, 8, 5, 1, 7, again, again_targets);
    CHECK(tokens == again);
    REQUIRE(tokens.size() == 40);
    for (std::size_t b = 0; b < 5; ++b) {
      for (std::size_t t = 0; t < 8; ++t) {
        CHECK(targets[b * 8 + t] == tokens[b * 8 + t] + 1);
        if (t > 0) CHECK(tokens[b * 8 + t] == tokens[b * 8 + t - 1] + 1);
      }
      CHECK(targets[b * 8 + 7] <= 99);
    }
    tasks::sample_windows(split, 8, 5, 1, 8, again, again_targets);
    CHECK(tokens != again);
  }

  TEST_CASE("Text: evaluation covers every character once, in windows of the context") {
    auto m = build_transformer<float>(tiny());
    std::vector<std::int32_t> split(40);
    for (std::size_t i = 0; i < split.size(); ++i) split[i] = static_cast<std::int32_t>(i % 7);
    const tasks::LanguageModelNodes nodes{&m->graph, m->tokens, m->targets, m->loss, 6};
    const tasks::TextEvaluation all = tasks::evaluate_text(nodes, split, 4);
    CHECK(all.chars == 39);
    CHECK(all.perplexity == doctest::Approx(std::exp(all.nats_per_char)));
    // The same windows one at a time give the same total.
    const tasks::TextEvaluation one = tasks::evaluate_text(nodes, split, 1);
    CHECK(one.nats_per_char == doctest::Approx(all.nats_per_char).epsilon(1e-5));
    CHECK(tasks::evaluate_text(nodes, split, 4, 10).chars == 10);
  }

  TEST_CASE("Schedules: Noam peaks at the warm-up, constant ramps, plateau divides") {
    tasks::LearningRate noam(tasks::Schedule::kNoam, 1e-3, 100);
    CHECK(noam.at(1) == doctest::Approx(1e-5));
    CHECK(noam.at(100) == doctest::Approx(1e-3));
    CHECK(noam.at(400) == doctest::Approx(5e-4));
    tasks::LearningRate flat(tasks::Schedule::kConstant, 1e-3, 0);
    CHECK(flat.at(1) == 1e-3);
    tasks::LearningRate plateau(tasks::Schedule::kPlateau, 1e-3, 10, 0.2, 1);
    CHECK(plateau.at(5) == doctest::Approx(5e-4));
    for (double v : {2.0, 1.9, 1.95, 1.91}) plateau.observe(v);  // two evaluations without gain
    CHECK(plateau.at(50) == doctest::Approx(2e-4));
    CHECK_THROWS_AS(tasks::LearningRate(tasks::Schedule::kNoam, 1e-3, 0), opu::StatusError);
    std::vector<Param> ps(2);
    ps[0].grad = Eigen::MatrixXf::Constant(2, 2, 3.0F);  // norm 6
    ps[1].grad = Eigen::MatrixXf::Constant(1, 1, 8.0F);  // total norm 10
    std::vector<Param*> pp{&ps[0], &ps[1]};
    CHECK(tasks::clip_grad_norm(pp, 5.0) == doctest::Approx(10.0));
    CHECK(ps[1].grad(0, 0) == doctest::Approx(4.0).epsilon(1e-5));
    CHECK(tasks::clip_grad_norm(pp, 50.0) == doctest::Approx(5.0).epsilon(1e-5));
  }

  // --- learning -------------------------------------------------------------------------------

  namespace {
  /// 300 steps of a small model (2 layers, width 64, 2 heads, FFN 128, context 64, batch 16) on
  /// tiny Shakespeare; validation on its first 20,000 characters. Returns the last val loss.
  double short_run(Method method, std::uint64_t seed, double* unigram) {
    opu::Result<tasks::TextCorpus> corpus = tasks::load_text(OPU_GRAPH_TEST_TEXT);
    REQUIRE(corpus.ok());
    *unigram = corpus->unigram_nats;
    TransformerConfig c;
    c.vocab = corpus->vocabulary.size();
    c.layers = 2;
    c.d_model = 64;
    c.heads = 2;
    c.d_ff = 128;
    c.context = 64;
    c.dropout = 0.0;
    c.seed = seed;
    auto m = build_transformer<float>(c);
    DigitalFeedback fb(c.d_model, c.d_model, seed);
    graph::GraphLearner learner(m->graph, m->loss, m->error(), method,
                                method == Method::kDfa ? &fb : nullptr);
    const bool bp = method == Method::kBp;
    Adam adam(1e-3F, 0.0F, 0.9F, bp ? 0.98F : 0.999F, 1e-9F);
    tasks::LearningRate rate(bp ? tasks::Schedule::kNoam : tasks::Schedule::kConstant,
                             bp ? 1e-3 : 5e-4, bp ? 100 : 0);
    tasks::LanguageModelOptions o;
    o.steps = 300;
    o.batch = 16;
    o.eval_every = 0;
    o.eval_chars = 20000;
    o.align_every = 150;
    o.seed = seed;
    tasks::LanguageModelTrainer trainer(o, {&m->graph, m->tokens, m->targets, m->loss, c.context},
                                        *corpus, learner, adam, rate);
    REQUIRE(trainer.run().ok());
    REQUIRE(trainer.history().size() == 1);
    const tasks::LanguageModelRecord& r = trainer.history().back();
    MESSAGE(method_name(method) << ": val " << r.val_loss << " nats/char after 300 steps, "
                                << r.step_s << " s/step");
    if (method == Method::kDfa) {
      // Alignment measured at steps 1 and 150 and 300, averaged: positive once DFA aligns.
      for (const Alignment& a : r.alignment) CHECK(a.mean > 0.1);
    }
    return r.val_loss;
  }
  }  // namespace

  // Measured at these seeds: BP 2.40 and DFA 2.61 nats/char (unigram 3.35; 300 steps, ~4 s of
  // one core each). The bounds leave ~0.3 nats for other BLAS builds and instruction sets, and
  // still say what matters: BP far below the unigram, DFA clearly below it.
  TEST_CASE("Transformer learns tiny Shakespeare with BP in 300 steps (well below unigram)") {
    double unigram = 0.0;
    const double val = short_run(Method::kBp, 1, &unigram);
    CHECK(unigram == doctest::Approx(3.35).epsilon(0.01));
    CHECK(val < 2.7);
  }

  TEST_CASE("Transformer learns tiny Shakespeare with macro DFA in 300 steps (below unigram)") {
    double unigram = 0.0;
    const double val = short_run(Method::kDfa, 1, &unigram);
    CHECK(val < 3.0);
  }
}
