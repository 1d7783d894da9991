#include "opu_sim/holography.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <unordered_map>

#include "hash.h"
#include "opu_sim/packing.h"

namespace opu::sim {
namespace {

using CodeBits = Eigen::Matrix<std::uint8_t, -1, -1>;

// Ternary code of one sample: (v > t) and (v < -t) with t = threshold * max |v|, decoded with
// per-sign weights that keep each sign's mass (docs/design.md §2.8): the decoded vector keeps the
// sum of v (zero for a softmax cross-entropy error) and its magnitude.
void encode_ternary(const Eigen::Ref<const Eigen::VectorXf>& v, float threshold, CodeBits& bits,
                    Eigen::Ref<Eigen::VectorXf> weights, std::int64_t column) {
  const float cut = threshold * v.cwiseAbs().maxCoeff();
  double mass_plus = 0.0;
  double mass_minus = 0.0;
  std::int64_t ones_plus = 0;
  std::int64_t ones_minus = 0;
  for (std::int64_t i = 0; i < v.size(); ++i) {
    const float x = v(i);
    if (x > 0.0F) mass_plus += x;
    if (x < 0.0F) mass_minus -= x;
    const bool plus = x > cut && x > 0.0F;
    const bool minus = x < -cut && x < 0.0F;
    bits(i, column) = plus ? 1 : 0;
    bits(i, column + 1) = minus ? 1 : 0;
    ones_plus += plus ? 1 : 0;
    ones_minus += minus ? 1 : 0;
  }
  weights(0) = ones_plus > 0 ? static_cast<float>(mass_plus / static_cast<double>(ones_plus)) : 0;
  weights(1) =
      ones_minus > 0 ? -static_cast<float>(mass_minus / static_cast<double>(ones_minus)) : 0;
}

// Bit-plane code: |v_i| / max|v| rounded to `planes` bits per sign by `round_level` (to nearest,
// or stochastically); plane k (most significant first) weighs max|v| 2^(planes-1-k) / (2^planes -
// 1). Decoding gives the rounded v exactly.
template <typename RoundLevel>
void encode_planes(const Eigen::Ref<const Eigen::VectorXf>& v, int planes, CodeBits& bits,
                   Eigen::Ref<Eigen::VectorXf> weights, std::int64_t column,
                   RoundLevel round_level) {
  const float max_abs = v.cwiseAbs().maxCoeff();
  const double levels = std::ldexp(1.0, planes) - 1.0;
  for (std::int64_t i = 0; i < v.size(); ++i) {
    const double scaled = max_abs > 0.0F ? std::abs(v(i)) / max_abs * levels : 0.0;
    const std::uint32_t q = round_level(scaled, i);
    for (int k = 0; k < planes; ++k) {
      const bool bit = ((q >> (planes - 1 - k)) & 1U) != 0;
      bits(i, column + k) = (bit && v(i) > 0.0F) ? 1 : 0;
      bits(i, column + planes + k) = (bit && v(i) < 0.0F) ? 1 : 0;
    }
  }
  for (int k = 0; k < planes; ++k) {
    const auto weight = static_cast<float>(max_abs * std::ldexp(1.0, planes - 1 - k) / levels);
    weights(k) = weight;
    weights(planes + k) = -weight;
  }
}

void encode_bitplanes(const Eigen::Ref<const Eigen::VectorXf>& v, int planes, CodeBits& bits,
                      Eigen::Ref<Eigen::VectorXf> weights, std::int64_t column) {
  encode_planes(v, planes, bits, weights, column, [](double scaled, std::int64_t) {
    return static_cast<std::uint32_t>(std::lround(scaled));
  });
}

// The key of a sample's rounding draws: its values' bits mixed with the caller's seed, so the
// draws depend on nothing else (not the sample's position in the batch, nor the chunking).
std::uint64_t dither_key(const Eigen::Ref<const Eigen::VectorXf>& v, std::uint64_t seed) {
  std::uint64_t key = detail::splitmix64(seed ^ 0x5354'4F43'4841'5354ULL);  // "STOCHAST"
  for (std::int64_t i = 0; i < v.size(); ++i) {
    key = detail::splitmix64(key ^ std::bit_cast<std::uint32_t>(v(i)));
  }
  return key;
}

// Stochastic rounding (dithering): level floor(s) + 1 with probability frac(s), so every
// component's expected decoded value is exactly v_i. Deterministic codes are biased (ternary
// moves sub-threshold mass onto the selected components), and DFA follows that bias instead of
// settling (docs/camera-gap.md); an unbiased code only adds zero-mean noise, which DFA averages.
void encode_stochastic(const Eigen::Ref<const Eigen::VectorXf>& v, int planes, std::uint64_t seed,
                       CodeBits& bits, Eigen::Ref<Eigen::VectorXf> weights, std::int64_t column) {
  const std::uint64_t key = dither_key(v, seed);
  encode_planes(v, planes, bits, weights, column, [key](double scaled, std::int64_t i) {
    const double floor = std::floor(scaled);
    const double u = detail::uniform_open(detail::splitmix64(key + static_cast<std::uint64_t>(i)));
    return static_cast<std::uint32_t>(floor) + (u < scaled - floor ? 1U : 0U);
  });
}

// Patterns over block columns (features, then the reference bit), built frame by frame.
class PatternBatch {
 public:
  explicit PatternBatch(const HolographyLayout& layout)
      : reference_bit_(layout.n_features),
        code_bytes_(packed_bytes(layout.n_features)),
        frame_bytes_(packed_bytes(block_columns(layout))) {}

  /// Appends one frame: the code's features (none when `code` is null), plus the reference.
  void add(const std::uint8_t* code, bool with_reference) {
    const std::size_t start = packed_.size();
    packed_.resize(start + static_cast<std::size_t>(frame_bytes_), 0);
    if (code != nullptr) {
      std::copy(code, code + code_bytes_, packed_.begin() + static_cast<std::ptrdiff_t>(start));
    }
    if (with_reference) {
      packed_[start + static_cast<std::size_t>(reference_bit_ >> 3)] |=
          static_cast<std::uint8_t>(1U << (reference_bit_ & 7));
    }
    ++frames_;
  }
  std::span<const std::uint8_t> packed() const { return packed_; }
  std::int64_t frames() const { return frames_; }

 private:
  std::int64_t reference_bit_;
  std::int64_t code_bytes_;   // a code frame: its bits past n_features are zero (pack_frames)
  std::int64_t frame_bytes_;  // a block-column frame: one bit more
  std::vector<std::uint8_t> packed_;
  std::int64_t frames_ = 0;
};

void accumulate(FrameInfo& total, const FrameInfo& part, bool first) {
  if (first) total.device_time_start_ns = part.device_time_start_ns;
  total.device_time_end_ns = part.device_time_end_ns;
  total.frames += part.frames;
  total.saturated_pixels += part.saturated_pixels;
  total.exposure_us = part.exposure_us;
}

// The exposure that puts the mean (x + r) frame at config.target_fill of full scale, from the
// reference's counts above dark at a known exposure (a probe at the default exposure, or a stored
// reference per µs): intensity grows linearly with the mirrors that are on (speckle of independent
// columns) and with exposure.
Result<double> choose_exposure(double reference_counts, double at_exposure_us,
                               const DeviceInfo& info, const HolographyConfig& config,
                               const HolographyLayout& layout, double mean_mirrors_on) {
  if (!(reference_counts > 0.0)) {
    return failed_precondition(
        "LinearTransform: the reference reads " + std::to_string(reference_counts) +
        " counts above dark at the default exposure, want > 0 (camera too dark or blind)");
  }
  const double full_scale = std::ldexp(1.0, info.adc_bits) - 1.0;
  const double per_mirror = reference_counts / static_cast<double>(layout.reference_mirrors());
  const double exposure =
      at_exposure_us * config.target_fill * full_scale / (per_mirror * mean_mirrors_on);
  const double longest = info.max_exposure_us > 0.0 ? info.max_exposure_us : exposure;
  return std::clamp(exposure, 1.0, longest);
}

// Calls f(pixel) for every calibration-masked pixel below n_out (the mask is sorted and covers
// the whole camera; a call reads only its first n_out pixels).
template <typename F>
void for_each_masked_pixel(const std::vector<std::int64_t>& masked, std::int64_t n_out, F f) {
  for (const std::int64_t pixel : masked) {
    if (pixel >= n_out) break;
    f(pixel);
  }
}

// A code that lights something, and the first of its frames: (x + r, x) pairs, `repeats` times.
struct ActiveCode {
  std::int64_t sample = 0;
  std::int64_t code = 0;
  std::int64_t frame = 0;
};

struct CodeFrames {
  std::vector<ActiveCode> active;
  double mean_mirrors_on = 0.0;  // over the measured (x + r) frames, for the auto exposure
};

// Appends `repeats` pairs of frames (x + r, x) per code that lights something, or per distinct
// such code when `share` is set, and says which frames each code reads.
CodeFrames plan_code_frames(const BinaryCode& code, const HolographyLayout& layout, bool share,
                            int repeats, PatternBatch& frames) {
  const std::int64_t code_bytes = packed_bytes(code.n_features);
  std::unordered_map<std::string_view, std::int64_t> measured;  // code bits -> first frame
  CodeFrames plan;
  std::int64_t measured_codes = 0;
  for (std::int64_t s = 0; s < code.batch; ++s) {
    for (std::int64_t c = 0; c < code.codes_per_sample; ++c) {
      const std::uint8_t* bits = code.packed.data() + (s * code.codes_per_sample + c) * code_bytes;
      const std::int64_t ones =
          count_ones({bits, static_cast<std::size_t>(code_bytes)}, code.n_features);
      if (code.weights(c, s) == 0.0F || ones == 0) continue;
      const std::string_view key(reinterpret_cast<const char*>(bits),
                                 static_cast<std::size_t>(code_bytes));
      if (share) {
        if (const auto found = measured.find(key); found != measured.end()) {
          plan.active.push_back({s, c, found->second});
          continue;
        }
      }
      const std::int64_t frame = frames.frames();
      if (share) measured.emplace(key, frame);
      plan.active.push_back({s, c, frame});
      for (int r = 0; r < repeats; ++r) {
        frames.add(bits, true);
        frames.add(bits, false);
      }
      plan.mean_mirrors_on +=
          static_cast<double>(ones * layout.factor + layout.reference_mirrors());
      ++measured_codes;
    }
  }
  if (measured_codes > 0) plan.mean_mirrors_on /= static_cast<double>(measured_codes);
  return plan;
}

// The exposure of a call's frames: the request's calibrated one; else the automatic one, from the
// stored reference or from a probe pair (dark, reference) at the default exposure whose frames
// are added to `cost`; else (no auto exposure, or no code to measure) the device's default.
Result<double> call_exposure(const LinearRequest& request, const DeviceInfo& info,
                             const HolographyConfig& config, const HolographyLayout& layout,
                             const CodeFrames& plan, const std::optional<MeasuredReference>& stored,
                             const FrameCapture& capture, FrameInfo& cost) {
  if (request.options.exposure_us > 0.0) return request.options.exposure_us;
  if (!(config.target_fill > 0.0) || plan.active.empty()) return info.exposure_us;
  if (stored) {
    return choose_exposure(stored->per_us.cast<double>().mean(), 1.0, info, config, layout,
                           plan.mean_mirrors_on);
  }
  PatternBatch probe(layout);
  probe.add(nullptr, false);
  probe.add(nullptr, true);
  Result<CapturedFrames> probed =
      capture(probe.packed(), probe.frames(), request.n_out, info.exposure_us, layout);
  if (!probed.ok()) return probed.status();
  accumulate(cost, probed->info, cost.frames == 0);
  const double reference_counts =
      probed->counts.col(1).cast<double>().mean() - probed->counts.col(0).cast<double>().mean();
  return choose_exposure(reference_counts, probed->info.exposure_us, info, config, layout,
                         plan.mean_mirrors_on);
}

}  // namespace

Result<HolographyLayout> HolographyLayout::fit(std::int64_t n_features, std::int64_t max_n_in,
                                               int reference_blocks) {
  if (reference_blocks < 1) {
    return invalid_argument("holography: reference_blocks is " + std::to_string(reference_blocks) +
                            ", want >= 1");
  }
  const std::int64_t blocks = n_features + reference_blocks;
  if (n_features < 1 || blocks > max_n_in) {
    return out_of_range("LinearTransform: n_in " + std::to_string(n_features) + " needs " +
                        std::to_string(blocks) + " mirrors with its " +
                        std::to_string(reference_blocks) + "-block reference, device max_n_in is " +
                        std::to_string(max_n_in));
  }
  const std::int64_t factor = max_n_in / blocks;
  return HolographyLayout{n_features, factor, reference_blocks, blocks * factor};
}

Eigen::MatrixXf BinaryCode::decode() const {
  Eigen::MatrixXf decoded = Eigen::MatrixXf::Zero(n_features, batch);
  const std::int64_t bytes = packed_bytes(n_features);
  for (std::int64_t s = 0; s < batch; ++s) {
    for (std::int64_t c = 0; c < codes_per_sample; ++c) {
      const std::uint8_t* code = packed.data() + (s * codes_per_sample + c) * bytes;
      for (std::int64_t i = 0; i < n_features; ++i) {
        if (frame_bit(code, i)) decoded(i, s) += weights(c, s);
      }
    }
  }
  return decoded;
}

Result<BinaryCode> encode(const Eigen::Ref<const Eigen::MatrixXf>& values,
                          const LinearOptions& options) {
  if (!values.allFinite()) return invalid_argument("encode: values contain NaN or infinity");
  BinaryCode code;
  code.n_features = values.rows();
  code.batch = values.cols();
  code.codes_per_sample =
      options.encoding == Encoding::kTernary ? 2 : 2 * std::int64_t{options.bitplanes};
  CodeBits bits(code.n_features, code.batch * code.codes_per_sample);
  code.weights.resize(code.codes_per_sample, code.batch);
  for (std::int64_t s = 0; s < code.batch; ++s) {
    const std::int64_t column = s * code.codes_per_sample;
    switch (options.encoding) {
      case Encoding::kBitplanes:
        encode_bitplanes(values.col(s), options.bitplanes, bits, code.weights.col(s), column);
        break;
      case Encoding::kStochastic:
        encode_stochastic(values.col(s), options.bitplanes, options.dither_seed, bits,
                          code.weights.col(s), column);
        break;
      case Encoding::kTernary:
        encode_ternary(values.col(s), options.threshold, bits, code.weights.col(s), column);
        break;
    }
  }
  code.packed = pack_frames(bits);
  return code;
}

FrameCapture device_frame_capture(Device& device) {
  return [&device](std::span<const std::uint8_t> patterns, std::int64_t batch, std::int64_t n_out,
                   double exposure_us, const HolographyLayout& layout) -> Result<CapturedFrames> {
    // Feature blocks and the reference are both runs of `factor` mirrors: format the block
    // columns as n_features + reference_blocks features, the reference bit driving its blocks.
    const std::int64_t columns = block_columns(layout);
    const std::int64_t blocks = layout.n_features + layout.reference_blocks;
    CodeBits expanded = CodeBits::Zero(blocks, batch);
    for (std::int64_t b = 0; b < batch; ++b) {
      const std::uint8_t* pattern = patterns.data() + b * packed_bytes(columns);
      for (std::int64_t k = 0; k < layout.n_features; ++k) expanded(k, b) = frame_bit(pattern, k);
      if (frame_bit(pattern, layout.n_features)) {
        expanded.col(b).tail(layout.reference_blocks).setOnes();
      }
    }
    const Formatting formatting{blocks, layout.n_mirrors, layout.factor, 0};
    const std::vector<std::uint8_t> mirrors = formatting.apply(pack_frames(expanded), batch);
    TransformRequest request{layout.n_mirrors, n_out, batch, mirrors, exposure_us};
    Result<Frames> frames = device.transform(request);
    if (!frames.ok()) return frames.status();
    return CapturedFrames{frames->to_float(), frames->info};
  };
}

std::optional<MeasuredReference> ReferenceCache::find(const HolographyLayout& layout,
                                                      std::int64_t n_out, int frames,
                                                      std::int64_t max_age_ns) const {
  const std::int64_t now_ns = clock_ ? clock_() : 0;
  std::lock_guard lock(mutex_);
  const auto found = references_.find(key(layout, n_out));
  if (found == references_.end()) return std::nullopt;
  const MeasuredReference& stored = found->second;
  const std::int64_t age_ns = std::max(now_ns, stored.seen_ns) - stored.measured_ns;
  if (stored.frames < frames || age_ns > max_age_ns) {
    return std::nullopt;
  }
  return stored;
}

void ReferenceCache::store(const HolographyLayout& layout, std::int64_t n_out,
                           MeasuredReference reference) {
  std::lock_guard lock(mutex_);
  references_.insert_or_assign(key(layout, n_out), std::move(reference));
}

void ReferenceCache::seen(const HolographyLayout& layout, std::int64_t n_out, std::int64_t now_ns) {
  std::lock_guard lock(mutex_);
  if (auto found = references_.find(key(layout, n_out)); found != references_.end()) {
    found->second.seen_ns = std::max(found->second.seen_ns, now_ns);
  }
}

Result<Projections> linear_transform_from_frames(const LinearRequest& request,
                                                 const DeviceInfo& info,
                                                 const HolographyConfig& config,
                                                 const FrameCapture& capture,
                                                 ReferenceCache* cache) {
  Result<HolographyLayout> fitted =
      HolographyLayout::fit(request.n_in, info.max_n_in, config.reference_blocks);
  if (!fitted.ok()) return fitted.status();
  const HolographyLayout layout = *fitted;
  const Eigen::Map<const Eigen::MatrixXf> values(request.values.data(), request.n_in,
                                                 request.batch);
  Result<BinaryCode> encoded = encode(values, request.options);
  if (!encoded.ok()) return encoded.status();
  const BinaryCode& code = *encoded;

  const int repeats =
      std::max(1, request.options.reference_repeats > 0 ? request.options.reference_repeats
                                                        : config.reference_repeats);
  const auto max_age_ns =
      static_cast<std::int64_t>(std::llround(request.options.reference_max_age_s * 1e9));
  ReferenceCache* const reuse = max_age_ns > 0 ? cache : nullptr;
  const std::optional<MeasuredReference> stored =
      reuse != nullptr ? reuse->find(layout, request.n_out, repeats, max_age_ns) : std::nullopt;

  // Codes that light nothing project to exactly 0 (L(0) = 0): no frames are spent on them.
  PatternBatch frames(layout);
  if (!stored) {
    frames.add(nullptr, false);  // dark frame
    for (int r = 0; r < repeats; ++r) frames.add(nullptr, true);
  }
  const CodeFrames plan =
      plan_code_frames(code, layout, request.options.share_frames, request.options.repeats, frames);
  Projections result;
  result.values = Eigen::MatrixXf::Zero(request.n_out, request.batch);
  if (frames.frames() == 0) return result;
  Result<double> exposure =
      call_exposure(request, info, config, layout, plan, stored, capture, result.info);
  if (!exposure.ok()) return exposure.status();
  Result<CapturedFrames> captured =
      capture(frames.packed(), frames.frames(), request.n_out, *exposure, layout);
  if (!captured.ok()) return captured.status();
  accumulate(result.info, captured->info, result.info.frames == 0);
  const Eigen::MatrixXf& counts = captured->counts;

  // I(r) per pixel above the dark level, measured now or stored (scaled to this exposure).
  const float dark = stored ? stored->dark : counts.col(0).mean();
  const Eigen::VectorXf reference =
      stored ? Eigen::VectorXf(stored->per_us * static_cast<float>(*exposure))
             : Eigen::VectorXf(
                   (counts.middleCols(1, repeats).rowwise().mean().array() - dark).matrix());
  const float mean_reference = reference.mean();
  // Unit-variance B: L / sqrt(gain) / sqrt(factor / n_in), with the gain estimated from the mean
  // reference intensity (E|R r|^2 = 2 reference_mirrors / n_in); n_in and factor cancel. A
  // reference so faint that this overflows (an ideal camera's float counts at an exposure of
  // 1e-37 us) cannot be linearised any more than a dark one.
  const float scale =
      std::sqrt(2.0F * static_cast<float>(layout.reference_blocks) / mean_reference);
  if (!(mean_reference > 0.0F) || !std::isfinite(scale)) {
    return failed_precondition("LinearTransform: the reference reads " +
                               std::to_string(mean_reference) +
                               " counts above dark, want > 0 (exposure too short?)");
  }
  if (reuse != nullptr) {
    if (!stored) {
      reuse->store(layout, request.n_out,
                   {reference / static_cast<float>(*exposure), dark, repeats,
                    captured->info.device_time_start_ns, captured->info.device_time_start_ns});
    }
    reuse->seen(layout, request.n_out, captured->info.device_time_end_ns);
  }
  // Pixels too dark to divide by are masked.
  const float cut = static_cast<float>(config.dark_pixel_fraction) * mean_reference;
  Eigen::VectorXf inverse_norm = reference.unaryExpr([cut](float intensity) {
    return intensity > cut && intensity > 0.0F ? 0.5F / std::sqrt(intensity) : 0.0F;
  });
  for_each_masked_pixel(config.masked_pixels, request.n_out,
                        [&inverse_norm](std::int64_t pixel) { inverse_norm(pixel) = 0.0F; });
  const int code_repeats = request.options.repeats;
  Eigen::ArrayXf difference(request.n_out);
  for (const ActiveCode& active : plan.active) {
    difference.setZero();
    for (int r = 0; r < code_repeats; ++r) {
      difference +=
          counts.col(active.frame + 2 * r).array() - counts.col(active.frame + 2 * r + 1).array();
    }
    const float weight = code.weights(active.code, active.sample) * scale;
    result.values.col(active.sample).array() +=
        weight * (difference / static_cast<float>(code_repeats) - reference.array()) *
        inverse_norm.array();
  }
  return result;
}

Eigen::MatrixXf holographic_matrix(const Eigen::Ref<const Eigen::MatrixXcf>& blocks,
                                   const HolographyLayout& layout, const HolographyConfig& config) {
  const std::int64_t n = layout.n_features;
  const Eigen::VectorXcf reference = blocks.col(n);
  const Eigen::VectorXf intensity = reference.cwiseAbs2();
  const float mean_reference = intensity.mean();
  const float cut = static_cast<float>(config.dark_pixel_fraction) * mean_reference;
  const float scale =
      std::sqrt(2.0F * static_cast<float>(layout.reference_blocks) / mean_reference);
  Eigen::MatrixXf matrix = Eigen::MatrixXf::Zero(blocks.rows(), n);
  for (std::int64_t j = 0; j < blocks.rows(); ++j) {
    if (!(intensity(j) > cut && intensity(j) > 0.0F)) continue;
    // Re(exp(-i θ_j) C_jk) = Re(conj(r_j) C_jk) / |r_j|
    const std::complex<float> phase = std::conj(reference(j)) / std::sqrt(intensity(j));
    for (std::int64_t k = 0; k < n; ++k) matrix(j, k) = scale * (phase * blocks(j, k)).real();
  }
  for_each_masked_pixel(config.masked_pixels, matrix.rows(),
                        [&matrix](std::int64_t pixel) { matrix.row(pixel).setZero(); });
  return matrix;
}

}  // namespace opu::sim
