// moekit/backend/cpu/gemm.hpp — GEMM through CBLAS, row-major, every transpose
// combination, float and double, plus strided batches. 16-bit storage (bf16,
// half) is widened to float for one sgemm and rounded back, as a GPU GEMM with
// float accumulation does.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "../../core/dtype.hpp"
#include "blas_info.hpp"
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
    if constexpr (sizeof(T) == 4) {
      warn_blas_kernel_once();  // a slow OpenBLAS kernel on a fast CPU: said once (blas_info.hpp)
      cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, la, b, lb, beta, c, lc);
    } else cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, la, b, lb, beta, c, lc);
  }

  /// The same for 16-bit storage: A and B widened to float, products summed
  /// in float by sgemm, C rounded once on store; beta · C reads the 16-bit C.
  template <storage_16 T>
  static void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a,
                   std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    const std::size_t a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    const std::vector<float> af = widen(trans_a ? k : m, a_cols, a, lda);  // op(A) stored as given, packed
    const std::vector<float> bf = widen(trans_b ? n : k, b_cols, b, ldb);
    const float beta_f = static_cast<float>(beta);
    std::vector<float> cf = beta_f == 0.0f ? std::vector<float>(m * n) : widen(m, n, c, ldc);  // (m, n)
    gemm(trans_a, trans_b, m, n, k, static_cast<float>(alpha), af.data(), std::max<std::size_t>(a_cols, 1), bf.data(),
         std::max<std::size_t>(b_cols, 1), beta_f, cf.data(), n);
    parallel_for(m, n, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i)
        for (std::size_t j = 0; j < n; ++j) c[i * ldc + j] = T(cf[i * n + j]);
    });
  }

  /// `batch` independent GEMMs whose operands sit stride_a/b/c elements apart.
  /// Small matrices are spread over threads with single-threaded BLAS inside;
  /// large ones give each call all BLAS threads (never both at once).
  template <class T>
    requires(real<T> || storage_16<T>)
  static void gemm_strided_batched(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
                                   const T* a, std::size_t lda, std::size_t stride_a, const T* b, std::size_t ldb,
                                   std::size_t stride_b, T beta, T* c, std::size_t ldc, std::size_t stride_c,
                                   std::size_t batch) {
    auto one = [&](std::size_t i) {
      gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
    };
    const bool small = m * n * k < std::size_t{128} * 128 * 128;
    if (small && batch > 1 && num_threads() > 1) {
      blas_calls_in_parallel guard;
      parallel_for(batch, m * n * k, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) one(i);
      });
    } else {
      for (std::size_t i = 0; i < batch; ++i) one(i);
    }
  }

 private:
  /// A (rows, cols) matrix with row stride ld as packed floats (row stride cols).
  template <storage_16 T>
  static std::vector<float> widen(std::size_t rows, std::size_t cols, const T* x, std::size_t ld) {
    std::vector<float> out(rows * cols);
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i)
        for (std::size_t j = 0; j < cols; ++j) out[i * cols + j] = static_cast<float>(x[i * ld + j]);
    });
    return out;
  }
};

}  // namespace moekit::detail
