// One training step's gradients under BP, DFA or shallow training, and the alignment measure.
//
// The journey of one error vector (docs/design.md §4): forward → e = dL/dy → the feedback source
// projects it once (d_max x batch) → the projection is scaled by kPaperStd / (std(B) sqrt(d_max))
// → each feedback point takes its first d_l rows as the gradient at its activation → local backprop
// inside its block (δ_l = (B_l e) ⊙ f'(a_l), then the weight gradients). The top block (above the
// last feedback point) learns from e by ordinary backprop. No layer knows where B·e came from.
#pragma once

#include <Eigen/Core>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "trainer/feedback.h"
#include "trainer/losses.h"
#include "trainer/model.h"

namespace opu::trainer {

enum class Method {
  kBp,       // backpropagation through the whole model
  kDfa,      // direct feedback alignment
  kShallow,  // only the layers above the last feedback point learn (the paper's control)
};
std::string method_name(Method method);
Result<Method> parse_method(const std::string& name);

/// Standard deviation of U[-1, 1): the scale of the paper's feedback matrix.
inline constexpr double kPaperStd = 0.57735026918962576;  // 1/sqrt(3)

/// Cosine between the method's teaching signal and the true BP gradient at one feedback point,
/// per sample, summarised over the samples where both are non-zero.
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

struct StepResult {
  double loss = 0.0;
  std::int64_t correct = 0;  // argmax(output) == argmax(target), among weighted samples
  std::int64_t counted = 0;  // samples with a non-zero weight
};

/// Computes gradients for one batch. Borrowed model, loss and feedback source must outlive it.
class Learner {
 public:
  /// `feedback` is required for DFA (n_in = model output size, n_out >= d_max) and unused
  /// otherwise. Throws StatusError on a mismatch (a programming error of the caller).
  Learner(Model& model, const Loss& loss, Method method, FeedbackSource* feedback);

  Method method() const { return method_; }
  /// The parameters this method trains (shallow: the top block's only).
  const std::vector<Param*>& trainable() const { return trainable_; }

  /// Forward on model.input(), loss against `targets`, gradients of trainable() by the method.
  /// With `measure_alignment`, also one extra BP backward (no parameter gradients) for
  /// alignment(). Fails only when the feedback source does (device errors).
  Result<StepResult> compute_gradients(const Eigen::Ref<const Eigen::MatrixXf>& targets,
                                       const Eigen::Ref<const Eigen::VectorXf>& weights,
                                       const ForwardContext& context, bool measure_alignment);
  /// Alignment per feedback point from the last compute_gradients that measured it.
  const std::vector<Alignment>& alignment() const { return alignment_; }
  /// The teaching signal at feedback point k from the last step (DFA: scaled B_k e; BP: the
  /// gradient backprop delivered there; shallow: zeros).
  const Eigen::MatrixXf& teaching_signal(std::size_t k) const { return signals_[k]; }
  /// The feedback source (null unless DFA).
  const FeedbackSource* feedback() const { return method_ == Method::kDfa ? feedback_ : nullptr; }
  /// The feedback scale applied to B·e.
  double feedback_scale() const { return scale_; }

 private:
  Model& model_;
  const Loss& loss_;
  Method method_;
  FeedbackSource* feedback_;
  double scale_ = 1.0;
  std::vector<Param*> trainable_;
  Eigen::MatrixXf error_;       // e = dL/doutput
  Eigen::MatrixXf projection_;  // B e, d_max x batch
  std::vector<Eigen::MatrixXf> signals_;
  std::vector<Eigen::MatrixXf> true_grads_;
  std::vector<Alignment> alignment_;
};

/// Column-wise argmax.
std::vector<std::int32_t> argmax_columns(const Eigen::Ref<const Eigen::MatrixXf>& m);

}  // namespace opu::trainer
