// The three learning methods (docs/design.md §4) and the alignment measure they are compared by.
// GraphLearner (graph/learner.h) implements them on any graph.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <string>

#include "opu_sim/status.h"

namespace opu::trainer {

enum class Method {
  kBp,       // backpropagation through the whole model
  kDfa,      // direct feedback alignment
  kShallow,  // only the top segment (above every feedback point) learns: the paper's control
};
std::string method_name(Method method);
Result<Method> parse_method(const std::string& name);

/// Standard deviation of U[-1, 1): the scale of the paper's feedback matrix. DFA's projection
/// is scaled by kPaperStd / (std(B) sqrt(d_max)): TinyDFA's 1/sqrt(d_max) for that matrix, and
/// other sources (Gaussian, a device) brought to its magnitude.
inline constexpr double kPaperStd = 0.57735026918962576;  // 1/sqrt(3)

/// Cosine between the method's teaching signal and the true BP gradient at one feedback point,
/// per column (sample, node, token), summarised over the columns where both are non-zero.
struct Alignment {
  std::string point;
  double mean = 0.0;
  double std = 0.0;
  std::int64_t samples = 0;  // 0: no signal (shallow), mean and std are NaN
};

/// Per-column cosine of two equally shaped matrices, summarised (columns where either is 0
/// skipped).
Alignment cosine_alignment(const std::string& point, const Eigen::Ref<const Eigen::MatrixXf>& a,
                           const Eigen::Ref<const Eigen::MatrixXf>& b);

}  // namespace opu::trainer
