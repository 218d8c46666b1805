// moekit/backend/cpu/gemm.hpp — GEMM through CBLAS, row-major, every transpose
// combination, float and double, plus strided batches.
#pragma once

#include <cblas.h>

#include <cstddef>

#include "../../core/dtype.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_gemm {
  /// C(m,n) = alpha * op(A) * op(B) + beta * C, row-major; op(X) = X or Xᵀ.
  /// lda/ldb/ldc are the row strides of A, B and C as stored.
  template <real T>
  static void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a,
                   std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    const auto M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    const auto la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
    if constexpr (sizeof(T) == 4) cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, la, b, lb, beta, c, lc);
    else cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, la, b, lb, beta, c, lc);
  }

  /// `batch` independent GEMMs whose operands sit stride_a/b/c elements apart.
  /// Small matrices are spread over threads with single-threaded BLAS inside;
  /// large ones give each call all BLAS threads (never both at once).
  template <real T>
  static void gemm_strided_batched(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
                                   const T* a, std::size_t lda, std::size_t stride_a, const T* b, std::size_t ldb,
                                   std::size_t stride_b, T beta, T* c, std::size_t ldc, std::size_t stride_c,
                                   std::size_t batch) {
    auto one = [&](std::size_t i) {
      gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
    };
    const bool small = m * n * k < std::size_t{128} * 128 * 128;
    if (small && batch > 1 && num_threads() > 1) {
      blas_single_thread guard;
      parallel_for(batch, m * n * k, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) one(i);
      });
    } else {
      for (std::size_t i = 0; i < batch; ++i) one(i);
    }
  }
};

}  // namespace moekit::detail
