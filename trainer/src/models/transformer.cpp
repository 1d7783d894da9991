#include "trainer/models/transformer.h"

#include <cmath>
#include <sstream>
#include <string>

#include "trainer/graph/ops_attention.h"
#include "trainer/graph/ops_embedding.h"
#include "trainer/graph/ops_loss.h"
#include "trainer/graph/ops_norm.h"
#include "trainer/random.h"

namespace opu::trainer::models {
using namespace opu::trainer::graph;

std::string dfa_points_name(DfaPoints points) {
  switch (points) {
    case DfaPoints::kNone:
      return "none";
    case DfaPoints::kMacro:
      return "macro";
    case DfaPoints::kMicro:
      return "micro";
  }
  return "?";
}

Result<DfaPoints> parse_dfa_points(const std::string& name) {
  if (name == "macro") return DfaPoints::kMacro;
  if (name == "micro") return DfaPoints::kMicro;
  if (name == "none") return DfaPoints::kNone;
  return invalid_argument("dfa points: '" + name + "' is unknown, want macro, micro or none");
}

Status TransformerConfig::validate() const {
  auto at_least = [](const char* field, Index v, Index lo) -> Status {
    if (v < lo) {
      return invalid_argument(std::string("transformer: ") + field + " is " + std::to_string(v) +
                              ", want >= " + std::to_string(lo));
    }
    return {};
  };
  OPU_RETURN_IF_ERROR(at_least("vocab", vocab, 2));
  OPU_RETURN_IF_ERROR(at_least("layers", layers, 1));
  OPU_RETURN_IF_ERROR(at_least("d_model", d_model, 1));
  OPU_RETURN_IF_ERROR(at_least("heads", heads, 1));
  OPU_RETURN_IF_ERROR(at_least("d_ff", d_ff, 1));
  OPU_RETURN_IF_ERROR(at_least("context", context, 1));
  if (d_model % heads != 0) {
    return invalid_argument("transformer: d_model " + std::to_string(d_model) +
                            " is not a multiple of the " + std::to_string(heads) + " heads");
  }
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    return invalid_argument("transformer: dropout " + std::to_string(dropout) + ", want in [0, 1)");
  }
  return {};
}

std::string TransformerConfig::describe() const {
  std::ostringstream s;
  s << "transformer L" << layers << " d" << d_model << " h" << heads << " ff" << d_ff << " ctx"
    << context << (pre_ln ? " pre-ln" : " post-ln")
    << (positions == Positions::kSinusoidal ? " sinusoidal" : " learned") << " "
    << activation_name(activation) << " vocab" << vocab << " dropout" << dropout;
  return s.str();
}

namespace {

template <typename T>
Matrix<T> uniform(Index rows, Index cols, double bound, std::uint64_t seed,
                  const std::string& name) {
  const CounterRng rng(seed, "init/" + name);
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) {
    m.data()[i] = static_cast<T>(
        bound * (2.0 * static_cast<double>(rng.uniform(static_cast<std::uint64_t>(i))) - 1.0));
  }
  return m;
}

template <typename T>
Matrix<T> normal(Index rows, Index cols, double std, std::uint64_t seed, const std::string& name) {
  const CounterRng rng(seed, "init/" + name);
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) {
    m.data()[i] =
        static_cast<T>(std * static_cast<double>(rng.normal(static_cast<std::uint64_t>(i))));
  }
  return m;
}

/// The graph being built, with the config's seed and a name prefix.
template <typename T>
struct Builder {
  Graph<T>& g;
  const TransformerConfig& c;

  NodeId weight(const std::string& name, Index rows, Index cols, double bound) {
    return g.parameter(name, uniform<T>(rows, cols, bound, c.seed, name), true);
  }
  NodeId constant_param(const std::string& name, Index rows, double value) {
    return g.parameter(name, Matrix<T>::Constant(rows, 1, static_cast<T>(value)), false);
  }
  NodeId bias(const std::string& name, Index rows, double bound) {
    if (bound == 0.0) return constant_param(name, rows, 0.0);
    return g.parameter(name, uniform<T>(rows, 1, bound, c.seed, name), false);
  }
  NodeId drop(NodeId x, const std::string& name) {
    return dropout(g, x, c.dropout, derive_seed(c.seed, "dropout/" + name), name);
  }
  NodeId norm(NodeId x, const std::string& name) {
    // One statement per parameter: their order (the optimiser's, the checkpoints') is fixed.
    const NodeId gamma = constant_param(name + ".weight", c.d_model, 1.0);
    const NodeId beta = constant_param(name + ".bias", c.d_model, 0.0);
    return layer_norm(g, x, gamma, beta, name);
  }
  /// nn.Linear's default initialisation: weight and bias U(±1/sqrt(fan_in)).
  NodeId torch_linear(NodeId x, const std::string& name, Index n_in, Index n_out) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(n_in));
    const NodeId w = weight(name + ".weight", n_out, n_in, bound);
    const NodeId b = bias(name + ".bias", n_out, bound);
    return linear(g, x, w, b, name);
  }
  /// Self-attention with its projections (nn.MultiheadAttention's initialisation).
  NodeId attention_sublayer(NodeId x, const std::string& name) {
    const Index d = c.d_model;
    const double xavier = std::sqrt(6.0 / static_cast<double>(d + 3 * d));
    const NodeId w_in = weight(name + ".in_proj.weight", 3 * d, d, xavier);
    const NodeId b_in = bias(name + ".in_proj.bias", 3 * d, 0.0);
    const NodeId qkv = linear(g, x, w_in, b_in, name + ".in_proj");
    const NodeId heads = attention(g, qkv, c.heads, true, c.dropout,
                                   derive_seed(c.seed, "dropout/" + name), name + ".heads");
    const double bound = 1.0 / std::sqrt(static_cast<double>(d));
    const NodeId w_out = weight(name + ".out_proj.weight", d, d, bound);
    const NodeId b_out = bias(name + ".out_proj.bias", d, 0.0);
    return linear(g, heads, w_out, b_out, name + ".out_proj");
  }
  /// linear1 - activation - dropout: the FFN's hidden activation.
  NodeId ffn_hidden(NodeId x, const std::string& name) {
    const NodeId pre = torch_linear(x, name + ".linear1", c.d_model, c.d_ff);
    return drop(activation(g, c.activation, pre, name + ".act"), name + ".dropout");
  }
};

}  // namespace

template <typename T>
std::unique_ptr<TransformerModel<T>> build_transformer(const TransformerConfig& config) {
  if (const Status valid = config.validate(); !valid.ok()) throw StatusError(valid);
  auto model = std::make_unique<TransformerModel<T>>();
  model->config = config;
  Graph<T>& g = model->graph;
  Builder<T> b{g, model->config};
  const Index d = config.d_model;
  const bool micro = config.points == DfaPoints::kMicro;
  const bool any_points = config.points != DfaPoints::kNone;

  model->tokens = g.index_input("tokens");
  model->targets = g.index_input("targets");
  const NodeId table = b.weight("embed.weight", d, config.vocab, 0.1);
  NodeId x = embedding(g, model->tokens, table, std::sqrt(static_cast<double>(d)), "embed");
  const NodeId positions =
      config.positions == Positions::kSinusoidal
          ? g.constant("positions", sinusoidal_positions<T>(d, config.context))
          : g.parameter("pos.weight", normal<T>(d, config.context, 0.02, config.seed, "pos.weight"),
                        false);
  x = b.drop(add_positions(g, x, positions, "embed.positions"), "embed.dropout");

  for (Index l = 0; l < config.layers; ++l) {
    const std::string name = "block" + std::to_string(l);
    NodeId after_attention = kNoNode;
    if (config.pre_ln) {
      const NodeId a = b.attention_sublayer(b.norm(x, name + ".ln1"), name + ".attn");
      after_attention = add(g, x, b.drop(a, name + ".attn.dropout"), name + ".attn.residual");
    } else {
      const NodeId a = b.attention_sublayer(x, name + ".attn");
      after_attention = b.norm(
          add(g, x, b.drop(a, name + ".attn.dropout"), name + ".attn.residual"), name + ".ln1");
    }
    if (micro) g.feedback_point(after_attention, name + ".attn");
    const NodeId ffn_in = config.pre_ln ? b.norm(after_attention, name + ".ln2") : after_attention;
    const NodeId hidden = b.ffn_hidden(ffn_in, name + ".ffn");
    if (micro) g.feedback_point(hidden, name + ".ffn");
    const NodeId f = b.torch_linear(hidden, name + ".ffn.linear2", config.d_ff, d);
    const NodeId sum =
        add(g, after_attention, b.drop(f, name + ".ffn.dropout2"), name + ".ffn.residual");
    x = config.pre_ln ? sum : b.norm(sum, name + ".ln2");
    if (any_points) g.feedback_point(x, name);
  }
  model->hidden = config.pre_ln ? b.norm(x, "ln_f") : x;
  const NodeId w_dec = b.weight("decoder.weight", config.vocab, d, 0.1);
  const NodeId b_dec = b.bias("decoder.bias", config.vocab, 0.0);
  model->logits = linear(g, model->hidden, w_dec, b_dec, "decoder");
  model->loss = softmax_cross_entropy(g, model->logits, model->targets, "loss");
  return model;
}

std::vector<std::int32_t> generate(TransformerModel<float>& model, std::vector<std::int32_t> prompt,
                                   std::int64_t count, double temperature, std::uint64_t seed) {
  OPU_CHECK(!prompt.empty(), "generate: the prompt needs at least one token");
  const CounterRng rng(seed, "generate");
  const Index context = model.config.context;
  std::vector<std::int32_t> out;
  out.reserve(static_cast<std::size_t>(count));
  std::vector<double> p(static_cast<std::size_t>(model.config.vocab));
  for (std::int64_t i = 0; i < count; ++i) {
    const auto len =
        static_cast<Index>(std::min<std::size_t>(prompt.size(), static_cast<std::size_t>(context)));
    model.graph.set_ids(
        model.tokens,
        std::span<const std::int32_t>(prompt.data() + prompt.size() - static_cast<std::size_t>(len),
                                      static_cast<std::size_t>(len)),
        len);
    model.graph.forward(ForwardContext{false, 0}, model.logits);
    const auto z = model.graph.value(model.logits).col(len - 1);
    Index best = 0;
    z.maxCoeff(&best);
    std::int32_t next = static_cast<std::int32_t>(best);
    if (temperature > 0.0) {
      double sum = 0.0;
      for (Index v = 0; v < z.size(); ++v) {
        p[static_cast<std::size_t>(v)] =
            std::exp((static_cast<double>(z(v)) - static_cast<double>(z(best))) / temperature);
        sum += p[static_cast<std::size_t>(v)];
      }
      double u = static_cast<double>(rng.uniform(static_cast<std::uint64_t>(i))) * sum;
      for (Index v = 0; v < z.size(); ++v) {
        u -= p[static_cast<std::size_t>(v)];
        if (u < 0.0) {
          next = static_cast<std::int32_t>(v);
          break;
        }
      }
    }
    out.push_back(next);
    prompt.push_back(next);
  }
  return out;
}

template struct TransformerModel<float>;
template struct TransformerModel<double>;
template std::unique_ptr<TransformerModel<float>> build_transformer<float>(
    const TransformerConfig&);
template std::unique_ptr<TransformerModel<double>> build_transformer<double>(
    const TransformerConfig&);

}  // namespace opu::trainer::models
