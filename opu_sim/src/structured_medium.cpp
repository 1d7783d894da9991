// The structured medium: R = s · P · F · D3 · F · D2 · F · D1, restricted to the first n_in
// columns, for device-scale sizes where a dense R cannot exist (a 1e6 x 2e6 matrix would take
// 16 TB). D_l are diagonal random phase masks (counter-based, like every random number here), F
// the DFT of size N = 2^ceil(log2 max(n_in, n_out)) (FFTW, single precision), P keeps the first
// n_out pixels, and s = sqrt(2 / n_in) / N gives E|R_ij|^2 = 2 / n_in like the dense medium
// (F unnormalised: the product of three is N^1.5 times a unitary matrix, whose entries have
// E|U_ij|^2 = 1/N).
// Why this operator: docs/architecture.md.
#include <fftw3.h>
#include <immintrin.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <complex>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gaussian.h"
#include "hash.h"
#include "opu_sim/medium.h"
#include "opu_sim/packing.h"
#include "opu_sim/status.h"
#include "opu_sim/transmission_matrix.h"

namespace opu::sim {
namespace {

using detail::lowbias32;
using detail::splitmix64;

// FFTW's planner is not thread-safe; execution of an existing plan is (new-array API).
std::mutex& planner_mutex() {
  static std::mutex mutex;
  return mutex;
}

// Writes FFTW's accumulated wisdom to `path` atomically (temporary file, then rename), so a
// concurrent reader never sees half a file. Caller holds the planner mutex.
void save_wisdom(const std::string& path) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  if (fftwf_export_wisdom_to_filename(temporary.c_str()) == 0 ||
      std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    spdlog::warn("opu-sim: could not save FFTW wisdom to '{}'", path);
  }
}

// fftwf_malloc'd complex buffer: SIMD-aligned, as new-array execution requires.
struct FftwFree {
  void operator()(fftwf_complex* p) const { fftwf_free(p); }
};
using FftBuffer = std::unique_ptr<fftwf_complex[], FftwFree>;

FftBuffer allocate(std::int64_t n) {
  auto* raw = static_cast<fftwf_complex*>(
      fftwf_malloc(sizeof(fftwf_complex) * static_cast<std::size_t>(n)));
  OPU_CHECK(raw != nullptr, "fftwf_malloc failed");
  return FftBuffer(raw);
}

}  // namespace

/// One forward DFT plan of size n, in place or out of place, created once under the planner mutex
/// with FFTW_ESTIMATE (the same algorithm every run: reproducible bits), executed const from any
/// thread on any fftwf_malloc'd buffers of that size (new-array API). Non-copyable.
class FftPlan {
 public:
  FftPlan(std::int64_t n, bool in_place, const FftOptions& options = {})
      : n_(n), in_place_(in_place) {
    const FftBuffer in = allocate(n);
    const FftBuffer out = in_place ? nullptr : allocate(n);
    std::lock_guard lock(planner_mutex());
    // Wisdom first: a plan found in it is the same plan as last time (same bits), made at once.
    const bool have_wisdom = !options.wisdom_path.empty() &&
                             fftwf_import_wisdom_from_filename(options.wisdom_path.c_str()) != 0;
    const unsigned flags = options.measure ? FFTW_MEASURE : FFTW_ESTIMATE;
    plan_ = fftwf_plan_dft_1d(static_cast<int>(n), in.get(), in_place ? in.get() : out.get(),
                              FFTW_FORWARD, flags);
    OPU_CHECK(plan_ != nullptr, "FFTW could not plan a transform of size " + std::to_string(n));
    if (!options.wisdom_path.empty() && options.measure) {
      save_wisdom(options.wisdom_path);
    }
    spdlog::debug("opu-sim: FFT plan of size {} ({}, {}{})", n,
                  in_place ? "in place" : "out of place",
                  options.measure ? "measured" : "estimated", have_wisdom ? ", wisdom loaded" : "");
  }
  ~FftPlan() {
    std::lock_guard lock(planner_mutex());
    fftwf_destroy_plan(plan_);
  }
  FftPlan(const FftPlan&) = delete;
  FftPlan& operator=(const FftPlan&) = delete;

  void execute(fftwf_complex* in, fftwf_complex* out) const {
    OPU_CHECK(in_place_ == (in == out), "plan executed with the wrong placement");
    fftwf_execute_dft(plan_, in, out);
  }
  std::int64_t size() const { return n_; }

 private:
  std::int64_t n_;
  bool in_place_;
  fftwf_plan plan_ = nullptr;
};

namespace {

constexpr int kLayers = 3;

// The three phase masks of one realisation of the medium.
struct PhaseMasks {
  std::vector<std::complex<float>> layers[kLayers];
};

// The masks of one realisation; the last one also carries the medium's scale (one pass less).
std::shared_ptr<const PhaseMasks> make_masks(std::uint64_t seed, std::uint64_t realisation,
                                             std::int64_t n, float last_scale, int threads) {
  auto masks = std::make_shared<PhaseMasks>();
  for (int l = 0; l < kLayers; ++l) {
    const std::uint64_t key = splitmix64(
        splitmix64(seed ^ (static_cast<std::uint64_t>(kGeneratorVersion) << 48)) ^
        splitmix64(realisation) ^ splitmix64(0x5354525543ULL + static_cast<std::uint64_t>(l)));
    const auto key_low = static_cast<std::uint32_t>(key);
    const auto key_high = static_cast<std::uint32_t>(key >> 32);
    std::vector<std::complex<float>>& mask = masks->layers[l];
    mask.resize(static_cast<std::size_t>(n));
    auto* values = reinterpret_cast<float*>(mask.data());
#pragma omp parallel for schedule(static) num_threads(threads)
    for (std::int64_t j = 0; j < n; ++j) {
      const std::uint32_t bits =
          lowbias32(lowbias32(static_cast<std::uint32_t>(j) ^ key_low) + key_high);
      detail::unit_phasor(bits, &values[2 * j], &values[2 * j + 1]);
      if (l == kLayers - 1) {
        values[2 * j] *= last_scale;
        values[2 * j + 1] *= last_scale;
      }
    }
  }
  return masks;
}

// x_j *= mask_j, written out: std::complex's operator* checks for infinities and NaN (C99
// Annex G) through a library call unless -ffast-math, which the simulator never uses. The AVX
// path computes (xr mr - xi mi, xi mr + xr mi) with the same roundings as the scalar one.
void multiply(fftwf_complex* data, const std::vector<std::complex<float>>& mask) {
  float* __restrict x = reinterpret_cast<float*>(data);
  const float* __restrict m = reinterpret_cast<const float*>(mask.data());
  const std::int64_t n = static_cast<std::int64_t>(mask.size());
  std::int64_t j = 0;
#if defined(__AVX__)
  for (; j + 4 <= n; j += 4) {
    const __m256 a = _mm256_loadu_ps(x + 2 * j);
    const __m256 b = _mm256_loadu_ps(m + 2 * j);
    const __m256 b_re = _mm256_moveldup_ps(b);            // mr mr
    const __m256 b_im = _mm256_movehdup_ps(b);            // mi mi
    const __m256 a_swapped = _mm256_permute_ps(a, 0xB1);  // xi xr
    const __m256 product = _mm256_addsub_ps(_mm256_mul_ps(a, b_re), _mm256_mul_ps(a_swapped, b_im));
    _mm256_storeu_ps(x + 2 * j, product);
  }
#endif
  for (; j < n; ++j) {
    const float re = x[2 * j] * m[2 * j] - x[2 * j + 1] * m[2 * j + 1];
    const float im = x[2 * j + 1] * m[2 * j] + x[2 * j] * m[2 * j + 1];
    x[2 * j] = re;
    x[2 * j + 1] = im;
  }
}

class StructuredMedium final : public Medium {
 public:
  StructuredMedium(std::uint64_t seed, std::int64_t n_in, std::int64_t n_out,
                   const FftOptions& options)
      : Medium(seed, n_in, n_out),
        size_(static_cast<std::int64_t>(
            std::bit_ceil(static_cast<std::uint64_t>(std::max(n_in, n_out))))),
        out_of_place_(size_, false, options),
        in_place_(size_, true, options),
        scale_(static_cast<float>(std::sqrt(2.0 / static_cast<double>(n_in)) /
                                  static_cast<double>(size_))) {}

  std::string_view name() const override { return "structured"; }
  std::size_t memory_bytes() const override {
    std::lock_guard lock(mutex_);
    return cache_.size() * kLayers * static_cast<std::size_t>(size_) * sizeof(std::complex<float>);
  }

  void fields(const FieldsRequest& request, Eigen::MatrixXcf& out) const override {
    OPU_CHECK(request.n_in >= 1 && request.n_in <= n_in(), "n_in outside the medium");
    OPU_CHECK(request.n_out >= 1 && request.n_out <= n_out(), "n_out outside the medium");
    OPU_CHECK(static_cast<std::int64_t>(request.packed.size()) ==
                  request.batch * packed_bytes(request.n_in),
              "packed frames have the wrong size");
    const std::shared_ptr<const PhaseMasks> masks =
        realisation(request.realisation, request.threads);
    out.resize(request.n_out, request.batch);
    const std::int64_t bytes = packed_bytes(request.n_in);
    // Frames in parallel, each through the same single-threaded plan: results do not depend on
    // the thread count.
#pragma omp parallel num_threads(request.threads)
    {
      // The input stays zero between frames except where a frame writes D1 x (and then erases
      // it): no pass over the whole vector to clear it.
      const FftBuffer input = allocate(size_);
      const FftBuffer work = allocate(size_);
      std::memset(static_cast<void*>(input.get()), 0,
                  sizeof(fftwf_complex) * static_cast<std::size_t>(size_));
      auto* x = reinterpret_cast<std::complex<float>*>(input.get());
      const auto* y = reinterpret_cast<const std::complex<float>*>(work.get());
#pragma omp for schedule(static)
      for (std::int64_t b = 0; b < request.batch; ++b) {
        const std::uint8_t* frame = request.packed.data() + b * bytes;
        for_each_mirror_on(frame, request.n_in, [&](std::int64_t j) {
          x[j] = masks->layers[0][static_cast<std::size_t>(j)];
        });
        propagate(input.get(), work.get(), *masks);
        for_each_mirror_on(frame, request.n_in, [&](std::int64_t j) { x[j] = 0.0F; });
        std::copy(y, y + request.n_out, out.col(b).data());
      }
    }
  }

  std::complex<float> entry(std::int64_t row, std::int64_t col,
                            std::uint64_t realisation_index) const override {
    const std::shared_ptr<const PhaseMasks> masks = realisation(realisation_index, 1);
    const FftBuffer input = allocate(size_);
    const FftBuffer work = allocate(size_);
    auto* x = reinterpret_cast<std::complex<float>*>(input.get());
    std::fill(x, x + size_, std::complex<float>(0.0F, 0.0F));
    x[col] = masks->layers[0][static_cast<std::size_t>(col)];
    propagate(input.get(), work.get(), *masks);
    return reinterpret_cast<const std::complex<float>*>(work.get())[row];
  }

  std::int64_t fft_size() const { return size_; }

 private:
  // work = F · D3 · F · D2 · F · input (D1 is applied while the input is built, the scale is in
  // D3); the first transform is out of place, so the input keeps its zeros.
  void propagate(fftwf_complex* input, fftwf_complex* work, const PhaseMasks& masks) const {
    out_of_place_.execute(input, work);
    multiply(work, masks.layers[1]);
    in_place_.execute(work, work);
    multiply(work, masks.layers[2]);
    in_place_.execute(work, work);
  }

  template <typename Visit>
  static void for_each_mirror_on(const std::uint8_t* frame, std::int64_t n_in, const Visit& visit) {
    for (std::int64_t byte = 0; byte < packed_bytes(n_in); ++byte) {
      unsigned bits = frame[byte];
      while (bits != 0) {
        const std::int64_t j = byte * 8 + std::countr_zero(bits);
        bits &= bits - 1;
        if (j < n_in) visit(j);
      }
    }
  }

  std::shared_ptr<const PhaseMasks> realisation(std::uint64_t k, int threads) const {
    std::lock_guard lock(mutex_);
    if (auto found = cache_.find(k); found != cache_.end()) return found->second;
    while (cache_.size() >= 2) cache_.erase(cache_.begin());
    auto masks = make_masks(seed(), k, size_, scale_, threads);
    cache_.emplace(k, masks);
    return masks;
  }

  std::int64_t size_;
  FftPlan out_of_place_;
  FftPlan in_place_;
  float scale_;
  mutable std::mutex mutex_;
  mutable std::map<std::uint64_t, std::shared_ptr<const PhaseMasks>> cache_;
};

}  // namespace

std::unique_ptr<Medium> make_structured_medium(std::uint64_t seed, std::int64_t n_in,
                                               std::int64_t n_out, const FftOptions& options) {
  return std::make_unique<StructuredMedium>(seed, n_in, n_out, options);
}

double bare_fft_seconds(std::int64_t n, int repeats, const FftOptions& options) {
  const FftPlan plan(n, true, options);
  const FftBuffer buffer = allocate(n);
  std::fill(reinterpret_cast<float*>(buffer.get()), reinterpret_cast<float*>(buffer.get()) + 2 * n,
            0.5F);
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < repeats; ++r) plan.execute(buffer.get(), buffer.get());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / repeats;
}

}  // namespace opu::sim
