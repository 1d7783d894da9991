// Feedback sources: where DFA's random projection B·e comes from (docs/design.md §4).
//
// One interface, two kinds:
// - DigitalFeedback: an exact float matrix B (U[-1, 1) like the paper's TinyDFA, or Gaussian). The
//   control of every experiment; optionally with i.i.d. Gaussian noise added at a chosen
//   signal-to-noise ratio (the "noisy digital" control of the noise studies, docs/noise-study.md).
// - DeviceFeedback: the batch's error matrix goes through an OPU's linear transform (ternary or
//   bit-plane encoding, holographic linearisation, camera noise) — any opu::sim::Device, local or
//   remote. The trainer never knows which.
//
// A source maps n_in (the model's output size) to n_out = d_max (the widest feedback point); the
// trainer slices the first d_l rows for each feedback point and applies the paper's scaling.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <limits>
#include <string>

#include "opu_sim/device.h"
#include "opu_sim/status.h"

namespace opu::trainer {

/// What the projections have cost so far.
struct FeedbackCost {
  std::int64_t calls = 0;
  std::int64_t frames = 0;          // camera frames (0 for digital feedback)
  std::int64_t device_time_ns = 0;  // device clock consumed (0 for digital feedback)
  std::int64_t saturated_pixels = 0;
};

class FeedbackSource {
 public:
  virtual ~FeedbackSource() = default;
  FeedbackSource(const FeedbackSource&) = delete;
  FeedbackSource& operator=(const FeedbackSource&) = delete;

  Eigen::Index n_in() const { return n_in_; }
  Eigen::Index n_out() const { return n_out_; }
  /// Standard deviation of B's entries: the trainer divides by it so that every source teaches
  /// with the magnitude of the paper's U[-1, 1) matrix (kPaperStd, trainer/method.h).
  virtual double entry_std() const = 0;
  /// "digital uniform", "device opu-sim dense 1024x1024 ternary t=0.1", ...
  virtual std::string describe() const = 0;

  /// out (n_out x batch) = B errors (n_in x batch). Checks the shape; INVALID_ARGUMENT names it.
  Status project(const Eigen::Ref<const Eigen::MatrixXf>& errors, Eigen::MatrixXf& out);
  const FeedbackCost& cost() const { return cost_; }

 protected:
  FeedbackSource(Eigen::Index n_in, Eigen::Index n_out) : n_in_(n_in), n_out_(n_out) {}
  virtual Status do_project(const Eigen::Ref<const Eigen::MatrixXf>& errors,
                            Eigen::MatrixXf& out) = 0;
  FeedbackCost cost_;

 private:
  Eigen::Index n_in_;
  Eigen::Index n_out_;
};

enum class FeedbackDistribution { kUniform, kGaussian };

/// B (n_out x n_in) with i.i.d. entries from (seed, index): U[-1, 1) or N(0, 1).
///
/// With a finite `snr`, every projection gets i.i.d. Gaussian noise added: sample s's column
/// receives N(0, P_s / snr) per element, P_s being the mean square of its exact projection B e_s.
/// So signal variance / noise variance = snr for every sample, whatever the error's magnitude
/// (a device's projection noise also scales with each sample's code weights), and all-zero
/// columns stay exactly zero. The noise is counter-based: a pure function of (seed, call, element).
class DigitalFeedback final : public FeedbackSource {
 public:
  static constexpr double kNoNoise = std::numeric_limits<double>::infinity();

  DigitalFeedback(Eigen::Index n_in, Eigen::Index n_out, std::uint64_t seed,
                  FeedbackDistribution distribution = FeedbackDistribution::kUniform,
                  double snr = kNoNoise);
  double entry_std() const override;
  std::string describe() const override;
  const Eigen::MatrixXf& matrix() const { return matrix_; }
  double snr() const { return snr_; }

 protected:
  Status do_project(const Eigen::Ref<const Eigen::MatrixXf>& errors, Eigen::MatrixXf& out) override;

 private:
  void add_noise(Eigen::MatrixXf& out) const;

  FeedbackDistribution distribution_;
  Eigen::MatrixXf matrix_;
  double snr_;
  std::uint64_t noise_key_;
};

/// The device-feedback scheme that closes the camera gap (docs/camera-gap.md), opu-train's
/// default: unbiased stochastic rounding to 2 bit-planes per sign, identical codes of a call
/// measured once, each code's frame pair averaged 4 times, the reference 256 times per call.
/// (sim::LinearOptions{} is the literal scheme: thresholded ternary, one frame pair per code.)
sim::LinearOptions recommended_linear_options();

/// B·e computed by a Device's linear transform. The device is borrowed and must outlive this.
/// All-zero error columns (GCN nodes outside the training set) are not sent: their projection is 0
/// by linearity, and sending them would waste frames.
class DeviceFeedback final : public FeedbackSource {
 public:
  DeviceFeedback(sim::Device& device, Eigen::Index n_in, Eigen::Index n_out,
                 sim::LinearOptions options);
  /// The device's B is approximately N(0, 1) (device.h).
  double entry_std() const override { return 1.0; }
  std::string describe() const override;

 protected:
  Status do_project(const Eigen::Ref<const Eigen::MatrixXf>& errors, Eigen::MatrixXf& out) override;

 private:
  sim::Device& device_;
  sim::LinearOptions options_;
  std::string model_;
  Eigen::MatrixXf packed_;  // the non-zero columns, contiguous
};

}  // namespace opu::trainer
