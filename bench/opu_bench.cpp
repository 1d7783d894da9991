// opu-bench: the simulator's throughput as ratios to this machine's limits, measured in one run.
//
//   opu-bench [--quick] [--json] [--threads N] [--min-seconds S]
//
// Every figure is printed next to what it is compared with, measured in the same run: the
// equivalent float GEMM (OpenBLAS sgemm on the same 2 n_out x n_in real matrix), the FMA peak and
// the memory bandwidth of this machine. Shared, noisy machines make absolute numbers unreliable;
// ratios taken minutes apart are not.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <bit>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "bench_support.h"
#include "opu_sim/medium.h"
#include "opu_sim/cli_validators.h"
#include "opu_sim/packing.h"
#include "opu_sim/sim_device.h"
#include "opu_sim/threading.h"
#include "opu_sim/transmission_matrix.h"

namespace {

using opu::bench::seconds_per_call;
using Json = nlohmann::json;

struct Options {
  bool quick = false;
  bool table = false;
  opu::sim::FftOptions fft{true, "opu-fftw.wisdom"};
  bool json = false;
  int threads = 1;
  double min_seconds = 0.6;
  std::vector<std::string> only;  // parts to run; empty = all

  bool runs(const std::string& part) const {
    return only.empty() || std::find(only.begin(), only.end(), part) != only.end();
  }
};

struct Machine {
  double fma_peak_flops = 0;
  double bandwidth_bytes = 0;
};

std::vector<std::uint8_t> random_frames(std::int64_t n, std::int64_t batch, double density,
                                        std::uint64_t seed) {
  Eigen::Matrix<std::uint8_t, -1, -1> bits(n, batch);
  std::uint64_t state = seed;
  for (std::int64_t i = 0; i < bits.size(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    bits.data()[i] = static_cast<double>(state >> 11) * 0x1.0p-53 < density ? 1 : 0;
  }
  return opu::sim::pack_frames(bits);
}

// The real device takes 500 µs per frame (2 kHz): how the simulator's frame rate compares.
constexpr double kDeviceFramesPerSecond = 2000.0;
std::string device_speed(double frames_per_s) {
  char text[64];
  std::snprintf(text, sizeof text, "(%.3gx the real device's 2 kHz)",
                frames_per_s / kDeviceFramesPerSecond);
  return text;
}

void report(const Options& options, Json record, const std::string& text) {
  record["threads"] = options.threads;
  record["peak_rss_mb"] = opu::bench::peak_rss_mb();
  if (options.json) {
    std::cout << record.dump() << std::endl;
  } else {
    std::cout << text << std::endl;
  }
}

std::string format(const char* pattern, auto... values) {
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, pattern, values...);
  return buffer;
}

// The dense kernel a batch of this size takes (Medium's thresholds).
const char* dense_kernel(std::int64_t batch) {
  if (batch >= opu::sim::Medium::kGemmMinBatch) return "sgemm";
  if (batch >= opu::sim::Medium::kTableMinBatch) return "subset-sum tables";
  return "column sums";
}

// The floating-point work each dense kernel really does for a batch, in FLOPs of the FMA peak: an
// FMA lane is 2 FLOPs; an add takes the same slot of the same vector unit, so it counts 2 as well
// (the column sums and the tables only add). Counting the kernels' own work, not the FLOPs of the
// GEMM they replace, is what keeps a peak fraction at or below 1 (issue 16): the tables do a
// quarter of the column sums' adds, which in GEMM-equivalent FLOPs looked like 115% of the peak.
double dense_kernel_flops(std::int64_t n, std::int64_t batch, std::int64_t selected_columns) {
  const double rows = 2.0 * static_cast<double>(n);  // real and imaginary parts
  const std::string kernel = dense_kernel(batch);
  if (kernel == "sgemm") return 2.0 * rows * static_cast<double>(n) * static_cast<double>(batch);
  if (kernel == "column sums") return 2.0 * rows * static_cast<double>(selected_columns);
  // Subset-sum tables: each group of 4 columns costs a frame one add per row, and its table of
  // 16 subset sums costs 15 adds per row, built once per call and shared by the batch.
  const double groups = static_cast<double>((n + 3) / 4);
  return 2.0 * rows * groups * (static_cast<double>(batch) + 15.0);
}

std::int64_t set_bits(const std::vector<std::uint8_t>& packed) {
  std::int64_t count = 0;
  for (std::uint8_t byte : packed) count += std::popcount(byte);
  return count;
}

// The largest peak fraction reported: above 1, the peak was probed while the machine was busy
// (the probe then reads low), and main() says so instead of leaving impossible figures unremarked.
double g_max_peak_fraction = 0.0;

// Dense medium against the equivalent float GEMM, for each batch.
void bench_dense(const Options& options, const Machine& machine, std::int64_t n,
                 const std::vector<std::int64_t>& batches) {
  const auto medium = opu::sim::make_dense_medium(7, n, n);
  Eigen::MatrixXf real_matrix = Eigen::MatrixXf::Constant(2 * n, n, 0.01F);
  Eigen::MatrixXcf fields;
  // The first call generates the matrix (seconds at 1e4 x 1e4): a one-time cost, kept out of the
  // timing, where a warm-up call that outlasts the budget would be taken as the measurement.
  medium->fields({random_frames(n, 1, 0.5, 3), n, n, 1, 0, options.threads}, fields);
  for (std::int64_t batch : batches) {
    const std::vector<std::uint8_t> packed = random_frames(n, batch, 0.5, 3);
    const double sim_s = seconds_per_call(
        [&] {
          medium->fields({packed, n, n, batch, 0, options.threads}, fields);
        },
        options.min_seconds);
    Eigen::MatrixXf inputs(n, batch);
    opu::sim::unpack_frames_to_float(packed, n, batch, inputs);
    Eigen::MatrixXf product(2 * n, batch);
    const double gemm_s =
        seconds_per_call([&] { product.noalias() = real_matrix * inputs; }, options.min_seconds);
    const double peak_fraction =
        dense_kernel_flops(n, batch, set_bits(packed)) / sim_s / machine.fma_peak_flops;
    g_max_peak_fraction = std::max(g_max_peak_fraction, peak_fraction);
    const double vs_gemm = gemm_s / sim_s;
    report(options,
           {{"backend", "dense"},
            {"n_in", n},
            {"n_out", n},
            {"batch", batch},
            {"projections_per_s", batch / sim_s},
            {"peak_fraction", peak_fraction},
            {"gemm_projections_per_s", batch / gemm_s},
            {"speedup_vs_gemm", vs_gemm},
            {"kernel", dense_kernel(batch)}},
           format("dense     %6ld x %-6ld batch %4ld  %10.0f proj/s  %5.1f%% of FMA peak  "
                  "%5.2fx float GEMM (%s)  %s",
                  static_cast<long>(n), static_cast<long>(n), static_cast<long>(batch),
                  batch / sim_s, 100 * peak_fraction, vs_gemm, dense_kernel(batch),
                  device_speed(batch / sim_s).c_str()));
  }
  // The column sums' speed on matrices beyond the caches depends on whether the kernel granted
  // the matrix the transparent huge pages it asks for (the GEMM yardstick's matrix does not ask).
  const double matrix_mb = static_cast<double>(medium->memory_bytes()) / (1 << 20);
  const double huge_mb = opu::bench::huge_pages_mb();
  report(options,
         {{"backend", "dense"},
          {"n_in", n},
          {"n_out", n},
          {"matrix_mb", matrix_mb},
          {"huge_pages_mb", huge_mb}},
         format("dense     %6ld x %-6ld matrix %.0f MiB, process on huge pages %.0f MiB",
                static_cast<long>(n), static_cast<long>(n), matrix_mb, huge_mb));
}

// Streamed medium: regeneration rate and the time a stored matrix would take to stream from
// memory at the measured bandwidth. Measured first, so that the process's peak resident memory is
// the streamed backend's own (later benchmarks hold dense matrices).
struct StreamedResult {
  std::int64_t n = 0;
  std::int64_t batch = 0;
  double seconds = 0;
  double rss_mb = 0;
};

StreamedResult time_streamed(const Options& options, std::int64_t n, std::int64_t batch) {
  const auto medium = opu::sim::make_streamed_medium(7, n, n);
  const std::vector<std::uint8_t> packed = random_frames(n, batch, 0.5, 4);
  Eigen::MatrixXcf fields;
  const double seconds = seconds_per_call(
      [&] {
        medium->fields({packed, n, n, batch, 0, options.threads}, fields);
      },
      options.min_seconds);
  return {n, batch, seconds, opu::bench::peak_rss_mb()};
}

void report_streamed(const Options& options, const Machine& machine, const StreamedResult& r) {
  const double entries = static_cast<double>(r.n) * static_cast<double>(r.n);
  const double entries_per_s_per_core = entries / r.seconds / options.threads;
  const double stream_s = entries * 8.0 / machine.bandwidth_bytes;
  Json record = {{"backend", "streamed"},
                 {"n_in", r.n},
                 {"n_out", r.n},
                 {"batch", r.batch},
                 {"projections_per_s", r.batch / r.seconds},
                 {"peak_fraction", stream_s / r.seconds},
                 {"matrix_entries_per_s_per_core", entries_per_s_per_core},
                 {"streamed_peak_rss_mb", r.rss_mb}};
  report(options, record,
         format("streamed  %6ld x %-6ld batch %4ld  %10.3f proj/s  %.3f G entries/s/core  "
                "%5.1f%% of memory-bandwidth speed  peak RSS %.0f MiB  %s",
                static_cast<long>(r.n), static_cast<long>(r.n), static_cast<long>(r.batch),
                r.batch / r.seconds, entries_per_s_per_core / 1e9, 100 * stream_s / r.seconds,
                r.rss_mb, device_speed(r.batch / r.seconds).c_str()));
}

// Structured medium against the bare FFTs it needs (three per frame), frames in parallel.
void bench_structured(const Options& options, std::int64_t n_in, std::int64_t n_out) {
  const auto medium = opu::sim::make_structured_medium(7, n_in, n_out, options.fft);
  const std::int64_t batch = std::max(2, options.threads);
  const std::vector<std::uint8_t> packed = random_frames(n_in, batch, 0.5, 6);
  Eigen::MatrixXcf fields;
  const double seconds = seconds_per_call(
      [&] {
        medium->fields({packed, n_in, n_out, batch, 0, options.threads}, fields);
      },
      options.min_seconds);
  const auto size =
      static_cast<std::int64_t>(std::bit_ceil(static_cast<std::uint64_t>(std::max(n_in, n_out))));
  // Bare FFTs of the same size, one per thread in parallel, as the medium runs them.
  double fft_s = 0;
#pragma omp parallel num_threads(options.threads) reduction(max : fft_s)
  fft_s = std::max(fft_s, opu::sim::bare_fft_seconds(size, options.quick ? 3 : 10, options.fft));
  const double frames_per_s = batch / seconds;
  const double fft_frames_per_s = options.threads / (3.0 * fft_s);
  report(options,
         {{"backend", "structured"},
          {"n_in", n_in},
          {"n_out", n_out},
          {"batch", batch},
          {"fft_size", size},
          {"projections_per_s", frames_per_s},
          {"peak_fraction", frames_per_s / fft_frames_per_s},
          {"ratio_to_bare_ffts", fft_frames_per_s / frames_per_s},
          {"medium_mb", static_cast<double>(medium->memory_bytes()) / (1 << 20)}},
         format("structured %8ld x %-8ld (FFT %ld)  %8.2f proj/s  %.2fx the time of its 3 bare "
                "FFTs  masks %.0f MiB  peak RSS %.0f MiB  %s",
                static_cast<long>(n_in), static_cast<long>(n_out), static_cast<long>(size),
                frames_per_s, fft_frames_per_s / frames_per_s,
                static_cast<double>(medium->memory_bytes()) / (1 << 20), opu::bench::peak_rss_mb(),
                device_speed(frames_per_s).c_str()));
}

void bench_generator(const Options& options) {
  const opu::sim::TransmissionMatrixGenerator generator(7, 4096);
  std::vector<std::complex<float>> tile(256 * 1024);
  const double seconds = seconds_per_call(
      [&] { generator.fill_tile(0, 256, 0, 1024, tile.data(), 256); }, options.min_seconds);
  const double rate = 256.0 * 1024.0 / seconds;
  report(options, {{"backend", "generator"}, {"entries_per_s_per_core", rate}},
         format("generator single core: %.3f G complex entries/s", rate / 1e9));
}

// A DFA-sized linear call (10 -> 256 ternary, batch 128) against the raw transforms it needs.
void bench_linear(const Options& options, const std::string& camera) {
  auto params = opu::sim::parse_query("n_in=1024&n_out=256&camera=" + camera +
                                      "&threads=" + std::to_string(options.threads));
  auto device = opu::sim::SimDevice::create(*opu::sim::SimConfig::from_params(*params)).value();
  Eigen::MatrixXf errors = Eigen::MatrixXf::Constant(10, 128, 0.02F);
  for (std::int64_t s = 0; s < 128; ++s) errors(s % 10, s) = -0.9F;
  const opu::sim::LinearRequest request{
      10, 256, 128, {errors.data(), static_cast<std::size_t>(errors.size())}, {}};
  std::int64_t frames = 0;
  const double linear_s = seconds_per_call(
      [&] { frames = device->linear_transform(request).value().info.frames; }, options.min_seconds);
  const std::vector<std::uint8_t> packed = random_frames(1024, frames, 0.3, 5);
  const double raw_s = seconds_per_call(
      [&] {
        (void)device->transform({1024, 256, frames, packed, 0.0}).value();
      },
      options.min_seconds);
  report(options,
         {{"backend", "linear-" + camera},
          {"n_in", 10},
          {"n_out", 256},
          {"batch", 128},
          {"projections_per_s", 128 / linear_s},
          {"frames_per_call", frames},
          {"ratio_to_raw_transforms", linear_s / raw_s}},
         format("linear    10 -> 256 batch 128 (%s camera)  %10.0f proj/s  %ld frames/call  "
                "%.2fx the raw transforms of those frames",
                camera.c_str(), 128 / linear_s, static_cast<long>(frames), linear_s / raw_s));
}

Machine measure_machine(const Options& options) {
  // The peak is the widest FMA this CPU executes (OpenBLAS's sgemm uses it whatever our -march);
  // the 256-bit figure is printed beside it on AVX-512 CPUs, where the two differ by up to 2x.
  // The peak is the larger of the two probes: a CPU that splits 512-bit FMAs into two 256-bit
  // halves (Zen 4) runs both at the same FLOP rate, and timing noise must not pick the lower one.
  const int bits = opu::bench::widest_fma_bits();
  const double peak_widest = opu::bench::measure_fma_peak(options.threads, options.min_seconds, bits);
  const double peak_256 =
      bits > 256 ? opu::bench::measure_fma_peak(options.threads, options.min_seconds, 256)
                 : peak_widest;
  const Machine machine{std::max(peak_widest, peak_256),
                        opu::bench::measure_read_bandwidth(options.threads, options.min_seconds)};
  report(options,
         {{"backend", "machine"},
          {"fma_peak_gflops", machine.fma_peak_flops / 1e9},
          {"fma_peak_bits", bits},
          {"fma_peak_256_gflops", peak_256 / 1e9},
          {"read_bandwidth_gbs", machine.bandwidth_bytes / 1e9}},
         format("machine: FMA peak %.1f GFLOP/s (%d-bit FMAs; 256-bit: %.1f), read bandwidth "
                "%.1f GB/s (%d threads)",
                machine.fma_peak_flops / 1e9, bits, peak_256 / 1e9, machine.bandwidth_bytes / 1e9,
                options.threads));
  return machine;
}

// Issue 6's table: each backend at each size it can reach on this machine (dense stops at 1e4:
// 1e5 would take 80 GB; streamed at 1e5: 1e6 would regenerate 1e12 entries per frame).
void run_table(const Options& options) {
  std::vector<StreamedResult> streamed;
  for (std::int64_t n : {1000, 10000, 100000}) streamed.push_back(time_streamed(options, n, 1));
  const Machine machine = measure_machine(options);
  for (const StreamedResult& result : streamed) report_streamed(options, machine, result);
  for (std::int64_t n : {1000, 10000}) bench_dense(options, machine, n, {1, 256});
  for (std::int64_t n : {1000, 10000, 100000, 1000000}) bench_structured(options, n, n);
  bench_structured(options, 1039680, 2219520);
}

// Exit status 3 when a kernel appeared to beat the FMA peak: such a run's figures are not usable.
int warn_if_peak_exceeded() {
  if (g_max_peak_fraction <= 1.0) return 0;
  std::cerr << "opu-bench: a kernel reached " << 100 * g_max_peak_fraction
            << "% of the FMA peak, which is impossible: the machine was busy while the peak was "
               "probed. Rerun on a quiet machine; these figures are not usable.\n";
  return 3;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"opu-bench: simulator throughput as ratios to this machine's limits"};
  app.add_flag("--quick", options.quick, "small sizes and short timings (about a minute)");
  app.add_flag("--json", options.json, "one JSON object per line per measurement");
  app.add_flag("--table", options.table,
               "every backend at n_in = n_out = 1e3, 1e4, 1e5, 1e6 and at the device shape "
               "1,039,680 x 2,219,520 (several minutes)");
  app.add_option("--threads", options.threads, "compute threads (OpenMP and OpenBLAS)")
      ->check(opu::in_range<int>(opu::ValueRange::integers(1, 256)));
  CLI::Option* min_seconds =
      app.add_option("--min-seconds", options.min_seconds,
                     "time spent on each measurement (0.6; 0.3 with --quick)")
          ->check(opu::in_range<double>(opu::ValueRange::positive("seconds")));
  std::string planning = "measure";
  app.add_option("--fft-planning", planning,
                 "structured medium and its yardstick: estimate or measure (default measure)")
      ->check(opu::one_of({"estimate", "measure"}));
  app.add_option("--fft-wisdom", options.fft.wisdom_path,
                 "FFTW wisdom file, loaded and saved (default ./opu-fftw.wisdom; \"\" = none)");
  app.add_option("--only", options.only,
                 "run these parts only: generator, dense, streamed, structured, linear")
      ->check(opu::one_of({"generator", "dense", "streamed", "structured", "linear"}))
      ->excludes("--table");
  CLI11_PARSE(app, argc, argv);
  options.fft.measure = planning == "measure";
  // --quick shortens the default only: a --min-seconds given is kept as given.
  if (options.quick && min_seconds->count() == 0) options.min_seconds = 0.3;
  opu::set_compute_threads(options.threads);

  if (options.table) {
    run_table(options);
    return warn_if_peak_exceeded();
  }
  std::optional<StreamedResult> streamed;
  if (options.runs("streamed")) streamed = time_streamed(options, options.quick ? 4096 : 100000, 1);
  const Machine machine = measure_machine(options);
  if (options.runs("generator")) bench_generator(options);
  if (options.runs("dense")) {
    for (std::int64_t n :
         options.quick ? std::vector<std::int64_t>{1024} : std::vector<std::int64_t>{1024, 4096}) {
      bench_dense(options, machine, n, {1, 8, 32, 64, 128, 256});
    }
  }
  if (streamed) report_streamed(options, machine, *streamed);
  if (options.runs("structured")) {
    bench_structured(options, 1 << 20, 1 << 20);
    // 912x1140 DMD, 2040x1088 camera
    if (!options.quick) bench_structured(options, 1039680, 2219520);
  }
  if (options.runs("linear")) {
    bench_linear(options, "ideal");
    bench_linear(options, "realistic");
  }
  return warn_if_peak_exceeded();
}
