// The Device interface: what the trainer and the calibration tools see of an OPU, whether it is the
// in-process simulator, a gRPC endpoint serving one, or a real device's driver.
//
// Conventions (docs/design.md §2, §3):
// - a frame is a binary vector over n_in mirrors, bit-packed: bit i is bit (i % 8), least
//   significant first, of byte i / 8; each frame takes packed_bytes(n_in) bytes; a batch is frame
//   after frame;
// - camera frames are batch x n_out pixel counts, frame after frame, in the wire layout: one byte
//   per pixel when adc_bits <= 8, else little-endian uint16;
// - float vectors are sample after sample (batch x n), which is Eigen's column-major n x batch: one
//   sample per column, as everywhere in the toolkit.
//
// Validation happens once, in the public non-virtual methods; implementations see only requests
// that passed it (plus their own, device-specific limits).
//
// Thread safety: every Device is safe to call from several threads at once. A device is one
// physical timeline: each call reserves a contiguous run of frames on the device clock, so frames
// of one request never interleave with another's.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "opu_sim/status.h"

namespace opu::sim {

/// Version of the wire contract this code speaks (proto package opu.v1).
inline constexpr std::string_view kApiVersion = "opu.v1";

/// Static description of a device.
struct DeviceInfo {
  std::string model;             // e.g. "opu-sim dense 1024x1024"
  bool simulated = false;        // true for the simulator (it can reveal its matrix for tests)
  std::int64_t max_n_in = 0;     // mirrors of the input array
  std::int64_t max_n_out = 0;    // camera pixels
  int adc_bits = 8;              // bits per camera count
  double frametime_us = 0.0;     // device time one frame costs
  double exposure_us = 0.0;      // default exposure
  double max_exposure_us = 0.0;  // longest exposure the camera accepts
  bool supports_linear = false;  // linear_transform is served by the device itself
  std::int64_t max_batch = 0;    // largest batch one call may carry
  std::string api_version{kApiVersion};
};

/// What one call cost on the device.
struct FrameInfo {
  std::int64_t device_time_start_ns = 0;  // device clock when the first frame started
  std::int64_t device_time_end_ns = 0;    // device clock after the last frame
  std::int64_t frames = 0;                // camera frames taken (linear mode takes several/vector)
  std::int64_t saturated_pixels = 0;      // pixel readings clipped at 2^adc_bits - 1
  double exposure_us = 0.0;               // exposure used
};

/// A batch of binary frames. `inputs` is borrowed: it must outlive the call.
struct TransformRequest {
  std::int64_t n_in = 0;
  std::int64_t n_out = 0;
  std::int64_t batch = 0;
  std::span<const std::uint8_t> inputs;  // batch * packed_bytes(n_in) bytes
  double exposure_us = 0.0;              // 0 = the device default
};

/// Camera frames in the wire layout (see the top of this file).
struct Frames {
  std::int64_t n_out = 0;
  std::int64_t batch = 0;
  int adc_bits = 8;
  std::vector<std::uint8_t> data;  // batch * n_out * bytes_per_pixel()
  FrameInfo info;

  int bytes_per_pixel() const { return adc_bits <= 8 ? 1 : 2; }
  /// Count of `pixel` in frame `sample`.
  std::uint32_t count(std::int64_t sample, std::int64_t pixel) const {
    const std::size_t index = static_cast<std::size_t>(sample * n_out + pixel);
    if (bytes_per_pixel() == 1) return data[index];
    return static_cast<std::uint32_t>(data[2 * index]) |
           (static_cast<std::uint32_t>(data[2 * index + 1]) << 8);
  }
  /// All counts as floats, n_out x batch (one frame per column).
  Eigen::MatrixXf to_float() const;
};

/// How a real-valued vector becomes binary frames (docs/design.md §2.8).
enum class Encoding : int {
  kTernary = 1,     // v -> (v+ > t, v- > t), decoded mass-preserving; 2 signs x 2 frames
  kBitplanes = 2,   // |v| quantised to `bitplanes` bits per sign; 2 signs x planes x 2 frames
  kStochastic = 3,  // |v| stochastically rounded to `bitplanes` bits per sign: unbiased
};

std::string_view encoding_name(Encoding encoding);
/// "ternary", "bitplanes" or "stochastic"; anything else is INVALID_ARGUMENT naming it.
Result<Encoding> parse_encoding(std::string_view name);

/// Most reference frames one linear call may average (half a second of device time at 2 kHz).
inline constexpr int kMaxReferenceRepeats = 1024;

struct LinearOptions {
  Encoding encoding = Encoding::kTernary;
  /// Ternary: a component is "on" when |v_i| > threshold * max_i |v_i| (per sample), in [0, 1).
  /// Below 1/9 every 10-class softmax error keeps its largest competitor (docs/design.md §2.8).
  float threshold = 0.1F;
  /// Bit-planes per sign, in [1, 16] (kBitplanes, kStochastic).
  int bitplanes = 4;
  /// kStochastic: the rounding draws are a pure function of (dither_seed, the sample's values),
  /// so a call is reproducible (local == remote, any chunking) while different vectors, or the
  /// same vector under another seed, get independent draws.
  std::uint64_t dither_seed = 0;
  /// Codes that are bit for bit identical within one call (e.g. the one-hot true-class code of
  /// every softmax error of a class) are measured once and their frames shared: fewer frames,
  /// at the price of noise that is common to the samples sharing them.
  bool share_frames = false;
  /// Each measured code's two frames are taken this many times and averaged, in [1, 64]: camera
  /// noise variance / repeats, for repeats times the frames.
  int repeats = 1;
  /// Reference frames averaged for I(r), in [0, kMaxReferenceRepeats]; 0 = the device's default.
  /// The reference's noise is common to every vector of the call, so it does not average out
  /// over a batch the way each code's own noise does: a batch of feedback errors wants many
  /// (docs/camera-gap.md).
  int reference_repeats = 0;
  /// Device seconds a measured I(r) (and the dark level) serves later calls of the same layout,
  /// finite and >= 0; 0 = every call measures its own. docs/design.md §2.7: I(r) is a property of
  /// the medium, "re-measured when drift demands it": reused, a call spends its frames on codes
  /// only, and the reference's estimation error becomes one fixed offset instead of a fresh
  /// error common to each call's batch. Reuse scales I(r) linearly with exposure.
  double reference_max_age_s = 0.0;
  /// Exposure of every frame of the call, microseconds, in [0, DeviceInfo.max_exposure_us];
  /// 0 = automatic (the device's holographic auto exposure). A calibrated exposure
  /// (opu-calibrate exposure) goes here, so a calibrated device is used as calibrated.
  double exposure_us = 0.0;
};

/// A batch of real vectors to project. `values` is borrowed: it must outlive the call.
struct LinearRequest {
  std::int64_t n_in = 0;   // length of each vector (features, not mirrors)
  std::int64_t n_out = 0;  // length of each projection
  std::int64_t batch = 0;
  std::span<const float> values;  // batch x n_in, sample after sample
  LinearOptions options;
};

/// Projections B·v, n_out x batch (one sample per column). B is fixed by the device's medium and
/// its entries are approximately i.i.d. N(0, 1); masked (too dark) pixels project to exactly 0.
struct Projections {
  Eigen::MatrixXf values;
  FrameInfo info;
};

/// Abstract OPU. See the top of this file for conventions and thread safety.
class Device {
 public:
  virtual ~Device() = default;
  Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  /// Static description; cheap; thread-safe.
  virtual DeviceInfo info() const = 0;

  /// Binary frames -> camera counts |R x|^2 through the camera model.
  Result<Frames> transform(const TransformRequest& request);

  /// Real vectors -> linear random projections, through frames and holography.
  Result<Projections> linear_transform(const LinearRequest& request);

 protected:
  virtual Result<Frames> do_transform(const TransformRequest& request) = 0;
  virtual Result<Projections> do_linear_transform(const LinearRequest& request) = 0;
};

/// The checks transform() applies, for servers that validate before they dispatch.
Status validate(const TransformRequest& request, const DeviceInfo& info);
/// The checks linear_transform() applies.
Status validate(const LinearRequest& request, const DeviceInfo& info);

}  // namespace opu::sim
