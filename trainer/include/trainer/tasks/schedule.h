// Learning-rate schedules and gradient-norm clipping for step-based training (the Transformer's;
// the paper's choices: Noam warm-up, a constant rate, reduce-on-plateau, clipping at 0.5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/param.h"

namespace opu::trainer::tasks {

enum class Schedule {
  kConstant,  // peak · min(1, step / warmup): a linear warm-up (none when warmup = 0), then flat
  kNoam,      // peak · min(step / warmup, sqrt(warmup / step)): "Attention is all you need"'s
              // schedule, scaled so that its maximum (at step = warmup) is the peak
  kPlateau,   // constant, multiplied by `factor` whenever the validation loss has not improved
              // (by a relative 1e-4) for more than `patience` evaluations: PyTorch's
              // ReduceLROnPlateau with its defaults, stepped at each evaluation
};
std::string schedule_name(Schedule s);
Result<Schedule> parse_schedule(const std::string& name);

class LearningRate {
 public:
  /// INVALID_ARGUMENT (thrown as StatusError) on peak <= 0, warmup < 0, noam without warm-up,
  /// factor outside (0, 1) or patience < 0.
  LearningRate(Schedule schedule, double peak, std::int64_t warmup, double factor = 0.2,
               std::int64_t patience = 1);
  /// The rate of training step `step` (1-based).
  double at(std::int64_t step) const;
  /// Plateau: one evaluation's validation loss (other schedules ignore it).
  void observe(double validation_loss);
  /// The plateau reductions so far (1 = none).
  double reduction() const { return reduction_; }
  Schedule schedule() const { return schedule_; }

 private:
  Schedule schedule_;
  double peak_;
  std::int64_t warmup_;
  double factor_;
  std::int64_t patience_;
  double reduction_ = 1.0;
  double best_ = 0.0;
  bool has_best_ = false;
  std::int64_t bad_ = 0;
};

/// Scales the gradients of `params` so that their global L2 norm is at most `max_norm` (> 0), as
/// torch.nn.utils.clip_grad_norm_; returns the norm before clipping.
double clip_grad_norm(const std::vector<Param*>& params, double max_norm);

}  // namespace opu::trainer::tasks
