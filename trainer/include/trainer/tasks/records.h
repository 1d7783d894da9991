#pragma once
// JSON pieces shared by the tasks' metrics records (classification epochs, language-model
// evaluations) and the front ends' summaries.

#include <cmath>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/method.h"

namespace opu::trainer::tasks {

/// A finite number, or null: JSON has no NaN or infinity (a diverged loss, shallow's alignment).
inline nlohmann::json number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

/// {point: {"mean", "std", "samples"}} for each feedback point measured.
inline nlohmann::json alignment_json(const std::vector<Alignment>& alignment) {
  nlohmann::json points = nlohmann::json::object();
  for (const Alignment& a : alignment) {
    points[a.point] = {
        {"mean", number_or_null(a.mean)}, {"std", number_or_null(a.std)}, {"samples", a.samples}};
  }
  return points;
}

}  // namespace opu::trainer::tasks
