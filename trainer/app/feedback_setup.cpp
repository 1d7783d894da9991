#include "feedback_setup.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "device_factory.h"

namespace opu::trainer::app {

Result<FeedbackSetup> make_feedback(const Options& o, Eigen::Index n_in, Eigen::Index d_max) {
  FeedbackSetup setup;
  if (o.feedback == "digital" || o.feedback == "digital-gaussian" ||
      o.feedback == "digital-noisy") {
    // The noisy control adds noise to a Gaussian B, the distribution a device's B has.
    setup.feedback = std::make_unique<DigitalFeedback>(
        n_in, d_max, o.seed,
        o.feedback == "digital" ? FeedbackDistribution::kUniform : FeedbackDistribution::kGaussian,
        o.feedback == "digital-noisy" ? *o.feedback_snr : DigitalFeedback::kNoNoise);
    return setup;
  }
  Result<std::unique_ptr<sim::Device>> opened = open_feedback_device(o.feedback);
  if (!opened.ok()) return opened.status();
  setup.device = std::move(*opened);
  sim::LinearOptions linear;
  linear.encoding = *sim::parse_encoding(o.encoding);  // checked by finalize()
  linear.threshold = o.threshold;
  linear.bitplanes = *o.bitplanes;
  // The draws also depend on each error's values, so one seed per run gives fresh draws every
  // step and survives --resume.
  linear.dither_seed = o.seed;
  linear.share_frames = o.share_frames;
  linear.repeats = o.repeats;
  linear.reference_repeats = o.reference_repeats;
  linear.reference_max_age_s = o.reference_max_age;
  if (!o.calibration.empty()) {
    Result<AppliedCalibration> applied = use_calibration(o.calibration, setup.device, linear);
    if (!applied.ok()) return applied.status();
    setup.calibration = *applied;
    spdlog::info("calibration {}: exposure {} us, {} masked pixels", applied->file,
                 applied->exposure_us, applied->masked_pixels);
  }
  setup.feedback = std::make_unique<DeviceFeedback>(*setup.device, n_in, d_max, linear);
  return setup;
}

}  // namespace opu::trainer::app
