// moekit/backend/cpu/batch_norm.hpp — batch norm over the columns (features)
// of a (rows, cols) matrix: per-column statistics, the normalisation, and the
// fused backward. Each thread owns whole columns and sums their rows in order,
// in double when T is float, so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "parallel.hpp"

namespace moekit::detail {

struct cpu_batch_norm {
  /// mean[c] and biased variance var[c] of every column (two passes: no
  /// cancellation as in Σx² − n·mean²).
  template <class T>
  static void batch_norm_stats(std::size_t rows, std::size_t cols, const T* x, T* mean, T* var) {
    column_blocks(rows, cols, 3, [&](std::size_t c0, std::size_t c1) {
      acc_t<T> sum[block] = {}, sq[block] = {};
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = c0; c < c1; ++c) sum[c - c0] += x[r * cols + c];
      for (std::size_t c = c0; c < c1; ++c) sum[c - c0] /= static_cast<acc_t<T>>(rows);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = c0; c < c1; ++c) {
          const acc_t<T> d = x[r * cols + c] - sum[c - c0];
          sq[c - c0] += d * d;
        }
      for (std::size_t c = c0; c < c1; ++c) {
        mean[c] = static_cast<T>(sum[c - c0]);
        var[c] = static_cast<T>(sq[c - c0] / static_cast<acc_t<T>>(rows));
      }
    });
  }

  /// y = (x − mean) · rstd · gamma + beta per column, rstd = 1/√(var + eps),
  /// written to rstd_out. gamma and beta may be null (no affine weights).
  template <class T>
  static void batch_norm_forward(std::size_t rows, std::size_t cols, const T* x, const T* mean, const T* var,
                                 const T* gamma, const T* beta, T eps, T* y, T* rstd_out) {
    for (std::size_t c = 0; c < cols; ++c) rstd_out[c] = static_cast<T>(1 / std::sqrt(acc_t<T>(var[c]) + eps));
    parallel_for(rows, cols * 2, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r)
        for (std::size_t c = 0; c < cols; ++c) {
          const T x_hat = (x[r * cols + c] - mean[c]) * rstd_out[c];
          y[r * cols + c] = (gamma ? x_hat * gamma[c] : x_hat) + (beta ? beta[c] : T(0));
        }
    });
  }

  /// From dy and the forward's mean/rstd: dbeta = Σ_rows dy, dgamma = Σ_rows dy·x̂
  /// and dx. With batch statistics (training) the statistics depend on x:
  /// dx = (γ·rstd/N)·(N·dy − Σdy − x̂·Σ(dy·x̂)); with fixed (running)
  /// statistics dx = γ·rstd·dy. gamma null means no scale; dx, dgamma, dbeta may
  /// be null (not wanted).
  template <class T>
  static void batch_norm_backward(std::size_t rows, std::size_t cols, const T* x, const T* mean, const T* rstd,
                                  const T* gamma, const T* dy, bool batch_stats, T* dx, T* dgamma, T* dbeta) {
    column_blocks(rows, cols, 6, [&](std::size_t c0, std::size_t c1) {
      auto x_hat = [&](std::size_t r, std::size_t c) { return (x[r * cols + c] - mean[c]) * rstd[c]; };
      acc_t<T> sum_dy[block] = {}, sum_dy_xhat[block] = {};
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = c0; c < c1; ++c) {
          sum_dy[c - c0] += dy[r * cols + c];
          sum_dy_xhat[c - c0] += dy[r * cols + c] * x_hat(r, c);
        }
      for (std::size_t c = c0; c < c1; ++c) {
        if (dbeta) dbeta[c] = static_cast<T>(sum_dy[c - c0]);
        if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat[c - c0]);
      }
      if (!dx) return;
      const acc_t<T> n = static_cast<acc_t<T>>(rows);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = c0; c < c1; ++c) {
          const acc_t<T> scale = (gamma ? acc_t<T>(gamma[c]) : acc_t<T>(1)) * rstd[c];
          const acc_t<T> g = dy[r * cols + c];
          dx[r * cols + c] = static_cast<T>(batch_stats ? scale / n * (n * g - sum_dy[c - c0] -
                                                                        x_hat(r, c) * sum_dy_xhat[c - c0])
                                                        : scale * g);
        }
    });
  }

 private:
  /// Accumulator of column statistics: double for float, T itself for wider types.
  template <class T>
  using acc_t = std::common_type_t<T, double>;

  /// Columns per block: their accumulators live on the stack.
  static constexpr std::size_t block = 64;

  /// body(c0, c1) over blocks of columns, each thread owning whole blocks.
  template <class F>
  static void column_blocks(std::size_t rows, std::size_t cols, std::size_t cost, F&& body) {
    const std::size_t blocks = (cols + block - 1) / block;
    parallel_for(blocks, rows * block * cost, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t b = lo; b < hi; ++b) body(b * block, std::min(cols, (b + 1) * block));
    });
  }
};

}  // namespace moekit::detail
