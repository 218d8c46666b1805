// moekit/backend/cuda/norm.cuh — layer norm and RMS norm over the rows of a
// (rows, cols) matrix on the device, and their backward passes. Rows go to a
// warp or a block each (reduce.cuh's row_group); dgamma/dbeta are column folds
// (reduce.cuh's column_fold), with no atomics, so every result repeats run to
// run. Statistics and arithmetic are in accumulate_t<T>: float for float, bf16
// and half (the CPU sums float rows in double; the difference is rounding),
// double for double.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>

#include "../../core/dtype.hpp"
#include "../functors.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "stream.cuh"

namespace moekit::detail {

/// v * gamma[c] (1 when gamma is null) + beta[c] (0 when beta is null), in A.
template <class A, class T>
__device__ inline A norm_affine(A v, const T* gamma, const T* beta, std::size_t c) {
  return (gamma ? v * static_cast<A>(gamma[c]) : v) + (beta ? static_cast<A>(beta[c]) : A(0));
}

/// Layer norm (Centre) or RMS norm (!Centre) of every row; beta and mean_out
/// are unused by RMS norm. Two passes for the variance: sum((x - mean)²) does
/// not cancel like sum(x²) - n·mean².
template <int Threads, bool Centre, class T>
__global__ void norm_rows_kernel(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* beta, T eps,
                                 T* y, T* mean_out, T* rstd_out) {
  using group = row_group<Threads>;
  using A = accumulate_t<T>;
  const A n = static_cast<A>(cols);
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride()) {
    const T* xr = x + r * cols;
    A mean = 0;
    if constexpr (Centre) {
      A sum = 0;
      for (std::size_t c = group::lane(); c < cols; c += Threads) sum += static_cast<A>(xr[c]);
      mean = group::reduce(sum, fn::add{}) / n;
    }
    A sq = 0;
    for (std::size_t c = group::lane(); c < cols; c += Threads) {
      const A d = static_cast<A>(xr[c]) - mean;
      sq += d * d;
    }
    const A rstd = A(1) / std::sqrt(group::reduce(sq, fn::add{}) / n + static_cast<A>(eps));
    if (group::lane() == 0) {
      if (Centre && mean_out) mean_out[r] = static_cast<T>(mean);
      if (rstd_out) rstd_out[r] = static_cast<T>(rstd);
    }
    for (std::size_t c = group::lane(); c < cols; c += Threads)
      y[r * cols + c] = static_cast<T>(norm_affine((static_cast<A>(xr[c]) - mean) * rstd, gamma, beta, c));
  }
}

/// dx of layer norm (Centre) or RMS norm: with g = dy·gamma and x̂ the
/// normalised x, dx = rstd · (g - mean(g) - x̂ · mean(g·x̂)), without the
/// mean(g) term for RMS norm. mean is unused by RMS norm.
template <int Threads, bool Centre, class T>
__global__ void norm_rows_backward_kernel(std::size_t rows, std::size_t cols, const T* x, const T* gamma,
                                          const T* mean, const T* rstd, const T* dy, T* dx) {
  using group = row_group<Threads>;
  using A = accumulate_t<T>;
  const A n = static_cast<A>(cols);
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride()) {
    const std::size_t at = r * cols;
    const A mu = Centre ? static_cast<A>(mean[r]) : A(0), s = static_cast<A>(rstd[r]);
    A sum_g = 0, sum_gx = 0;
    for (std::size_t c = group::lane(); c < cols; c += Threads) {
      const A g = norm_affine(static_cast<A>(dy[at + c]), gamma, static_cast<const T*>(nullptr), c);
      sum_g += g;
      sum_gx += g * (static_cast<A>(x[at + c]) - mu) * s;
    }
    const A mean_g = Centre ? group::reduce(sum_g, fn::add{}) / n : A(0);
    const A mean_gx = group::reduce(sum_gx, fn::add{}) / n;
    for (std::size_t c = group::lane(); c < cols; c += Threads) {
      const A g = norm_affine(static_cast<A>(dy[at + c]), gamma, static_cast<const T*>(nullptr), c);
      const A x_hat = (static_cast<A>(x[at + c]) - mu) * s;
      dx[at + c] = static_cast<T>(s * (g - mean_g - x_hat * mean_gx));
    }
  }
}

/// dy[r, c] · x̂[r, c] with x̂ = (x - mean[r]) · rstd[r] (mean null: RMS norm), as a column-fold term.
template <class T>
struct dy_x_hat_term {
  const T *x, *mean, *rstd, *dy;
  std::size_t cols;
  __device__ accumulate_t<T> operator()(std::size_t r, std::size_t c) const {
    using A = accumulate_t<T>;
    const A mu = mean ? static_cast<A>(mean[r]) : A(0);
    return static_cast<A>(dy[r * cols + c]) * ((static_cast<A>(x[r * cols + c]) - mu) * static_cast<A>(rstd[r]));
  }
};
struct cuda_norm {
  /// y = (x - mean) * rstd * gamma + beta per row, rstd = 1 / sqrt(var + eps)
  /// (biased variance). gamma, beta, mean_out and rstd_out may be null.
  template <class T>
  static void layer_norm_rows(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* beta, T eps,
                              T* y, T* mean_out, T* rstd_out) {
    forward<true>(rows, cols, x, gamma, beta, eps, y, mean_out, rstd_out, "layer_norm_rows");
  }

  /// From dy and the forward's mean/rstd: dx, dgamma = Σ_rows dy·x̂, dbeta = Σ_rows dy.
  /// gamma null means no scale; each of dx, dgamma, dbeta may be null (not wanted).
  template <class T>
  static void layer_norm_rows_backward(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* mean,
                                       const T* rstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
    if (dx) backward_dx<true>(rows, cols, x, gamma, mean, rstd, dy, dx, "layer_norm_rows_backward");
    if (dgamma) column_sums(rows, cols, dy_x_hat_term<T>{x, mean, rstd, dy, cols}, dgamma, "layer_norm_rows_backward");
    if (dbeta) column_sums(rows, cols, matrix_term<T, accumulate_t<T>>{dy, cols}, dbeta, "layer_norm_rows_backward");
  }

  /// y = x * rstd * gamma per row, rstd = 1 / sqrt(mean(x²) + eps). gamma and rstd_out may be null.
  template <class T>
  static void rms_norm_rows(std::size_t rows, std::size_t cols, const T* x, const T* gamma, T eps, T* y, T* rstd_out) {
    forward<false>(rows, cols, x, gamma, static_cast<const T*>(nullptr), eps, y, static_cast<T*>(nullptr), rstd_out,
                   "rms_norm_rows");
  }

  /// From dy and the forward's rstd: dx = rstd · (g - x̂ · mean(g·x̂)) with g = dy·gamma,
  /// dgamma = Σ_rows dy·x̂. gamma null means no scale; dx and dgamma may be null.
  template <class T>
  static void rms_norm_rows_backward(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* rstd,
                                     const T* dy, T* dx, T* dgamma) {
    if (dx) backward_dx<false>(rows, cols, x, gamma, static_cast<const T*>(nullptr), rstd, dy, dx,
                               "rms_norm_rows_backward");
    if (dgamma)
      column_sums(rows, cols, dy_x_hat_term<T>{x, static_cast<const T*>(nullptr), rstd, dy, cols}, dgamma,
                  "rms_norm_rows_backward");
  }

 private:
  template <bool Centre, class T>
  static void forward(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* beta, T eps, T* y,
                      T* mean_out, T* rstd_out, const char* op) {
    if (rows == 0) return;
    launch_rows(rows, cols, [&](auto threads, unsigned blocks) {
      norm_rows_kernel<decltype(threads)::value, Centre><<<blocks, threads_per_block, 0, current_stream()>>>(
          rows, cols, x, gamma, beta, eps, y, mean_out, rstd_out);
    });
    check_launch(op, "norm_rows_kernel");
  }

  template <bool Centre, class T>
  static void backward_dx(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* mean,
                          const T* rstd, const T* dy, T* dx, const char* op) {
    if (rows == 0) return;
    launch_rows(rows, cols, [&](auto threads, unsigned blocks) {
      norm_rows_backward_kernel<decltype(threads)::value, Centre><<<blocks, threads_per_block, 0, current_stream()>>>(
          rows, cols, x, gamma, mean, rstd, dy, dx);
    });
    check_launch(op, "norm_rows_backward_kernel");
  }

  /// out[c] = Σ_r term(r, c), summed in accumulate_t<T>.
  template <class T, class Term>
  static void column_sums(std::size_t rows, std::size_t cols, Term term, T* out, const char* op) {
    column_fold(rows, cols, term, accumulate_t<T>(0), fn::add{}, store_to<T>{out}, op);
  }
};

}  // namespace moekit::detail
