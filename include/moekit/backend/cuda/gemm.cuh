// moekit/backend/cuda/gemm.cuh — GEMM through cuBLAS with cpu_gemm's
// row-major interface. cuBLAS is column-major, and a row-major (r, c) matrix
// with row stride ld is the column-major (c, r) matrix of its transpose; so
// C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ: A and B swap places, m
// and n swap, and the transpose flags stay as given.
//
// float and double use cublasSgemm / cublasDgemm (TF32 only when allowed, see
// blas.cuh); bf16 and half use cublasGemmEx with 16-bit inputs and output and
// float accumulation (CUBLAS_COMPUTE_32F).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <string>
#include <type_traits>

#include "../../core/dtype.hpp"
#include "../../core/error.hpp"
#include "blas.cuh"
#include "check.cuh"

namespace moekit::detail {

/// The cudaDataType_t of a 16-bit storage type.
template <storage_16 T>
inline constexpr cudaDataType_t cuda_data_type = std::is_same_v<T, bf16> ? CUDA_R_16BF : CUDA_R_16F;

/// A row-major GEMM's sizes as cuBLAS's column-major call wants them: checked
/// against int (cuBLAS's 32-bit API), leading dimensions at least 1 (cuBLAS
/// rejects 0, which a row-major caller passes for an empty k).
struct column_major_gemm {
  cublasOperation_t op_a, op_b;
  int m, n, k, lda, ldb, ldc;

  static column_major_gemm of(const char* op, bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                              std::size_t lda, std::size_t ldb, std::size_t ldc) {
    return {trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
            trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
            to_int(op, "m", m),
            to_int(op, "n", n),
            to_int(op, "k", k),
            to_int(op, "lda", std::max<std::size_t>(lda, 1)),
            to_int(op, "ldb", std::max<std::size_t>(ldb, 1)),
            to_int(op, "ldc", std::max<std::size_t>(ldc, 1))};
  }

  static int to_int(const char* op, const char* what, std::size_t v) {
    if (v > static_cast<std::size_t>(INT_MAX))
      throw value_error(std::string(op) + ": " + what + " = " + std::to_string(v) +
                        " exceeds the 32-bit sizes cuBLAS takes");
    return static_cast<int>(v);
  }
};

struct cuda_gemm {
  /// C(m,n) = alpha * op(A) * op(B) + beta * C, row-major; op(X) = X or Xᵀ.
  /// lda/ldb/ldc are the row strides of A, B and C as stored (device memory).
  template <class T>
    requires(real<T> || storage_16<T>)
  static void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a,
                   std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;  // k == 0 still scales C by beta
    const auto d = column_major_gemm::of("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
    cublasHandle_t h = cublas_handle("gemm");
    if constexpr (std::is_same_v<T, float>) {
      MOEKIT_CUBLAS_CHECK(cublasSgemm(h, d.op_b, d.op_a, d.n, d.m, d.k, &alpha, b, d.ldb, a, d.lda, &beta, c, d.ldc),
                          "gemm");
    } else if constexpr (std::is_same_v<T, double>) {
      MOEKIT_CUBLAS_CHECK(cublasDgemm(h, d.op_b, d.op_a, d.n, d.m, d.k, &alpha, b, d.ldb, a, d.lda, &beta, c, d.ldc),
                          "gemm");
    } else {
      const float alpha_f = static_cast<float>(alpha), beta_f = static_cast<float>(beta);
      constexpr cudaDataType_t type = cuda_data_type<T>;
      MOEKIT_CUBLAS_CHECK(cublasGemmEx(h, d.op_b, d.op_a, d.n, d.m, d.k, &alpha_f, b, type, d.ldb, a, type, d.lda,
                                       &beta_f, c, type, d.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                          "gemm");
    }
  }

  /// `batch` independent GEMMs whose operands sit stride_a/b/c elements apart,
  /// in one cuBLAS call.
  template <class T>
    requires(real<T> || storage_16<T>)
  static void gemm_strided_batched(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
                                   const T* a, std::size_t lda, std::size_t stride_a, const T* b, std::size_t ldb,
                                   std::size_t stride_b, T beta, T* c, std::size_t ldc, std::size_t stride_c,
                                   std::size_t batch) {
    if (m == 0 || n == 0 || batch == 0) return;
    const auto d = column_major_gemm::of("gemm_strided_batched", trans_a, trans_b, m, n, k, lda, ldb, ldc);
    const int count = column_major_gemm::to_int("gemm_strided_batched", "batch", batch);
    const auto sa = static_cast<long long>(stride_a), sb = static_cast<long long>(stride_b),
               sc = static_cast<long long>(stride_c);
    cublasHandle_t h = cublas_handle("gemm_strided_batched");
    if constexpr (std::is_same_v<T, float>) {
      MOEKIT_CUBLAS_CHECK(cublasSgemmStridedBatched(h, d.op_b, d.op_a, d.n, d.m, d.k, &alpha, b, d.ldb, sb, a, d.lda, sa,
                                                    &beta, c, d.ldc, sc, count),
                          "gemm_strided_batched");
    } else if constexpr (std::is_same_v<T, double>) {
      MOEKIT_CUBLAS_CHECK(cublasDgemmStridedBatched(h, d.op_b, d.op_a, d.n, d.m, d.k, &alpha, b, d.ldb, sb, a, d.lda, sa,
                                                    &beta, c, d.ldc, sc, count),
                          "gemm_strided_batched");
    } else {
      const float alpha_f = static_cast<float>(alpha), beta_f = static_cast<float>(beta);
      constexpr cudaDataType_t type = cuda_data_type<T>;
      MOEKIT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, d.op_b, d.op_a, d.n, d.m, d.k, &alpha_f, b, type, d.ldb, sb, a,
                                                     type, d.lda, sa, &beta_f, c, type, d.ldc, sc, count,
                                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                          "gemm_strided_batched");
    }
  }
};

}  // namespace moekit::detail
