// The DFA feedback source of a run as opu-train's options say: digital (uniform, Gaussian or
// noisy) or a device URI with its linear options and calibration. One place for the classifiers
// (app.cpp, by epochs) and the Transformer (transformer_app.cpp, by steps).
#pragma once

#include <Eigen/Core>
#include <memory>
#include <optional>

#include "calibrated_device.h"
#include "config.h"
#include "opu_sim/device.h"
#include "opu_sim/status.h"
#include "trainer/feedback.h"

namespace opu::trainer::app {

struct FeedbackSetup {
  std::unique_ptr<sim::Device> device;            // device feedback only
  std::optional<AppliedCalibration> calibration;  // device feedback with --calibration
  std::unique_ptr<FeedbackSource> feedback;       // borrows `device`: declared after it
};

/// A source mapping n_in (the error's rows) to d_max (the widest feedback point). Fails when the
/// device cannot be opened or the calibration does not apply.
Result<FeedbackSetup> make_feedback(const Options& o, Eigen::Index n_in, Eigen::Index d_max);

}  // namespace opu::trainer::app
