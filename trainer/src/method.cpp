#include "trainer/method.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace opu::trainer {

std::string method_name(Method method) {
  switch (method) {
    case Method::kBp:
      return "bp";
    case Method::kDfa:
      return "dfa";
    case Method::kShallow:
      return "shallow";
  }
  return "?";
}

Result<Method> parse_method(const std::string& name) {
  if (name == "bp") return Method::kBp;
  if (name == "dfa") return Method::kDfa;
  if (name == "shallow") return Method::kShallow;
  return invalid_argument("method: '" + name + "' is unknown, want bp, dfa or shallow");
}

Alignment cosine_alignment(const std::string& point, const Eigen::Ref<const Eigen::MatrixXf>& a,
                           const Eigen::Ref<const Eigen::MatrixXf>& b) {
  OPU_CHECK(a.rows() == b.rows() && a.cols() == b.cols(), "cosine_alignment: shape mismatch");
  Alignment result;
  result.point = point;
  double sum = 0.0;
  double sum_sq = 0.0;
  for (Eigen::Index c = 0; c < a.cols(); ++c) {
    const double na = a.col(c).cast<double>().norm();
    const double nb = b.col(c).cast<double>().norm();
    if (na == 0.0 || nb == 0.0) continue;  // no signal on this sample: nothing to align
    const double cosine = a.col(c).cast<double>().dot(b.col(c).cast<double>()) / (na * nb);
    sum += cosine;
    sum_sq += cosine * cosine;
    ++result.samples;
  }
  if (result.samples == 0) {
    result.mean = result.std = std::numeric_limits<double>::quiet_NaN();
    return result;
  }
  const auto n = static_cast<double>(result.samples);
  result.mean = sum / n;
  result.std = std::sqrt(std::max(0.0, sum_sq / n - result.mean * result.mean));
  return result;
}

}  // namespace opu::trainer
