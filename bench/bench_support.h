// Timing helpers and this machine's limits, measured in the same run as the benchmarks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace opu::bench {

/// Seconds per call of `body`: repeats until `min_seconds` have passed (after one warm-up call),
/// and returns the best of three such rounds (the least disturbed by a shared machine). A warm-up
/// call longer than `min_seconds` is the measurement.
double seconds_per_call(const std::function<void()>& body, double min_seconds);

/// The widest FMA this CPU executes, in bits: 512 (AVX-512F), 256 (AVX2 + FMA) or 32 (scalar).
/// Decided at run time, not by the -march the binary was built for, since OpenBLAS dispatches
/// its kernels at run time too.
int widest_fma_bits();

/// Peak single-precision FMA throughput of this machine with `threads` threads, FLOP/s, from a
/// register-resident loop of independent FMAs `width_bits` wide (0: the widest this CPU has), an
/// upper bound no real kernel reaches.
double measure_fma_peak(int threads, double min_seconds, int width_bits = 0);

/// Streaming read bandwidth, bytes/s, with `threads` threads over a buffer far larger than the
/// caches.
double measure_read_bandwidth(int threads, double min_seconds);

/// Peak resident set size of this process so far, MiB.
double peak_rss_mb();

/// Anonymous memory of this process now backed by transparent huge pages, MiB (0 where the kernel
/// does not say): whether the dense medium's matrix got the huge pages it asks for.
double huge_pages_mb();

}  // namespace opu::bench
