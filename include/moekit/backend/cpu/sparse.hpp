// moekit/backend/cpu/sparse.hpp — CSR kernels for graph learning: SpMM
// (aggregate neighbour rows), SDDMM (one dot product per stored entry) and a
// softmax over the entries of each row (attention over incoming edges).
//
// All of them work per row and write only that row's outputs, so threads split
// the rows and results do not depend on the thread count. Rows are split into
// chunks of about equal work (entries + rows), not of equal row counts: real
// graphs have heavy-tailed degrees.
//
// Multi-head layout: with H heads the dense operands are (n, H, F) (or any
// (n, H·F)) and the entry values are (nnz, H); head h of entry k uses
// value[k·H + h] and the columns [h·F, (h + 1)·F) of the rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "../../core/config.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_sparse {
  /// y[i, h, :] = Σ_{k in row i} v(k, h) · x[col[k], h, :], for rows i < rows,
  /// where v(k, h) = values[e·H + h] with e = perm ? perm[k] : k, and 1 when
  /// values is null. `perm` lets the transposed structure read A's values.
  template <class T>
  static void spmm_csr(std::size_t rows, std::size_t heads, std::size_t feat, const index_t* row_ptr,
                       const index_t* col, const T* values, const index_t* perm, const T* x, T* y) {
    const std::size_t width = heads * feat;
    row_chunks(rows, row_ptr, width, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        T* MOEKIT_RESTRICT yi = y + i * width;
        std::fill(yi, yi + width, T(0));
        for (auto k = row_ptr[i]; k < row_ptr[i + 1]; ++k) {
          const T* MOEKIT_RESTRICT xj = x + static_cast<std::size_t>(col[k]) * width;
          const std::size_t e = perm ? static_cast<std::size_t>(perm[k]) : static_cast<std::size_t>(k);
          if (heads == 1) {
            const T w = values ? values[e] : T(1);
#pragma omp simd
            for (std::size_t f = 0; f < feat; ++f) yi[f] += w * xj[f];
          } else {
            for (std::size_t h = 0; h < heads; ++h) {
              const T w = values ? values[e * heads + h] : T(1);
              T* MOEKIT_RESTRICT yh = yi + h * feat;
              const T* MOEKIT_RESTRICT xh = xj + h * feat;
#pragma omp simd
              for (std::size_t f = 0; f < feat; ++f) yh[f] += w * xh[f];
            }
          }
        }
      }
    });
  }

  /// out[k, h] = Σ_f a[i, h, f] · b[col[k], h, f] for every entry k of row i.
  template <class T>
  static void sddmm_csr(std::size_t rows, std::size_t heads, std::size_t feat, const index_t* row_ptr,
                        const index_t* col, const T* a, const T* b, T* out) {
    const std::size_t width = heads * feat;
    row_chunks(rows, row_ptr, width, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const T* MOEKIT_RESTRICT ai = a + i * width;
        for (auto k = row_ptr[i]; k < row_ptr[i + 1]; ++k) {
          const T* MOEKIT_RESTRICT bj = b + static_cast<std::size_t>(col[k]) * width;
          for (std::size_t h = 0; h < heads; ++h) {
            T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (std::size_t f = 0; f < feat; ++f) dot += ai[h * feat + f] * bj[h * feat + f];
            out[static_cast<std::size_t>(k) * heads + h] = dot;
          }
        }
      }
    });
  }

  /// For every row and head, out[k, h] = softmax over the row's entries k of
  /// s[k, h] (max-shifted). Empty rows have nothing to write.
  template <class T>
  static void segment_softmax_csr(std::size_t rows, std::size_t heads, const index_t* row_ptr, const T* s, T* out) {
    row_chunks(rows, row_ptr, heads * 8, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const auto b = static_cast<std::size_t>(row_ptr[i]), e = static_cast<std::size_t>(row_ptr[i + 1]);
        for (std::size_t h = 0; h < heads; ++h) {
          T m = -std::numeric_limits<T>::infinity();
          for (std::size_t k = b; k < e; ++k) m = std::max(m, s[k * heads + h]);
          T sum = 0;
          for (std::size_t k = b; k < e; ++k) sum += out[k * heads + h] = std::exp(s[k * heads + h] - m);
          const T inv = T(1) / sum;
          for (std::size_t k = b; k < e; ++k) out[k * heads + h] *= inv;
        }
      }
    });
  }

  /// dx[k, h] = y[k, h] · (dy[k, h] - Σ_{k' in row} y[k', h] dy[k', h]) for y = segment softmax.
  template <class T>
  static void segment_softmax_csr_backward(std::size_t rows, std::size_t heads, const index_t* row_ptr, const T* y,
                                           const T* dy, T* dx) {
    row_chunks(rows, row_ptr, heads * 4, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const auto b = static_cast<std::size_t>(row_ptr[i]), e = static_cast<std::size_t>(row_ptr[i + 1]);
        for (std::size_t h = 0; h < heads; ++h) {
          T dot = 0;
          for (std::size_t k = b; k < e; ++k) dot += y[k * heads + h] * dy[k * heads + h];
          for (std::size_t k = b; k < e; ++k) dx[k * heads + h] = y[k * heads + h] * (dy[k * heads + h] - dot);
        }
      }
    });
  }

 private:
  /// Calls body(lo, hi) over row ranges of about equal work, where row i costs
  /// (entries + 1) · cost_per_entry; one range per thread when the work pays
  /// for the fork. Range boundaries depend on the thread count, the values
  /// computed for a row do not.
  template <class F>
  static void row_chunks(std::size_t rows, const index_t* row_ptr, std::size_t cost_per_entry, F&& body) {
    if (rows == 0) return;
    const std::size_t work = static_cast<std::size_t>(row_ptr[rows]) + rows;  // entries + rows
    const std::size_t chunks = std::min<std::size_t>(rows, static_cast<std::size_t>(num_threads()));
    // Start of chunk c: the first row whose cumulative work reaches c/chunks of the total.
    auto start = [&](std::size_t c) -> std::size_t {
      if (c >= chunks) return rows;
      const std::size_t target = work * c / chunks;
      std::size_t lo = 0, hi = rows;
      while (lo < hi) {
        const std::size_t mid = (lo + hi) / 2;
        if (static_cast<std::size_t>(row_ptr[mid]) + mid < target) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    parallel_for(chunks, work / chunks * cost_per_entry, [&](std::size_t lo, std::size_t hi) {
      if (hi - lo == chunks) {  // one thread does everything: no need to split
        body(std::size_t{0}, rows);
        return;
      }
      for (std::size_t c = lo; c < hi; ++c) body(start(c), start(c + 1));
    });
  }
};

}  // namespace moekit::detail
