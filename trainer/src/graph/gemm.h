// C = alpha op(A) op(B) + beta C on Eigen matrices or blocks (unit inner stride), straight to
// OpenBLAS (sgemm / dgemm). Eigen's own `C.noalias() = A * B` with EIGEN_USE_BLAS zeroes C first
// and then accumulates; calling BLAS with beta = 0 writes C once, and beta = 1 accumulates a
// gradient in place (private to the library).
#pragma once

#include <cblas.h>

#include "opu_sim/status.h"
#include "trainer/graph/tensor.h"

namespace opu::trainer::graph::detail {

inline void blas_gemm(bool ta, bool tb, Index m, Index n, Index k, float alpha, const float* a,
                      Index lda, const float* b, Index ldb, float beta, float* c, Index ldc) {
  cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

inline void blas_gemm(bool ta, bool tb, Index m, Index n, Index k, double alpha, const double* a,
                      Index lda, const double* b, Index ldb, double beta, double* c, Index ldc) {
  cblas_dgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

/// c = alpha op(a) op(b) + beta c; `c` has the product's shape already.
template <typename T, typename A, typename B, typename C>
void gemm(const A& a, bool ta, const B& b, bool tb, C&& c, T alpha, T beta) {
  const Index m = ta ? a.cols() : a.rows();
  const Index k = ta ? a.rows() : a.cols();
  const Index n = tb ? b.rows() : b.cols();
  OPU_CHECK(c.rows() == m && c.cols() == n && (tb ? b.cols() : b.rows()) == k,
            "gemm: shapes do not match");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == T(0)) {
      c.setZero();
    } else {
      c *= beta;
    }
    return;
  }
  blas_gemm(ta, tb, m, n, k, alpha, a.data(), a.outerStride(), b.data(), b.outerStride(), beta,
            c.data(), c.outerStride());
}

}  // namespace opu::trainer::graph::detail
