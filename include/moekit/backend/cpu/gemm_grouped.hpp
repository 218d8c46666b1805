// moekit/backend/cpu/gemm_grouped.hpp — grouped GEMMs over contiguous row
// segments: the expert GEMMs of an MoE layer. Rows [offsets[g], offsets[g+1])
// of A belong to group g, whose weight is the g-th matrix of a stacked tensor.
//
// Threads: many small groups run one per thread with single-threaded BLAS;
// few large groups run one after another, each GEMM with all BLAS threads.
// Never both at once (BLAS threads inside parallel regions measured up to 2×
// slower here).
#pragma once

#include <cstddef>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "gemm.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_gemm_grouped {
  /// For every group g: C_g = alpha · A_g · op(W_g) + beta · C_g, where A_g and
  /// C_g are the g-th row segments of A (rows, k) and C (rows, n), and W_g is
  /// W + g·stride_w, stored (k, n), or (n, k) when trans_w.
  template <real T>
  static void gemm_grouped(bool trans_w, std::size_t groups, const index_t* offsets, std::size_t k, std::size_t n,
                           T alpha, const T* a, const T* w, std::size_t stride_w, T beta, T* c) {
    for_each_group(groups, offsets, k * n, [&](std::size_t g, std::size_t begin, std::size_t rows) {
      cpu_gemm::gemm(false, trans_w, rows, n, k, alpha, a + begin * k, k, w + g * stride_w, trans_w ? k : n, beta,
                     c + begin * n, n);
    });
  }

  /// For every group g: C_g = alpha · A_gᵀ · D_g + beta · C_g, with A_g the
  /// g-th row segment of A (rows, m), D_g that of D (rows, n), and C_g the g-th
  /// (m, n) matrix of the stacked C (stride_c apart). The weight gradient of
  /// gemm_grouped; an empty group gets beta · C_g (zeros for beta = 0).
  template <real T>
  static void gemm_grouped_reduce(std::size_t groups, const index_t* offsets, std::size_t m, std::size_t n, T alpha,
                                  const T* a, const T* d, T beta, T* c, std::size_t stride_c) {
    for_each_group(groups, offsets, m * n, [&](std::size_t g, std::size_t begin, std::size_t rows) {
      T* cg = c + g * stride_c;
      if (rows == 0) {
        for (std::size_t i = 0; i < m * n; ++i) cg[i] = beta == T(0) ? T(0) : beta * cg[i];
        return;
      }
      cpu_gemm::gemm(true, false, m, n, rows, alpha, a + begin * m, m, d + begin * n, n, beta, cg, n);
    }, /*visit_empty=*/true);
  }

 private:
  /// Calls f(group, first_row, rows) for each group, choosing between one
  /// group per thread and one multi-threaded GEMM at a time.
  template <class F>
  static void for_each_group(std::size_t groups, const index_t* offsets, std::size_t flops_per_row, F&& f,
                             bool visit_empty = false) {
    const std::size_t total_rows = static_cast<std::size_t>(offsets[groups] - offsets[0]);
    const int threads = num_threads();
    // A group is "large" when its GEMM alone keeps all BLAS threads busy.
    const bool spread = threads > 1 && groups > 1 &&
                        total_rows * flops_per_row / groups < std::size_t{256} * 256 * 256;
    auto one = [&](std::size_t g) {
      const auto begin = static_cast<std::size_t>(offsets[g]);
      const auto rows = static_cast<std::size_t>(offsets[g + 1] - offsets[g]);
      if (rows > 0 || visit_empty) f(g, begin, rows);
    };
    if (!spread) {
      for (std::size_t g = 0; g < groups; ++g) one(g);
      return;
    }
    blas_single_thread guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::size_t g = 0; g < groups; ++g) one(g);
  }
};

}  // namespace moekit::detail
