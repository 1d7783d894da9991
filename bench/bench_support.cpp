#include "bench_support.h"

#include <immintrin.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace opu::bench {

double seconds_per_call(const std::function<void()>& body, double min_seconds) {
  using Clock = std::chrono::steady_clock;
  // Warm-up: caches, lazily built matrices, thread pools. A call that alone outlasts the budget
  // (a 100,000 x 100,000 streamed projection) is measured by that one call.
  const auto warm_start = Clock::now();
  body();
  const double warm = std::chrono::duration<double>(Clock::now() - warm_start).count();
  if (warm >= min_seconds) return warm;
  double best = 1e300;
  for (int round = 0; round < 3; ++round) {
    std::int64_t calls = 0;
    const auto start = Clock::now();
    double elapsed = 0.0;
    do {
      body();
      ++calls;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < min_seconds / 3.0);
    best = std::min(best, elapsed / static_cast<double>(calls));
  }
  return best;
}

namespace {
// Register-resident chains of independent FMAs. Two FMA ports with a latency of 4-5 cycles need
// at least 10 chains in flight; 12 (AVX2: 16 ymm registers) and 24 (AVX-512: 32 zmm registers)
// leave headroom for CPUs with longer latencies. Each kernel is compiled for its own instruction
// set (target attribute) and chosen at run time, so the probe measures the widest FMA this CPU
// executes whatever -march the binary was built for: OpenBLAS also picks its kernels at run time,
// and a peak narrower than its sgemm's gave peak fractions above 1 (issue 16).
constexpr int kChains256 = 12;
constexpr int kChains512 = 24;

__attribute__((target("avx2,fma"))) float fma_kernel_256(std::int64_t iterations) {
  __m256 acc[kChains256];
  for (int i = 0; i < kChains256; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3F);
  const __m256 a = _mm256_set1_ps(0.999999F);
  const __m256 b = _mm256_set1_ps(1e-7F);
  for (std::int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kChains256; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 total = acc[0];
  for (int i = 1; i < kChains256; ++i) total = _mm256_add_ps(total, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  return lanes[0];
}

__attribute__((target("avx512f"))) float fma_kernel_512(std::int64_t iterations) {
  __m512 acc[kChains512];
  for (int i = 0; i < kChains512; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3F);
  const __m512 a = _mm512_set1_ps(0.999999F);
  const __m512 b = _mm512_set1_ps(1e-7F);
  for (std::int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < kChains512; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 total = acc[0];
  for (int i = 1; i < kChains512; ++i) total = _mm512_add_ps(total, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, total);
  return lanes[0];
}

float fma_kernel_scalar(std::int64_t iterations) {
  float acc = 0.0F;
  for (std::int64_t it = 0; it < iterations; ++it) acc = acc * 0.999999F + 1e-7F;
  return acc;
}

// Useful FLOPs of one iteration of each kernel (an FMA is 2 FLOPs per lane).
double flops_per_iteration(int width_bits) {
  switch (width_bits) {
    case 512: return kChains512 * 16.0 * 2.0;
    case 256: return kChains256 * 8.0 * 2.0;
    default: return 2.0;
  }
}

float run_fma_kernel(int width_bits, std::int64_t iterations) {
  switch (width_bits) {
    case 512: return fma_kernel_512(iterations);
    case 256: return fma_kernel_256(iterations);
    default: return fma_kernel_scalar(iterations);
  }
}
}  // namespace

int widest_fma_bits() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 256;
  return 32;
}

double measure_fma_peak(int threads, double min_seconds, int width_bits) {
  if (width_bits <= 0) width_bits = widest_fma_bits();
  constexpr std::int64_t kIterations = 1 << 21;
  volatile float sink = 0.0F;
  const double seconds = seconds_per_call(
      [&] {
        float total = 0.0F;
#pragma omp parallel num_threads(threads) reduction(+ : total)
        total += run_fma_kernel(width_bits, kIterations);
        sink = total;
      },
      min_seconds);
  (void)sink;
  return flops_per_iteration(width_bits) * static_cast<double>(kIterations) * threads / seconds;
}

double measure_read_bandwidth(int threads, double min_seconds) {
  const std::size_t floats = std::size_t{32} << 20;  // 128 MiB, four times the L3 cache
  std::vector<float> buffer(floats, 1.0F);
  volatile float sink = 0.0F;
  const double seconds = seconds_per_call(
      [&] {
        float total = 0.0F;
#pragma omp parallel num_threads(threads) reduction(+ : total)
        {
          // 16 independent partial sums: vectorisable without reassociating (no fast-math).
          float partial[16] = {};
#pragma omp for schedule(static)
          for (std::size_t i = 0; i < floats; i += 16) {
            for (std::size_t k = 0; k < 16; ++k) partial[k] += buffer[i + k];
          }
          for (float value : partial) total += value;
        }
        sink = total;
      },
      min_seconds);
  (void)sink;
  return static_cast<double>(floats * sizeof(float)) / seconds;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

double huge_pages_mb() {
  std::ifstream smaps("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(smaps, line)) {
    long long kib = 0;
    if (std::sscanf(line.c_str(), "AnonHugePages: %lld kB", &kib) == 1) {
      return static_cast<double>(kib) / 1024.0;
    }
  }
  return 0.0;
}

}  // namespace opu::bench
