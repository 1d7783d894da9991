#include "trainer/layers.h"

#include <cmath>
#include <string>
#include <utility>

#include "opu_sim/status.h"
#include "trainer/random.h"

namespace opu::trainer {
namespace {

void init_param(Param& p, const std::string& name, Eigen::Index rows, Eigen::Index cols,
                std::uint64_t seed, float bound) {
  p.name = name;
  p.value.resize(rows, cols);
  p.grad = Eigen::MatrixXf::Zero(rows, cols);
  const CounterRng rng(seed, "init/" + name);
  for (Eigen::Index i = 0; i < p.value.size(); ++i) {
    p.value.data()[i] =
        bound == 0.0F ? 0.0F : rng.uniform(static_cast<std::uint64_t>(i), -bound, bound);
  }
}

void init_affine(Param& weight, Param& bias, const std::string& name, Eigen::Index n_in,
                 Eigen::Index n_out, std::uint64_t seed, Init init) {
  const float torch_bound = 1.0F / std::sqrt(static_cast<float>(n_in));
  const float glorot_bound = std::sqrt(6.0F / static_cast<float>(n_in + n_out));
  init_param(weight, name + ".weight", n_out, n_in, seed,
             init == Init::kGlorot ? glorot_bound : torch_bound);
  init_param(bias, name + ".bias", n_out, 1, seed, init == Init::kGlorot ? 0.0F : torch_bound);
  bias.decay = false;
}

void check_rows(const char* layer, Eigen::Index got, Eigen::Index want) {
  if (got != want) {
    throw StatusError(invalid_argument(std::string(layer) + ": input has " + std::to_string(got) +
                                       " rows, want " + std::to_string(want)));
  }
}

}  // namespace

// --- Linear
// ---------------------------------------------------------------------------------------

Linear::Linear(std::string name, Eigen::Index n_in, Eigen::Index n_out, std::uint64_t seed,
               Init init) {
  OPU_CHECK(n_in > 0 && n_out > 0, "Linear: sizes must be positive");
  init_affine(weight_, bias_, name, n_in, n_out, seed, init);
}

Eigen::Index Linear::output_size(Eigen::Index input_size) const {
  check_rows(weight_.name.c_str(), input_size, weight_.value.cols());
  return weight_.value.rows();
}

void Linear::forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
                     const ForwardContext& /*context*/) {
  ensure_shape(y, weight_.value.rows(), x.cols());
  y.noalias() = weight_.value * x;
  y.colwise() += bias_.value.col(0);
}

void Linear::backward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                      const Eigen::Ref<const Eigen::MatrixXf>& /*y*/,
                      const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                      bool param_grads) {
  if (param_grads) {
    weight_.grad.noalias() = dy * x.transpose();
    bias_.grad.col(0) = dy.rowwise().sum();
  }
  if (dx != nullptr) {
    ensure_shape(*dx, weight_.value.cols(), dy.cols());
    dx->noalias() = weight_.value.transpose() * dy;
  }
}

// --- activations
// ----------------------------------------------------------------------------------

std::string activation_name(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::kRelu:
      return "relu";
    case ActivationKind::kTanh:
      return "tanh";
    case ActivationKind::kSigmoid:
      return "sigmoid";
  }
  return "?";
}

void Activation::forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
                         const ForwardContext& /*context*/) {
  ensure_shape(y, x.rows(), x.cols());
  switch (kind_) {
    case ActivationKind::kRelu:
      y = x.cwiseMax(0.0F);
      break;
    case ActivationKind::kTanh:
      y = x.array().tanh().matrix();
      break;
    case ActivationKind::kSigmoid:
      y = (1.0F + (-x.array()).exp()).inverse().matrix();
      break;
  }
}

void Activation::backward(const Eigen::Ref<const Eigen::MatrixXf>& /*x*/,
                          const Eigen::Ref<const Eigen::MatrixXf>& y,
                          const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                          bool /*param_grads*/) {
  if (dx == nullptr) return;
  ensure_shape(*dx, dy.rows(), dy.cols());
  switch (kind_) {
    // f'(a) from y: relu' = [y > 0], tanh' = 1 - y², sigmoid' = y (1 - y).
    case ActivationKind::kRelu:
      dx->array() = (y.array() > 0.0F).select(dy.array(), 0.0F);
      break;
    case ActivationKind::kTanh:
      dx->array() = dy.array() * (1.0F - y.array().square());
      break;
    case ActivationKind::kSigmoid:
      dx->array() = dy.array() * y.array() * (1.0F - y.array());
      break;
  }
}

// --- Dropout
// --------------------------------------------------------------------------------------

Dropout::Dropout(std::string name, float p, std::uint64_t seed)
    : p_(p), seed_(derive_seed(seed, "dropout/" + name)) {
  if (!(p >= 0.0F && p < 1.0F)) {
    throw StatusError(
        invalid_argument("Dropout " + name + ": p is " + std::to_string(p) + ", want in [0, 1)"));
  }
}

void Dropout::forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
                      const ForwardContext& context) {
  ensure_shape(y, x.rows(), x.cols());
  active_ = context.training && p_ > 0.0F;
  if (!active_) {
    y = x;
    return;
  }
  ensure_shape(mask_, x.rows(), x.cols());
  const CounterRng rng(mix64(seed_ ^ mix64(context.step)));
  const float keep_scale = 1.0F / (1.0F - p_);
  for (Eigen::Index i = 0; i < mask_.size(); ++i) {
    mask_.data()[i] = rng.uniform(static_cast<std::uint64_t>(i)) >= p_ ? keep_scale : 0.0F;
  }
  y.array() = x.array() * mask_.array();
}

void Dropout::backward(const Eigen::Ref<const Eigen::MatrixXf>& /*x*/,
                       const Eigen::Ref<const Eigen::MatrixXf>& /*y*/,
                       const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                       bool /*param_grads*/) {
  if (dx == nullptr) return;
  ensure_shape(*dx, dy.rows(), dy.cols());
  if (active_) {
    dx->array() = dy.array() * mask_.array();
  } else {
    *dx = dy;
  }
}

// --- GraphConv
// ------------------------------------------------------------------------------------

GraphConv::GraphConv(std::string name, std::shared_ptr<const Eigen::SparseMatrix<float>> adjacency,
                     Eigen::Index n_in, Eigen::Index n_out, std::uint64_t seed, Init init)
    : adjacency_(std::move(adjacency)) {
  OPU_CHECK(adjacency_ != nullptr, "GraphConv: adjacency is null");
  OPU_CHECK(adjacency_->rows() == adjacency_->cols(), "GraphConv: adjacency must be square");
  adjacency_t_ = adjacency_->transpose();
  init_affine(weight_, bias_, name, n_in, n_out, seed, init);
}

Eigen::Index GraphConv::output_size(Eigen::Index input_size) const {
  check_rows(weight_.name.c_str(), input_size, weight_.value.cols());
  return weight_.value.rows();
}

void GraphConv::forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
                        const ForwardContext& /*context*/) {
  if (x.cols() != adjacency_->rows()) {
    throw StatusError(invalid_argument(weight_.name + ": input has " + std::to_string(x.cols()) +
                                       " columns (nodes), want " +
                                       std::to_string(adjacency_->rows())));
  }
  ensure_shape(projected_, weight_.value.rows(), x.cols());
  projected_.noalias() = weight_.value * x;
  ensure_shape(y, weight_.value.rows(), x.cols());
  y.noalias() = projected_ * (*adjacency_);
  y.colwise() += bias_.value.col(0);
}

void GraphConv::backward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                         const Eigen::Ref<const Eigen::MatrixXf>& /*y*/,
                         const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                         bool param_grads) {
  ensure_shape(spread_, dy.rows(), dy.cols());
  spread_.noalias() = dy * adjacency_t_;
  if (param_grads) {
    weight_.grad.noalias() = spread_ * x.transpose();
    bias_.grad.col(0) = dy.rowwise().sum();
  }
  if (dx != nullptr) {
    ensure_shape(*dx, weight_.value.cols(), dy.cols());
    dx->noalias() = weight_.value.transpose() * spread_;
  }
}

}  // namespace opu::trainer
