#include "opu_sim/threading.h"

#include <omp.h>

#include <algorithm>
#include <atomic>

// OpenBLAS's own control (cblas.h of some builds lacks the declaration).
extern "C" void openblas_set_num_threads(int num_threads);

namespace opu {
namespace {
std::atomic<int> g_threads{1};
}  // namespace

void set_compute_threads(int n) {
  n = std::max(1, n);
  g_threads.store(n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int compute_threads() { return g_threads.load(); }

}  // namespace opu
