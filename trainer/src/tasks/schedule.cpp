#include "trainer/tasks/schedule.h"

#include <algorithm>
#include <cmath>

namespace opu::trainer::tasks {

std::string schedule_name(Schedule s) {
  switch (s) {
    case Schedule::kConstant:
      return "constant";
    case Schedule::kNoam:
      return "noam";
    case Schedule::kPlateau:
      return "plateau";
  }
  return "?";
}

Result<Schedule> parse_schedule(const std::string& name) {
  if (name == "constant") return Schedule::kConstant;
  if (name == "noam") return Schedule::kNoam;
  if (name == "plateau") return Schedule::kPlateau;
  return invalid_argument("schedule: '" + name + "' is unknown, want noam, constant or plateau");
}

LearningRate::LearningRate(Schedule schedule, double peak, std::int64_t warmup, double factor,
                           std::int64_t patience)
    : schedule_(schedule), peak_(peak), warmup_(warmup), factor_(factor), patience_(patience) {
  if (!(peak > 0.0 && std::isfinite(peak))) {
    throw StatusError(invalid_argument("learning rate " + std::to_string(peak) + ", want > 0"));
  }
  if (warmup < 0 || (schedule == Schedule::kNoam && warmup < 1)) {
    throw StatusError(invalid_argument("warm-up of " + std::to_string(warmup) + " steps, want " +
                                       (schedule == Schedule::kNoam ? ">= 1 (noam)" : ">= 0")));
  }
  if (!(factor > 0.0 && factor < 1.0)) {
    throw StatusError(
        invalid_argument("plateau factor " + std::to_string(factor) + ", want in (0, 1)"));
  }
  if (patience < 0) {
    throw StatusError(
        invalid_argument("plateau patience " + std::to_string(patience) + ", want >= 0"));
  }
}

double LearningRate::at(std::int64_t step) const {
  const auto s = static_cast<double>(std::max<std::int64_t>(step, 1));
  const auto w = static_cast<double>(warmup_);
  if (schedule_ == Schedule::kNoam) return peak_ * std::min(s / w, std::sqrt(w / s));
  const double ramp = warmup_ > 0 ? std::min(1.0, s / w) : 1.0;
  return peak_ * ramp * reduction_;
}

void LearningRate::observe(double validation_loss) {
  if (schedule_ != Schedule::kPlateau || !std::isfinite(validation_loss)) return;
  if (!has_best_ || validation_loss < best_ * (1.0 - 1e-4)) {
    best_ = validation_loss;
    has_best_ = true;
    bad_ = 0;
    return;
  }
  if (++bad_ > patience_) {
    reduction_ *= factor_;
    bad_ = 0;
  }
}

double clip_grad_norm(const std::vector<Param*>& params, double max_norm) {
  double sum = 0.0;
  for (const Param* p : params) sum += p->grad.cast<double>().squaredNorm();
  const double norm = std::sqrt(sum);
  if (max_norm > 0.0 && norm > max_norm) {
    // PyTorch's coefficient: max_norm / (norm + 1e-6).
    const auto c = static_cast<float>(max_norm / (norm + 1e-6));
    for (Param* p : params) p->grad *= c;
  }
  return norm;
}

}  // namespace opu::trainer::tasks
