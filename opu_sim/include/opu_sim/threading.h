// Thread counts, configurable everywhere. OpenMP (our kernels) and OpenBLAS (Eigen's large products)
// must not fight over the cores: set_compute_threads() sets both, and our kernels never run inside
// a BLAS call or the other way round.
#pragma once

namespace opu {

/// Threads used by OpenMP regions and by OpenBLAS. n >= 1; tests use 1.
void set_compute_threads(int n);
/// The current setting (1 until set).
int compute_threads();

}  // namespace opu
