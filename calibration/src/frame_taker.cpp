#include "calibration/frame_taker.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "opu_sim/packing.h"

namespace opu::calibration {
namespace {

// Frames per device call: large enough that the per-call cost vanishes (remote calls cost ~100 µs),
// small enough that progress moves and a message stays far below gRPC's limits
// (1024 x 4096 pixels x 2 bytes = 8 MiB).
constexpr std::int64_t kChunkFrames = 1024;

}  // namespace

FrameTaker::FrameTaker(sim::Device& device, Progress progress)
    : device_(device), info_(device.info()), progress_(std::move(progress)) {}

double FrameTaker::full_scale() const {
  return static_cast<double>((std::uint32_t{1} << info_.adc_bits) - 1U);
}

Result<Counts> FrameTaker::take(const Eigen::Ref<const BitMatrix>& bits, std::int64_t n_out,
                                double exposure_us, std::string_view stage) {
  const std::int64_t n_in = bits.rows();
  const std::int64_t batch = bits.cols();
  Counts counts;
  counts.values.resize(n_out, batch);
  counts.saturated.resize(n_out, batch);
  const std::int64_t chunk = std::max<std::int64_t>(
      1, std::min(kChunkFrames, info_.max_batch > 0 ? info_.max_batch : kChunkFrames));
  const double full = full_scale();
  for (std::int64_t start = 0; start < batch; start += chunk) {
    const std::int64_t count = std::min(chunk, batch - start);
    const std::vector<std::uint8_t> packed = sim::pack_frames(bits.middleCols(start, count));
    sim::TransformRequest request;
    request.n_in = n_in;
    request.n_out = n_out;
    request.batch = count;
    request.inputs = packed;
    request.exposure_us = exposure_us;
    Result<sim::Frames> frames = device_.transform(request);
    if (!frames.ok()) {
      return frames.status().with_context(std::string(stage) + ": frames " + std::to_string(start) +
                                          ".." + std::to_string(start + count));
    }
    if (frames->n_out != n_out || frames->batch != count) {
      return internal_error(std::string(stage) + ": device returned " +
                            std::to_string(frames->batch) + " x " + std::to_string(frames->n_out) +
                            " counts, want " + std::to_string(count) + " x " +
                            std::to_string(n_out));
    }
    counts.values.middleCols(start, count) = frames->to_float();
    counts.saturated.middleCols(start, count) =
        counts.values.middleCols(start, count).array() >= static_cast<float>(full);
    if (start == 0) counts.device_time_start_ns = frames->info.device_time_start_ns;
    counts.device_time_end_ns = frames->info.device_time_end_ns;
    frames_ += frames->info.frames > 0 ? frames->info.frames : count;
    device_time_ns_ += frames->info.device_time_end_ns - frames->info.device_time_start_ns;
    clock_ns_ = frames->info.device_time_end_ns;
    if (progress_) progress_(stage, start + count, batch);
  }
  return counts;
}

double pearson(const Eigen::Ref<const Eigen::ArrayXd>& a,
               const Eigen::Ref<const Eigen::ArrayXd>& b) {
  OPU_CHECK(a.size() == b.size() && a.size() > 1, "pearson: sizes differ or below 2");
  const Eigen::ArrayXd da = a - a.mean();
  const Eigen::ArrayXd db = b - b.mean();
  const double denominator = std::sqrt((da * da).sum() * (db * db).sum());
  if (denominator <= 0.0) return std::numeric_limits<double>::quiet_NaN();
  return (da * db).sum() / denominator;
}

std::uint64_t PatternRng::next() {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double PatternRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

std::int64_t PatternRng::below(std::int64_t n) {
  return static_cast<std::int64_t>(uniform() * static_cast<double>(n));
}

BitMatrix PatternRng::bernoulli(std::int64_t n, std::int64_t batch, double density) {
  BitMatrix bits(n, batch);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t i = 0; i < n; ++i) bits(i, b) = uniform() < density ? 1 : 0;
  }
  return bits;
}

}  // namespace opu::calibration
