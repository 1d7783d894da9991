#include "opu_sim/sim_device.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <numbers>
#include <thread>
#include <tuple>

#include "camera.h"
#include "hash.h"
#include "opu_sim/medium.h"
#include "opu_sim/packing.h"

namespace opu::sim {
namespace {

// `auto`: dense up to this size; beyond it the structured operator (a streamed dense matrix of
// device size would regenerate 1e12 entries per frame).
constexpr std::size_t kAutoDenseLimitBytes = std::size_t{2} << 30;

// Where the drifting medium is at device time t: R(t) = cos θ R_k + sin θ R_{k+1}
// (docs/design.md §2.5). Every R(t) has exactly the distribution of R, and it is a pure function of
// (seed, t), so replicas agree.
struct DriftPhase {
  std::uint64_t realisation = 0;
  float cos_theta = 1.0F;
  float sin_theta = 0.0F;
};

DriftPhase drift_phase(double drift_tau_s, std::int64_t time_ns) {
  if (drift_tau_s <= 0.0) return {};
  const double periods = static_cast<double>(time_ns) * 1e-9 / drift_tau_s;
  const double k = std::floor(periods);
  const double theta = std::numbers::pi / 2.0 * (periods - k);
  return {static_cast<std::uint64_t>(k), static_cast<float>(std::cos(theta)),
          static_cast<float>(std::sin(theta))};
}

std::uint64_t noise_key(const SimConfig& config) {
  return config.noise_seed != 0 ? detail::splitmix64(config.noise_seed)
                                : detail::splitmix64(config.seed ^ 0x6E6F697365ULL);  // "noise"
}

std::unique_ptr<Medium> make_medium(const SimConfig& config) {
  MediumKind kind = config.medium;
  if (kind == MediumKind::kAuto) {
    kind = dense_matrix_bytes(config.n_in, config.n_out) <= kAutoDenseLimitBytes
               ? MediumKind::kDense
               : MediumKind::kStructured;
  }
  switch (kind) {
    case MediumKind::kStreamed:
      return make_streamed_medium(config.seed, config.n_in, config.n_out);
    case MediumKind::kStructured:
      return make_structured_medium(config.seed, config.n_in, config.n_out, config.fft);
    default:
      return make_dense_medium(config.seed, config.n_in, config.n_out);
  }
}

// Fields of binary patterns over a block matrix's columns (n_out x batch): each frame's field is
// the sum of the columns its bits select, added in column order. The same sums, bit for bit, as a
// product with the patterns' 0/1 matrix, without the multiplications by zero: a code lights a
// few of its ~11 columns.
void add_selected_blocks(const Eigen::MatrixXcf& blocks, const std::uint8_t* pattern,
                         std::int64_t columns, Eigen::Ref<Eigen::VectorXcf> field) {
  for (std::int64_t k = 0; k < columns; ++k) {
    if (frame_bit(pattern, k)) field += blocks.col(k).head(field.size());
  }
}

Eigen::MatrixXcf sum_selected_blocks(const Eigen::MatrixXcf& blocks,
                                     std::span<const std::uint8_t> patterns, std::int64_t columns,
                                     std::int64_t batch, std::int64_t n_out) {
  Eigen::MatrixXcf fields = Eigen::MatrixXcf::Zero(n_out, batch);
  const std::int64_t bytes = packed_bytes(columns);
  for (std::int64_t f = 0; f < batch; ++f) {
    add_selected_blocks(blocks, patterns.data() + f * bytes, columns, fields.col(f));
  }
  return fields;
}

// |field|^2 of sum_selected_blocks() without the complex fields of the whole batch: each
// frame's field is summed in one small buffer (the same additions, the same bits). A pattern
// equal to the one before it (the reference frames of a linear call come in hundreds) copies
// that frame's intensities instead of summing them again.
Eigen::MatrixXf selected_block_intensities(const Eigen::MatrixXcf& blocks,
                                           std::span<const std::uint8_t> patterns,
                                           std::int64_t columns, std::int64_t batch,
                                           std::int64_t n_out) {
  Eigen::MatrixXf intensities(n_out, batch);
  Eigen::VectorXcf field(n_out);
  const std::int64_t bytes = packed_bytes(columns);
  for (std::int64_t f = 0; f < batch; ++f) {
    const std::uint8_t* pattern = patterns.data() + f * bytes;
    if (f > 0 && std::memcmp(pattern, pattern - bytes, static_cast<std::size_t>(bytes)) == 0) {
      intensities.col(f) = intensities.col(f - 1);
      continue;
    }
    field.setZero();
    add_selected_blocks(blocks, pattern, columns, field);
    intensities.col(f) = field.cwiseAbs2();
  }
  return intensities;
}

}  // namespace

struct SimDevice::Impl {
  SimConfig config;
  DeviceInfo info;
  std::unique_ptr<Medium> medium;
  detail::Camera camera;

  mutable std::mutex clock_mutex;
  std::int64_t device_time_ns = 0;  // guarded by clock_mutex
  std::int64_t frames_taken = 0;    // guarded by clock_mutex
  std::chrono::steady_clock::time_point wall_start = std::chrono::steady_clock::now();

  using BlockKey = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::uint64_t>;
  mutable std::mutex block_mutex;
  mutable std::map<BlockKey, std::shared_ptr<const Eigen::MatrixXcf>> block_cache;

  // I(r) between linear calls (LinearOptions.reference_max_age_s), aged by the device clock.
  ReferenceCache reference_cache{[this] {
    std::lock_guard lock(clock_mutex);
    return device_time_ns;
  }};

  explicit Impl(const SimConfig& c)
      : config(c), medium(make_medium(c)), camera(c.camera, noise_key(c)) {
    info.model = "opu-sim " + std::string(medium->name()) + " " + std::to_string(c.n_out) + "x" +
                 std::to_string(c.n_in);
    info.simulated = true;
    info.max_n_in = c.n_in;
    info.max_n_out = c.n_out;
    info.adc_bits = c.camera.adc_bits;
    info.exposure_us = c.camera.exposure_us;
    info.max_exposure_us = c.camera.max_exposure_us;
    info.frametime_us = c.camera.frametime_us(c.camera.exposure_us);
    info.supports_linear = true;
    info.max_batch = c.max_batch;
  }

  struct Reservation {
    std::int64_t start_ns;
    std::int64_t first_frame;
    std::int64_t frametime_ns;
  };

  // Reserves `frames` consecutive frames on the one device timeline: concurrent calls never
  // interleave, and the results are a pure function of (frame index, time).
  Reservation reserve(std::int64_t frames, double exposure_us) {
    const auto frametime_ns =
        static_cast<std::int64_t>(std::llround(config.camera.frametime_us(exposure_us) * 1e3));
    std::lock_guard lock(clock_mutex);
    Reservation reservation{device_time_ns, frames_taken, frametime_ns};
    device_time_ns += frames * frametime_ns;
    frames_taken += frames;
    return reservation;
  }

  void pace(std::int64_t device_end_ns) const {
    if (!config.realtime) return;
    std::this_thread::sleep_until(wall_start + std::chrono::nanoseconds(device_end_ns));
  }

  FrameInfo frame_info(const Reservation& r, std::int64_t frames, double exposure_us,
                       std::int64_t saturated) const {
    return {r.start_ns, r.start_ns + frames * r.frametime_ns, frames, saturated, exposure_us};
  }

  // Fields of frame f at its own device time. Without drift, one product; with drift, one product
  // per realisation the batch touches, mixed per frame.
  template <typename FieldsOf>
  Eigen::MatrixXcf drifting_fields(const Reservation& r, std::int64_t batch,
                                   const FieldsOf& fields_of) const {
    if (config.drift_tau_s <= 0.0) return fields_of(0);
    const auto time_of = [&](std::int64_t f) { return r.start_ns + f * r.frametime_ns; };
    const std::uint64_t k_first = drift_phase(config.drift_tau_s, time_of(0)).realisation;
    const std::uint64_t k_last = drift_phase(config.drift_tau_s, time_of(batch - 1)).realisation;
    std::map<std::uint64_t, Eigen::MatrixXcf> by_realisation;
    for (std::uint64_t k = k_first; k <= k_last + 1; ++k) by_realisation.emplace(k, fields_of(k));
    Eigen::MatrixXcf mixed(by_realisation.begin()->second.rows(), batch);
    for (std::int64_t f = 0; f < batch; ++f) {
      const DriftPhase phase = drift_phase(config.drift_tau_s, time_of(f));
      mixed.col(f) = phase.cos_theta * by_realisation.at(phase.realisation).col(f) +
                     phase.sin_theta * by_realisation.at(phase.realisation + 1).col(f);
    }
    return mixed;
  }

  // C = R·F: the medium's columns summed per block of a holography layout (features, then the
  // reference), n_out x block_columns. Computed through the medium itself, then cached.
  std::shared_ptr<const Eigen::MatrixXcf> block_matrix(const HolographyLayout& layout,
                                                       std::uint64_t realisation) const {
    const BlockKey key{layout.n_features, layout.factor, layout.reference_blocks, realisation};
    {
      std::lock_guard lock(block_mutex);
      if (auto found = block_cache.find(key); found != block_cache.end()) return found->second;
    }
    const std::int64_t columns = block_columns(layout);
    Eigen::Matrix<std::uint8_t, -1, -1> bits =
        Eigen::Matrix<std::uint8_t, -1, -1>::Zero(layout.n_mirrors, columns);
    for (std::int64_t k = 0; k < layout.n_features; ++k) {
      bits.col(k).segment(k * layout.factor, layout.factor).setOnes();
    }
    bits.col(layout.n_features).tail(layout.reference_mirrors()).setOnes();
    const std::vector<std::uint8_t> packed = pack_frames(bits);
    auto blocks = std::make_shared<Eigen::MatrixXcf>();
    medium->fields({packed, layout.n_mirrors, config.n_out, columns, realisation, config.threads},
                   *blocks);
    std::lock_guard lock(block_mutex);
    // Drift moves through realisations; a handful of layouts x 2 realisations is all a run uses.
    if (block_cache.size() >= 16) block_cache.erase(block_cache.begin());
    block_cache.emplace(key, blocks);
    return blocks;
  }

  // Intensities in, camera counts out (in place, as floats): unquantised for the ideal camera,
  // through the full camera model otherwise. Returns saturated readings.
  std::int64_t read_counts(double exposure_us, std::int64_t first_frame,
                           Eigen::MatrixXf& counts) const {
    if (config.camera.ideal) {
      camera.read_float(counts, exposure_us);
      return 0;
    }
    return camera.read_in_place(counts, exposure_us, first_frame, config.threads);
  }

  Result<CapturedFrames> capture_blocks(std::span<const std::uint8_t> patterns, std::int64_t batch,
                                        std::int64_t n_out, double exposure_us,
                                        const HolographyLayout& layout) {
    const Reservation r = reserve(batch, exposure_us);
    CapturedFrames captured;
    if (config.drift_tau_s <= 0.0) {
      captured.counts = selected_block_intensities(*block_matrix(layout, 0), patterns,
                                                   block_columns(layout), batch, n_out);
    } else {
      captured.counts = drifting_fields(r, batch, [&](std::uint64_t k) {
                          return sum_selected_blocks(*block_matrix(layout, k), patterns,
                                                     block_columns(layout), batch, n_out);
                        }).cwiseAbs2();
    }
    const std::int64_t saturated = read_counts(exposure_us, r.first_frame, captured.counts);
    captured.info = frame_info(r, batch, exposure_us, saturated);
    pace(captured.info.device_time_end_ns);
    return captured;
  }

  Eigen::MatrixXcf transform_fields(const TransformRequest& request, const Reservation& r) const {
    return drifting_fields(r, request.batch, [&](std::uint64_t k) {
      Eigen::MatrixXcf out;
      medium->fields(
          {request.inputs, request.n_in, request.n_out, request.batch, k, config.threads}, out);
      return out;
    });
  }

  double exposure_of(const TransformRequest& request) const {
    return request.exposure_us > 0.0 ? request.exposure_us : config.camera.exposure_us;
  }
};

SimDevice::SimDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SimDevice::~SimDevice() = default;

Result<std::unique_ptr<SimDevice>> SimDevice::create(const SimConfig& config) {
  OPU_RETURN_IF_ERROR(config.validate());
  auto impl = std::make_unique<Impl>(config);
  spdlog::debug("opu-sim: created {} (seed {}, camera {}, drift_tau_s {})", impl->info.model,
                config.seed, config.camera.ideal ? "ideal" : "realistic", config.drift_tau_s);
  return std::unique_ptr<SimDevice>(new SimDevice(std::move(impl)));
}

DeviceInfo SimDevice::info() const { return impl_->info; }
const SimConfig& SimDevice::config() const { return impl_->config; }

std::int64_t SimDevice::device_time_ns() const {
  std::lock_guard lock(impl_->clock_mutex);
  return impl_->device_time_ns;
}

std::int64_t SimDevice::frames_taken() const {
  std::lock_guard lock(impl_->clock_mutex);
  return impl_->frames_taken;
}

Result<Frames> SimDevice::do_transform(const TransformRequest& request) {
  const double exposure = impl_->exposure_of(request);
  const Impl::Reservation r = impl_->reserve(request.batch, exposure);
  const Eigen::MatrixXf intensity = impl_->transform_fields(request, r).cwiseAbs2();
  Frames frames;
  frames.n_out = request.n_out;
  frames.batch = request.batch;
  frames.adc_bits = impl_->config.camera.adc_bits;
  const std::int64_t saturated =
      impl_->camera.read(intensity, exposure, r.first_frame, impl_->config.threads, frames.data);
  frames.info = impl_->frame_info(r, request.batch, exposure, saturated);
  impl_->pace(frames.info.device_time_end_ns);
  return frames;
}

Result<Eigen::MatrixXf> SimDevice::transform_float(const TransformRequest& request) {
  OPU_RETURN_IF_ERROR(validate(request, info()));
  const double exposure = impl_->exposure_of(request);
  const Impl::Reservation r = impl_->reserve(request.batch, exposure);
  Eigen::MatrixXf intensity = impl_->transform_fields(request, r).cwiseAbs2();
  impl_->camera.read_float(intensity, exposure);
  return intensity;
}

Result<Projections> SimDevice::do_linear_transform(const LinearRequest& request) {
  const FrameCapture capture = [this](std::span<const std::uint8_t> patterns, std::int64_t batch,
                                      std::int64_t n_out, double exposure_us,
                                      const HolographyLayout& layout) {
    return impl_->capture_blocks(patterns, batch, n_out, exposure_us, layout);
  };
  return linear_transform_from_frames(request, impl_->info, impl_->config.holography, capture,
                                      &impl_->reference_cache);
}

Result<Eigen::MatrixXf> SimDevice::exact_linear(const LinearRequest& request) const {
  OPU_RETURN_IF_ERROR(validate(request, impl_->info));
  Result<HolographyLayout> layout = HolographyLayout::fit(
      request.n_in, impl_->info.max_n_in, impl_->config.holography.reference_blocks);
  if (!layout.ok()) return layout.status();
  const DriftPhase phase = drift_phase(impl_->config.drift_tau_s, device_time_ns());
  Eigen::MatrixXcf blocks = *impl_->block_matrix(*layout, phase.realisation);
  if (impl_->config.drift_tau_s > 0.0) {
    blocks = phase.cos_theta * blocks +
             phase.sin_theta * *impl_->block_matrix(*layout, phase.realisation + 1);
  }
  const Eigen::MatrixXf matrix =
      holographic_matrix(blocks.topRows(request.n_out), *layout, impl_->config.holography);
  const Eigen::Map<const Eigen::MatrixXf> values(request.values.data(), request.n_in,
                                                 request.batch);
  Eigen::MatrixXf projections = matrix * values;
  return projections;
}

std::complex<float> SimDevice::matrix_entry(std::int64_t row, std::int64_t col,
                                            double time_s) const {
  const DriftPhase phase =
      drift_phase(impl_->config.drift_tau_s, static_cast<std::int64_t>(std::llround(time_s * 1e9)));
  const std::complex<float> current = impl_->medium->entry(row, col, phase.realisation);
  if (impl_->config.drift_tau_s <= 0.0) return current;
  return phase.cos_theta * current +
         phase.sin_theta * impl_->medium->entry(row, col, phase.realisation + 1);
}

}  // namespace opu::sim
