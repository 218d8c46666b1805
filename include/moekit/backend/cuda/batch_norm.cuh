// moekit/backend/cuda/batch_norm.cuh — batch norm over the columns (features)
// of a (rows, cols) matrix on the device: per-column statistics, the
// normalisation, and the fused backward. Column sums are reduce.cuh's column
// folds (fixed order, no atomics), in accumulate_t<T>: float for float, bf16
// and half (the CPU sums float columns in double; the difference is rounding),
// double for double. Element-wise parts are grid-stride maps over the matrix.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>

#include "../../core/dtype.hpp"
#include "../functors.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "map.cuh"
#include "norm.cuh"
#include "reduce.cuh"
#include "stream.cuh"

namespace moekit::detail {

/// (x[r, c] - centre[c])², as a column-fold term for the variance.
template <class T>
struct squared_deviation_term {
  const T *x, *centre;
  std::size_t cols;
  __device__ accumulate_t<T> operator()(std::size_t r, std::size_t c) const {
    const accumulate_t<T> d = static_cast<accumulate_t<T>>(x[r * cols + c]) - static_cast<accumulate_t<T>>(centre[c]);
    return d * d;
  }
};
/// dy[r, c] · x̂[r, c] with x̂ = (x - mean[c]) · rstd[c], as a column-fold term.
template <class T>
struct column_dy_x_hat_term {
  const T *x, *mean, *rstd, *dy;
  std::size_t cols;
  __device__ accumulate_t<T> operator()(std::size_t r, std::size_t c) const {
    using A = accumulate_t<T>;
    const A x_hat = (static_cast<A>(x[r * cols + c]) - static_cast<A>(mean[c])) * static_cast<A>(rstd[c]);
    return static_cast<A>(dy[r * cols + c]) * x_hat;
  }
};
/// out[c] = v / n converted to T, as a column-fold store.
template <class T>
struct store_mean {
  T* out;
  accumulate_t<T> n;
  __device__ void operator()(std::size_t c, accumulate_t<T> v) const { out[c] = static_cast<T>(v / n); }
};
/// sums[c] = v and out[c] = v converted to T, each unless null.
template <class T>
struct store_sum {
  accumulate_t<T>* sums;
  T* out;
  __device__ void operator()(std::size_t c, accumulate_t<T> v) const {
    if (sums) sums[c] = v;
    if (out) out[c] = static_cast<T>(v);
  }
};

template <class T>
__global__ void batch_norm_rstd_kernel(std::size_t cols, const T* var, T eps, T* rstd) {
  using A = accumulate_t<T>;
  for (std::size_t c = global_thread(); c < cols; c += grid_stride())
    rstd[c] = static_cast<T>(A(1) / std::sqrt(static_cast<A>(var[c]) + static_cast<A>(eps)));
}

template <class T>
__global__ void batch_norm_forward_kernel(std::size_t rows, std::size_t cols, const T* x, const T* mean,
                                          const T* rstd, const T* gamma, const T* beta, T* y) {
  using A = accumulate_t<T>;
  const std::size_t n = rows * cols;
  std::size_t i = global_thread();
  if (i >= n) return;
  for (matrix_walk at(i, grid_stride(), cols); i < n; i += grid_stride(), at.advance()) {
    const std::size_t c = at.col;
    const A x_hat = (static_cast<A>(x[i]) - static_cast<A>(mean[c])) * static_cast<A>(rstd[c]);
    y[i] = static_cast<T>(norm_affine(x_hat, gamma, beta, c));
  }
}

/// dx = (γ·rstd/N)·(N·dy − Σdy − x̂·Σ(dy·x̂)) with batch statistics, γ·rstd·dy without.
template <class T>
__global__ void batch_norm_dx_kernel(std::size_t rows, std::size_t cols, const T* x, const T* mean, const T* rstd,
                                     const T* gamma, const T* dy, bool batch_stats, const accumulate_t<T>* sum_dy,
                                     const accumulate_t<T>* sum_dy_x_hat, T* dx) {
  using A = accumulate_t<T>;
  const std::size_t total = rows * cols;
  const A n = static_cast<A>(rows);
  std::size_t i = global_thread();
  if (i >= total) return;
  for (matrix_walk at(i, grid_stride(), cols); i < total; i += grid_stride(), at.advance()) {
    const std::size_t c = at.col;
    const A scale = (gamma ? static_cast<A>(gamma[c]) : A(1)) * static_cast<A>(rstd[c]);
    const A g = static_cast<A>(dy[i]);
    if (!batch_stats) {
      dx[i] = static_cast<T>(scale * g);
      continue;
    }
    const A x_hat = (static_cast<A>(x[i]) - static_cast<A>(mean[c])) * static_cast<A>(rstd[c]);
    dx[i] = static_cast<T>(scale / n * (n * g - sum_dy[c] - x_hat * sum_dy_x_hat[c]));
  }
}

struct cuda_batch_norm {
  /// mean[c] and biased variance var[c] of every column (two passes: no
  /// cancellation as in Σx² − n·mean²).
  template <class T>
  static void batch_norm_stats(std::size_t rows, std::size_t cols, const T* x, T* mean, T* var) {
    using A = accumulate_t<T>;
    const A n = static_cast<A>(rows);
    column_fold(rows, cols, matrix_term<T, A>{x, cols}, A(0), fn::add{}, store_mean<T>{mean, n}, "batch_norm_stats");
    column_fold(rows, cols, squared_deviation_term<T>{x, mean, cols}, A(0), fn::add{}, store_mean<T>{var, n},
                "batch_norm_stats");
  }

  /// y = (x − mean) · rstd · gamma + beta per column, rstd = 1/√(var + eps),
  /// written to rstd_out. gamma and beta may be null (no affine weights).
  template <class T>
  static void batch_norm_forward(std::size_t rows, std::size_t cols, const T* x, const T* mean, const T* var,
                                 const T* gamma, const T* beta, T eps, T* y, T* rstd_out) {
    if (cols == 0) return;
    batch_norm_rstd_kernel<<<grid_for(cols), threads_per_block, 0, current_stream()>>>(cols, var, eps, rstd_out);
    check_launch("batch_norm_forward", "batch_norm_rstd_kernel");
    if (rows == 0) return;
    batch_norm_forward_kernel<<<grid_for(rows * cols), threads_per_block, 0, current_stream()>>>(
        rows, cols, x, mean, rstd_out, gamma, beta, y);
    check_launch("batch_norm_forward", "batch_norm_forward_kernel");
  }

  /// From dy and the forward's mean/rstd: dbeta = Σ_rows dy, dgamma = Σ_rows dy·x̂
  /// and dx. With batch statistics (training) the statistics depend on x:
  /// dx = (γ·rstd/N)·(N·dy − Σdy − x̂·Σ(dy·x̂)); with fixed (running)
  /// statistics dx = γ·rstd·dy. gamma null means no scale; dx, dgamma, dbeta may
  /// be null (not wanted).
  template <class T>
  static void batch_norm_backward(std::size_t rows, std::size_t cols, const T* x, const T* mean, const T* rstd,
                                  const T* gamma, const T* dy, bool batch_stats, T* dx, T* dgamma, T* dbeta) {
    using A = accumulate_t<T>;
    if (cols == 0) return;
    // dx with batch statistics needs both sums in A; dbeta and dgamma are written as they are made.
    const bool dx_sums = dx && batch_stats;
    device_scratch<A> sums(dx_sums ? 2 * cols : 0);  // Σdy, Σdy·x̂
    A* sum_dy = dx_sums ? sums.get() : nullptr;
    A* sum_dy_x_hat = dx_sums ? sums.get() + cols : nullptr;
    if (dx_sums || dbeta)
      column_fold(rows, cols, matrix_term<T, A>{dy, cols}, A(0), fn::add{}, store_sum<T>{sum_dy, dbeta},
                  "batch_norm_backward");
    if (dx_sums || dgamma)
      column_fold(rows, cols, column_dy_x_hat_term<T>{x, mean, rstd, dy, cols}, A(0), fn::add{},
                  store_sum<T>{sum_dy_x_hat, dgamma}, "batch_norm_backward");
    if (!dx || rows == 0) return;
    batch_norm_dx_kernel<<<grid_for(rows * cols), threads_per_block, 0, current_stream()>>>(
        rows, cols, x, mean, rstd, gamma, dy, batch_stats, sum_dy, sum_dy_x_hat, dx);
    check_launch("batch_norm_backward", "batch_norm_dx_kernel");
  }
};

}  // namespace moekit::detail
