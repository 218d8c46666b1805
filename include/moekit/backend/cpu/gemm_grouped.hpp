// moekit/backend/cpu/gemm_grouped.hpp — grouped GEMMs over contiguous row
// segments: the expert GEMMs of an MoE layer. Rows [offsets[g], offsets[g+1])
// of A belong to group g, whose weight is the g-th matrix of a stacked tensor.
//
// Threads: many small groups run one per thread with single-threaded BLAS;
// few large groups run one after another, each GEMM with all BLAS threads.
// Never both at once (BLAS threads inside parallel regions measured up to 2×
// slower here).
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>

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
      gemm_in_tiles(false, trans_w, rows, n, k, alpha, a + begin * k, k, w + g * stride_w, trans_w ? k : n, beta,
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
      gemm_in_tiles(true, false, m, n, rows, alpha, a + begin * m, m, d + begin * n, n, beta, cg, n);
    }, /*visit_empty=*/true);
  }

  /// The backward of a per-group bias followed by an activation, the
  /// epilogue of a grouped GEMM, in one pass over h and dy: for each row r of
  /// group g, dz[r, c] = df(h[r, c] + b[g, c], dy[r, c]); and, unless db is
  /// null, db[g, c] = the sum of dz[r, c] over g's rows in row order. Threads
  /// split the columns, so the sums do not depend on the thread count.
  template <class T, class DF>
  static void grouped_bias_activation_backward(std::size_t groups, const index_t* offsets, std::size_t n, const T* h,
                                               const T* b, const T* dy, DF df, T* dz, T* db) {
    const auto total_rows = static_cast<std::size_t>(offsets[groups] - offsets[0]);
    parallel_for(n, total_rows + groups, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t g = 0; g < groups; ++g) {
        const T* bg = b + g * n;
        T* dbg = db ? db + g * n : nullptr;
        if (dbg)
          for (std::size_t c = lo; c < hi; ++c) dbg[c] = T(0);
        for (auto r = static_cast<std::size_t>(offsets[g]); r < static_cast<std::size_t>(offsets[g + 1]); ++r) {
          const T* hr = h + r * n;
          const T* dyr = dy + r * n;
          T* dzr = dz + r * n;
#pragma omp simd
          for (std::size_t c = lo; c < hi; ++c) dzr[c] = df(hr[c] + bg[c], dyr[c]);
          if (dbg) {
#pragma omp simd
            for (std::size_t c = lo; c < hi; ++c) dbg[c] += dzr[c];
          }
        }
      }
    });
  }

 private:
  /// Largest m·n·k that OpenBLAS (0.3.16+, AVX-512 kernel sets) runs through
  /// its small-matrix kernels, which read A and B in place instead of packing them.
  static constexpr std::size_t small_gemm_volume = std::size_t{100} * 100 * 100;

  /// Tile sizes for one expert GEMM C(m, n) = op(A)·op(B) over k, or {m, n}
  /// for a single call. Expert GEMMs with few rows pay 15–25 % for packing
  /// (per expert, unlike one dense GEMM); cut into tiles under
  /// small_gemm_volume they skip it. Measured with OpenBLAS 0.3.21 on Zen 4,
  /// 1 thread: 48-row NN 92 -> 115 GFLOP/s (48 x 64 tiles), NT 87 -> 101
  /// (24..32 x 32), TN over 48 rows 94 -> 112 (64 x 64); 128-row NN 88 -> 100,
  /// NT 92 -> 102; TN over 128 rows and anything above ~160 rows lost, so
  /// those stay single calls. Tiles change no result beyond rounding order.
  static std::pair<std::size_t, std::size_t> small_tiles(bool trans_a, bool trans_b, std::size_t m, std::size_t n,
                                                         std::size_t k) {
    const std::pair<std::size_t, std::size_t> whole{m, n};
    if (m * n * k <= small_gemm_volume) return whole;
    if (trans_a) return k <= 64 ? std::pair<std::size_t, std::size_t>{64, 64} : whole;  // dW: k = expert rows
    if (m > 160) return whole;
    if (trans_b) return 32 * 32 * k <= small_gemm_volume ? std::pair<std::size_t, std::size_t>{32, 32} : whole;
    const std::size_t tm = std::min<std::size_t>(m, 48);
    const std::size_t tn_max = small_gemm_volume / (tm * k) / 16 * 16;
    if (tn_max < 32) return whole;
    const std::size_t pieces = (n + tn_max - 1) / tn_max;  // even column tiles, multiples of 16
    return {tm, ((n + pieces - 1) / pieces + 15) / 16 * 16};
  }

  /// cpu_gemm::gemm as small_tiles cuts it, when the BLAS is OpenBLAS on one
  /// thread (its small-matrix kernels are single-threaded, and another BLAS
  /// has none); otherwise one call. Define MOEKIT_NO_SMALL_GEMM_TILES to
  /// measure without tiles.
  template <real T>
  static void gemm_in_tiles(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
                            const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
#if defined(MOEKIT_NO_SMALL_GEMM_TILES)
    const bool tiles = false;
#else
    const bool tiles = openblas_get_num_threads && openblas_get_num_threads() == 1;
#endif
    const auto tile = tiles ? small_tiles(trans_a, trans_b, m, n, k) : std::pair<std::size_t, std::size_t>{m, n};
    for (std::size_t i = 0; i < m; i += tile.first)
      for (std::size_t j = 0; j < n; j += tile.second)
        cpu_gemm::gemm(trans_a, trans_b, std::min(tile.first, m - i), std::min(tile.second, n - j), k, alpha,
                       trans_a ? a + i : a + i * lda, lda, trans_b ? b + j * ldb : b + j, ldb, beta, c + i * ldc + j,
                       ldc);
  }

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
