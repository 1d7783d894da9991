// Linear projections from an intensity-only device (docs/design.md §2.7, §2.8).
//
// The camera sees |R x|^2, not R x. A fixed binary reference pattern r on mirrors disjoint from the
// data gives, per pixel j,
//     L_j(x) = (I(x + r) - I(x) - I(r)) / (2 sqrt(I(r)))  =  Re(exp(-i θ_j) (R x)_j),
// exactly linear in x, with a real i.i.d. Gaussian matrix. Real vectors are encoded into binary
// frames (thresholded ternary, bit-planes, or stochastically rounded bit-planes: the one unbiased
// code), each code frame costs two camera frames (times `repeats`, unless an identical code of
// the call is already measured and frames are shared), and the per-sample decoding weights turn
// the binary projections back into B·v.
//
// Layout over the mirror array: n feature blocks of `factor` mirrors each, then the reference:
// `reference_blocks` blocks of the same size. Everything here is computed from camera counts, so
// noise and quantisation reach the projection exactly as they would on hardware.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <tuple>
#include <vector>

#include "opu_sim/device.h"
#include "opu_sim/status.h"

namespace opu::sim {

struct HolographyConfig {
  /// Reference power in feature blocks (docs/design.md: about 5-10x one block works best).
  int reference_blocks = 8;
  /// Pixels whose reference intensity is below this fraction of the mean are masked (output 0):
  /// dividing by sqrt(I(r)) would amplify their noise without bound.
  double dark_pixel_fraction = 0.02;
  /// Automatic exposure: the mean count of the brightest code frames (x + r) is put at this
  /// fraction of full scale (docs/design.md §2.8: about 15% at 8 bits).
  /// 0 = use the request/default.
  double target_fill = 0.15;
  /// Camera frames of the reference averaged per call for I(r).
  int reference_repeats = 1;
  /// Pixels masked by a calibration (too dark, or always saturated: opu-calibrate exposure),
  /// sorted, each >= 0: their projections are exactly 0, like dark pixels. Indices at or beyond a
  /// request's n_out are ignored (n_out is per request; the mask describes the whole camera).
  std::vector<std::int64_t> masked_pixels;
};

/// Where the mirrors of one linear call go.
struct HolographyLayout {
  std::int64_t n_features = 0;
  std::int64_t factor = 0;            // mirrors per feature block
  std::int64_t reference_blocks = 0;  // reference size, in blocks
  std::int64_t n_mirrors = 0;         // mirrors of the frames sent to the device

  std::int64_t reference_mirrors() const { return reference_blocks * factor; }
  /// Uses the whole mirror array: factor = floor(max_n_in / (n_features + reference_blocks)).
  static Result<HolographyLayout> fit(std::int64_t n_features, std::int64_t max_n_in,
                                      int reference_blocks);
};

/// Binary code of a batch of real vectors: `codes` frames over the n features, each with a weight;
/// sample s's vector is approximated by sum_c weight(c, s) * code(c, s).
struct BinaryCode {
  std::int64_t n_features = 0;
  std::int64_t batch = 0;
  std::int64_t codes_per_sample = 0;  // 2 (ternary) or 2 * bitplanes
  std::vector<std::uint8_t> packed;   // (batch * codes_per_sample) frames over n_features
  Eigen::MatrixXf weights;            // codes_per_sample x batch
  /// The decoded vectors sum_c weight * code (n_features x batch), for tests and studies.
  Eigen::MatrixXf decode() const;
};

/// Encodes vectors (n x batch) with the chosen scheme. Rejects NaN/inf naming the index.
Result<BinaryCode> encode(const Eigen::Ref<const Eigen::MatrixXf>& values,
                          const LinearOptions& options);

/// Block columns of a layout: n_features feature blocks, then the reference as one column.
inline std::int64_t block_columns(const HolographyLayout& layout) { return layout.n_features + 1; }

/// Camera frames as floats (n_out x frames) and what they cost. Counts are integers from a real
/// or noisy camera; the simulator's ideal camera hands over unquantised values in-process.
struct CapturedFrames {
  Eigen::MatrixXf counts;
  FrameInfo info;
};

/// Takes camera frames of binary patterns over a layout's block columns: what the linearisation
/// needs from a device. `patterns` holds `batch` packed frames of block_columns(layout) bits; a set
/// bit lights every mirror of that block. The simulator answers from its block-summed matrix; any
/// other device through device_frame_capture().
using FrameCapture = std::function<Result<CapturedFrames>(
    std::span<const std::uint8_t> patterns, std::int64_t batch, std::int64_t n_out,
    double exposure_us, const HolographyLayout& layout)>;

/// A FrameCapture that formats block patterns onto mirrors and calls device.transform().
FrameCapture device_frame_capture(Device& device);

/// A measured reference: what linear calls reuse when LinearOptions.reference_max_age_s allows.
struct MeasuredReference {
  Eigen::VectorXf per_us;        // I(r) above the dark level per pixel, counts per µs of exposure
  float dark = 0.0F;             // the dark level, counts
  int frames = 0;                // reference frames averaged
  std::int64_t measured_ns = 0;  // device time of the measurement
  std::int64_t seen_ns = 0;      // device time at the end of the last call that used it
};

/// I(r) kept between the linear calls of one device, per layout and n_out. Thread-safe.
class ReferenceCache {
 public:
  /// `clock` reads the device's time now (ns); without one, a reference's age is judged at the
  /// end of the last call that used it (calls in between that took other frames do not count).
  explicit ReferenceCache(std::function<std::int64_t()> clock = {}) : clock_(std::move(clock)) {}

  /// The stored reference, if it averaged at least `frames` frames and, judged at the end of its
  /// last use, was measured at most max_age_ns of device time before.
  std::optional<MeasuredReference> find(const HolographyLayout& layout, std::int64_t n_out,
                                        int frames, std::int64_t max_age_ns) const;
  void store(const HolographyLayout& layout, std::int64_t n_out, MeasuredReference reference);
  /// Records that a call ended at device time `now_ns` with the stored reference.
  void seen(const HolographyLayout& layout, std::int64_t n_out, std::int64_t now_ns);

 private:
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t>;
  static Key key(const HolographyLayout& layout, std::int64_t n_out) {
    return {layout.n_features, layout.factor, layout.reference_blocks, n_out};
  }
  std::function<std::int64_t()> clock_;
  mutable std::mutex mutex_;
  std::map<Key, MeasuredReference> references_;  // guarded by mutex_
};

/// The whole linear transform from raw frames: encode, format, capture the frames (reference,
/// then x + r and x per code), linearise, decode. Used by the simulator and, when a server answers
/// LinearTransform with UNIMPLEMENTED, by the remote client on top of Transform. With a cache and
/// request.options.reference_max_age_s > 0, a fresh enough stored reference replaces the dark,
/// reference and exposure-probe frames.
Result<Projections> linear_transform_from_frames(const LinearRequest& request,
                                                 const DeviceInfo& info,
                                                 const HolographyConfig& config,
                                                 const FrameCapture& capture,
                                                 ReferenceCache* cache = nullptr);

/// The real matrix B (n_out x n_features) that holography realises on a medium whose block-summed
/// columns are `blocks` (n_out x block_columns: feature blocks, then the reference): row j is
/// Re(exp(-i θ_j) C_j·) with θ_j the reference phase, scaled to unit variance exactly as the
/// linearisation scales it, and rows of masked (dark) pixels zero. The exact digital projector.
Eigen::MatrixXf holographic_matrix(const Eigen::Ref<const Eigen::MatrixXcf>& blocks,
                                   const HolographyLayout& layout, const HolographyConfig& config);

}  // namespace opu::sim
