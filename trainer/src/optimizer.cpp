#include "trainer/optimizer.h"

#include <cmath>

namespace opu::trainer {

Eigen::MatrixXf& Optimizer::slot(const Param& param, const char* suffix, Eigen::Index rows,
                                 Eigen::Index cols) {
  Eigen::MatrixXf& s = state_[param.name + "/" + suffix];
  if (s.rows() != rows || s.cols() != cols) s = Eigen::MatrixXf::Zero(rows, cols);
  return s;
}

void Sgd::step(const std::vector<Param*>& params) {
  for (Param* p : params) {
    const float wd = p->decay ? weight_decay_ : 0.0F;
    if (momentum_ == 0.0F) {
      p->value.array() -= lr_ * (p->grad.array() + wd * p->value.array());
      continue;
    }
    Eigen::MatrixXf& v = slot(*p, "momentum", p->value.rows(), p->value.cols());
    // One fused pass over memory: decay, momentum and the update (this is memory-bound).
    const Eigen::Index n = p->value.size();
    float* w = p->value.data();
    const float* g = p->grad.data();
    float* vd = v.data();
    const float m = momentum_;
    const float lr = lr_;
    for (Eigen::Index i = 0; i < n; ++i) {
      const float vi = m * vd[i] + (g[i] + wd * w[i]);
      vd[i] = vi;
      w[i] -= lr * vi;
    }
  }
}

void Adam::step(const std::vector<Param*>& params) {
  for (Param* p : params) {
    const float wd = p->decay ? weight_decay_ : 0.0F;
    Eigen::MatrixXf& m = slot(*p, "adam_m", p->value.rows(), p->value.cols());
    Eigen::MatrixXf& v = slot(*p, "adam_v", p->value.rows(), p->value.cols());
    Eigen::MatrixXf& t = slot(*p, "adam_t", 1, 1);
    t(0, 0) += 1.0F;
    const double correction1 = 1.0 - std::pow(static_cast<double>(beta1_), t(0, 0));
    const double correction2 = 1.0 - std::pow(static_cast<double>(beta2_), t(0, 0));
    const auto step_size = static_cast<float>(lr_ / correction1);
    const auto root2 = static_cast<float>(std::sqrt(correction2));
    const Eigen::Index n = p->value.size();
    float* w = p->value.data();
    const float* g = p->grad.data();
    float* md = m.data();
    float* vd = v.data();
    for (Eigen::Index i = 0; i < n; ++i) {
      const float gi = g[i] + wd * w[i];
      md[i] = beta1_ * md[i] + (1.0F - beta1_) * gi;
      vd[i] = beta2_ * vd[i] + (1.0F - beta2_) * gi * gi;
      w[i] -= step_size * md[i] / (std::sqrt(vd[i]) / root2 + eps_);
    }
  }
}

Result<std::unique_ptr<Optimizer>> make_optimizer(const std::string& name, float lr, float momentum,
                                                  float weight_decay) {
  if (!(lr > 0.0F) || !std::isfinite(lr)) {
    return invalid_argument("optimizer: lr is " + std::to_string(lr) + ", want > 0");
  }
  if (!(weight_decay >= 0.0F)) {
    return invalid_argument("optimizer: weight_decay is " + std::to_string(weight_decay) +
                            ", want >= 0");
  }
  if (name == "sgd") {
    if (!(momentum >= 0.0F && momentum < 1.0F)) {
      return invalid_argument("optimizer: momentum is " + std::to_string(momentum) +
                              ", want in [0, 1)");
    }
    return {std::make_unique<Sgd>(lr, momentum, weight_decay)};
  }
  if (name == "adam") return {std::make_unique<Adam>(lr, weight_decay)};
  return invalid_argument("optimizer: '" + name + "' is unknown, want sgd or adam");
}

}  // namespace opu::trainer
