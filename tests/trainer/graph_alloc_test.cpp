// A warm training step of the graph engine allocates nothing: forward, reverse mode (BP, DFA
// with its projection, shallow), alignment and gradient clipping reuse the buffers of the first
// step, for the Transformer, the MLP (with its task's batches) and the GCN (full batch).
//
// malloc, calloc, realloc and the aligned variants are interposed for this executable (glibc's
// __libc_* entry points do the work) and counted while `counting` is set; Eigen's aligned buffers
// and operator new both end in malloc. The executable is not built under sanitizers, which
// interpose malloc themselves.
#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "trainer/feedback.h"
#include "trainer/graph/learner.h"
#include "trainer/models/gcn.h"
#include "trainer/models/mlp.h"
#include "trainer/models/transformer.h"
#include "trainer/tasks/classification.h"
#include "trainer/tasks/schedule.h"
#include "trainer/tasks/text.h"

namespace {
std::atomic<bool> counting{false};
std::atomic<std::int64_t> allocations{0};
}  // namespace

extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t n, std::size_t size);
void* __libc_realloc(void* p, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);

void* malloc(std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  return __libc_malloc(size);
}
void* calloc(std::size_t n, std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  return __libc_realloc(p, size);
}
void* memalign(std::size_t alignment, std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  return __libc_memalign(alignment, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  *out = __libc_memalign(alignment, size);
  return *out == nullptr ? 12 /* ENOMEM */ : 0;
}
}

TEST_SUITE("trainer_graph") {
  using namespace opu::trainer;

  TEST_CASE("graph: a warm step (forward, reverse mode, clipping) allocates nothing") {
    // The counter sees allocations at all.
    counting = true;
    void* volatile probe = std::malloc(64);
    counting = false;
    std::free(probe);
    REQUIRE(allocations.load() == 1);

    for (Method method : {Method::kBp, Method::kDfa, Method::kShallow}) {
      INFO("method " << method_name(method));
      models::TransformerConfig c;
      c.vocab = 11;
      c.layers = 2;
      c.d_model = 16;
      c.heads = 2;
      c.d_ff = 32;
      c.context = 12;
      c.dropout = 0.1;
      c.points = models::DfaPoints::kMicro;
      auto m = models::build_transformer<float>(c);
      DigitalFeedback fb(c.d_model, c.d_ff, 3);
      graph::GraphLearner learner(m->graph, m->loss, m->error(), method,
                                  method == Method::kDfa ? &fb : nullptr);
      std::vector<std::int32_t> text(500);
      for (std::size_t i = 0; i < text.size(); ++i)
        text[i] = static_cast<std::int32_t>((i * 7) % 11);
      auto step = [&](std::uint64_t s) {
        std::vector<std::int32_t>& tokens = m->graph.ids_buffer(m->tokens, 12 * 4, 12);
        std::vector<std::int32_t>& targets = m->graph.ids_buffer(m->targets, 12 * 4, 12);
        tasks::sample_windows(text, 12, 4, 1, s, tokens, targets);
        REQUIRE(learner.compute_gradients(ForwardContext{true, s}, false).ok());
        tasks::clip_grad_norm(learner.trainable(), 0.5);
      };
      // The first step allocates its buffers (and shows that the counter sees Eigen's).
      allocations = 0;
      counting = true;
      step(1);
      counting = false;
      CHECK(allocations.load() > 10);
      allocations = 0;
      counting = true;
      step(2);
      step(3);
      counting = false;
      CHECK(allocations.load() == 0);
    }
  }

  TEST_CASE("graph: a warm step of the MLP and the GCN (batch, forward, reverse mode, alignment) "
            "allocates nothing") {
    LabelledData train;
    train.n_classes = 3;
    train.features = Eigen::MatrixXf::Random(10, 96);
    for (int i = 0; i < 96; ++i) train.labels.push_back(i % 3);
    const ImageDataset images{train, train};
    GraphDataset nodes;
    nodes.nodes = train;
    std::vector<std::pair<std::int64_t, std::int64_t>> edges;
    for (std::int64_t i = 0; i + 1 < 96; ++i) edges.emplace_back(i, i + 1);
    nodes.adjacency = std::make_shared<const Eigen::SparseMatrix<float>>(
        normalized_adjacency(96, edges));
    nodes.split.assign(96, 3);
    for (std::size_t i = 0; i < 20; ++i) nodes.split[i] = 1;

    for (const bool is_gcn : {false, true}) {
      for (Method method : {Method::kBp, Method::kDfa, Method::kShallow}) {
        INFO((is_gcn ? "gcn " : "mlp ") << method_name(method));
        std::unique_ptr<models::ClassifierModel<float>> m;
        std::unique_ptr<tasks::ClassificationTask> task;
        if (is_gcn) {
          models::GcnConfig c;
          c.inputs = 10;
          c.hidden = {8, 6};
          c.classes = 3;
          m = models::build_gcn<float>(c, nodes.adjacency);
          task = std::make_unique<tasks::NodeClassification>(nodes);
        } else {
          models::MlpConfig c;
          c.inputs = 10;
          c.hidden = {8, 6};
          c.classes = 3;
          c.dropout = 0.1;
          m = models::build_mlp<float>(c);
          task = std::make_unique<tasks::SampleClassification>(images, 16, 1);
        }
        DigitalFeedback fb(3, 8, 3);
        graph::GraphLearner learner(m->graph, m->loss, m->logits, method,
                                    method == Method::kDfa ? &fb : nullptr);
        const tasks::ClassifierNodes n{&m->graph, m->input, m->labels, m->logits, m->loss};
        auto step = [&](std::int64_t s) {
          task->load_batch(0, s, n);
          REQUIRE(learner.compute_gradients(ForwardContext{true, static_cast<std::uint64_t>(s)},
                                            true)
                      .ok());
          tasks::count_correct(m->graph.value(m->logits), m->graph.node(m->labels).ids);
        };
        step(0);  // the epoch's order and every buffer
        allocations = 0;
        counting = true;
        step(1);
        step(2);
        counting = false;
        CHECK(allocations.load() == 0);
      }
    }
  }
}
