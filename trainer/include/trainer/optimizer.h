// Optimisers: SGD with momentum and Adam, both with L2 weight decay added to the gradient
// (PyTorch's convention, so the paper's hyper-parameters mean the same here). State lives per
// parameter name and is saved in checkpoints, so a resumed run continues exactly.
#pragma once

#include <Eigen/Core>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/param.h"

namespace opu::trainer {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  /// Updates `params` from their gradients (only the ones given: shallow training passes the top
  /// block's parameters only, and the others keep no state).
  virtual void step(const std::vector<Param*>& params) = 0;
  float learning_rate() const { return lr_; }
  void set_learning_rate(float lr) { lr_ = lr; }

  /// Named state tensors ("<param>/momentum", ...) for checkpoints; step counters are 1x1 tensors.
  std::map<std::string, Eigen::MatrixXf>& state() { return state_; }

 protected:
  Optimizer(float lr, float weight_decay) : lr_(lr), weight_decay_(weight_decay) {}
  /// The state tensor `suffix` of `param`, zero-initialised at its shape on first use.
  Eigen::MatrixXf& slot(const Param& param, const char* suffix, Eigen::Index rows,
                        Eigen::Index cols);
  float lr_;
  float weight_decay_;
  std::map<std::string, Eigen::MatrixXf> state_;
};

/// v = momentum v + (g + wd w);  w -= lr v.
class Sgd final : public Optimizer {
 public:
  Sgd(float lr, float momentum, float weight_decay)
      : Optimizer(lr, weight_decay), momentum_(momentum) {}
  std::string name() const override { return "sgd"; }
  void step(const std::vector<Param*>& params) override;

 private:
  float momentum_;
};

/// Adam (Kingma & Ba) with bias correction; g += wd w first (PyTorch's Adam, not AdamW).
class Adam final : public Optimizer {
 public:
  Adam(float lr, float weight_decay, float beta1 = 0.9F, float beta2 = 0.999F, float eps = 1e-8F)
      : Optimizer(lr, weight_decay), beta1_(beta1), beta2_(beta2), eps_(eps) {}
  std::string name() const override { return "adam"; }
  void step(const std::vector<Param*>& params) override;

 private:
  float beta1_, beta2_, eps_;
};

/// "sgd" or "adam".
Result<std::unique_ptr<Optimizer>> make_optimizer(const std::string& name, float lr, float momentum,
                                                  float weight_decay);

}  // namespace opu::trainer
