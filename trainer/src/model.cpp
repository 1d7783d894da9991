#include "trainer/model.h"

#include <algorithm>
#include <string>
#include <utility>

#include "opu_sim/status.h"

namespace opu::trainer {

Model::Model(Eigen::Index input_size) : input_size_(input_size), sizes_{input_size} {
  OPU_CHECK(input_size > 0, "Model: input size must be positive");
}

void Model::add(std::unique_ptr<Layer> layer) {
  sizes_.push_back(layer->output_size(sizes_.back()));
  layers_.push_back(std::move(layer));
  activations_.emplace_back();
}

void Model::add_feedback_point(std::string name) {
  OPU_CHECK(!layers_.empty(), "Model: a feedback point must follow a layer");
  for (const FeedbackPoint& p : feedback_points_) {
    OPU_CHECK(p.name != name, "Model: duplicate feedback point name");
  }
  feedback_points_.push_back({std::move(name), layers_.size() - 1, sizes_.back()});
}

Eigen::Index Model::max_feedback_size() const {
  Eigen::Index d = 0;
  for (const FeedbackPoint& p : feedback_points_) d = std::max(d, p.size);
  return d;
}

const Eigen::MatrixXf& Model::forward(const ForwardContext& context) {
  if (input_.rows() != input_size_) {
    throw StatusError(invalid_argument("Model: input has " + std::to_string(input_.rows()) +
                                       " rows, want " + std::to_string(input_size_)));
  }
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->forward(i == 0 ? input_ : activations_[i - 1], activations_[i], context);
  }
  return activations_.back();
}

const Eigen::MatrixXf& Model::forward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                                      const ForwardContext& context) {
  ensure_shape(input_, x.rows(), x.cols());
  input_ = x;
  return forward(context);
}

void Model::backward(std::size_t top, std::size_t bottom,
                     const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                     bool param_grads, const GradientTap& tap) {
  OPU_CHECK(top < layers_.size() && bottom <= top, "Model::backward: bad layer range");
  // The gradient flows through grad_a_/grad_b_ alternately: no allocation once warmed up.
  const Eigen::MatrixXf* current = nullptr;
  Eigen::MatrixXf* buffers[2] = {&grad_a_, &grad_b_};
  int next = 0;
  for (std::size_t i = top + 1; i-- > bottom;) {
    const Eigen::Ref<const Eigen::MatrixXf> g =
        current == nullptr ? dy : Eigen::Ref<const Eigen::MatrixXf>(*current);
    if (tap) tap(i, g);
    const Eigen::MatrixXf& x = i == 0 ? input_ : activations_[i - 1];
    Eigen::MatrixXf* out = i > bottom ? buffers[next] : dx;
    layers_[i]->backward(x, activations_[i], g, out, param_grads);
    if (i > bottom) {
      current = buffers[next];
      next ^= 1;
    }
  }
}

std::vector<Param*> Model::params() { return params_from(0); }

std::vector<Param*> Model::params_from(std::size_t first) {
  std::vector<Param*> all;
  for (std::size_t i = first; i < layers_.size(); ++i) {
    for (Param* p : layers_[i]->params()) all.push_back(p);
  }
  return all;
}

std::int64_t Model::num_parameters() {
  std::int64_t n = 0;
  for (Param* p : params()) n += p->value.size();
  return n;
}

std::string Model::signature() const {
  std::string s = std::to_string(input_size_);
  std::size_t next_point = 0;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    s += "-" + layers_[i]->kind();
    if (!layers_[i]->params().empty()) s += std::to_string(sizes_[i + 1]);
    while (next_point < feedback_points_.size() && feedback_points_[next_point].after_layer == i) {
      s += "-[" + feedback_points_[next_point].name + "]";
      ++next_point;
    }
  }
  return s;
}

Model make_mlp(Eigen::Index n_in, const std::vector<Eigen::Index>& hidden, Eigen::Index n_out,
               ActivationKind activation, std::uint64_t seed, float dropout) {
  Model model(n_in);
  Eigen::Index width = n_in;
  for (std::size_t l = 0; l < hidden.size(); ++l) {
    const std::string name = "layer" + std::to_string(l);
    model.add(std::make_unique<Linear>(name, width, hidden[l], seed));
    model.add(std::make_unique<Activation>(activation));
    model.add_feedback_point("h" + std::to_string(l + 1));
    if (dropout > 0.0F) model.add(std::make_unique<Dropout>(name + ".dropout", dropout, seed));
    width = hidden[l];
  }
  model.add(std::make_unique<Linear>("layer" + std::to_string(hidden.size()), width, n_out, seed));
  return model;
}

Model make_gcn(std::shared_ptr<const Eigen::SparseMatrix<float>> adjacency, Eigen::Index n_in,
               const std::vector<Eigen::Index>& hidden, Eigen::Index n_out, float dropout,
               std::uint64_t seed, float input_dropout) {
  Model model(n_in);
  Eigen::Index width = n_in;
  for (std::size_t l = 0; l <= hidden.size(); ++l) {
    const std::string name = "gcn" + std::to_string(l);
    const Eigen::Index out = l < hidden.size() ? hidden[l] : n_out;
    const float p = l == 0 ? input_dropout : dropout;
    if (p > 0.0F) model.add(std::make_unique<Dropout>(name + ".dropout", p, seed));
    auto conv = std::make_unique<GraphConv>(name, adjacency, width, out, seed);
    // Kipf & Welling (and the paper) decay only the first layer's parameters.
    conv->weight().decay = l == 0;
    conv->bias().decay = l == 0;
    model.add(std::move(conv));
    if (l < hidden.size()) {
      model.add(std::make_unique<Activation>(ActivationKind::kRelu));
      model.add_feedback_point("h" + std::to_string(l + 1));
    }
    width = out;
  }
  return model;
}

}  // namespace opu::trainer
