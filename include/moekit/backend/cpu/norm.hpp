// moekit/backend/cpu/norm.hpp — layer norm and RMS norm over the rows of a
// (rows, cols) matrix, and their backward passes. Row statistics accumulate in
// double when T is float; dgamma/dbeta sum the rows in order for every column,
// so every result is the same for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "parallel.hpp"

namespace moekit::detail {

struct cpu_norm {
  /// y = (x - mean) * rstd * gamma + beta per row, rstd = 1 / sqrt(var + eps)
  /// (biased variance). gamma, beta, mean_out and rstd_out may be null.
  template <class T>
  static void layer_norm_rows(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* beta, T eps,
                              T* y, T* mean_out, T* rstd_out) {
    parallel_for(rows, cols * 4, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T* xr = x + r * cols;
        acc_t<T> sum = 0;
        for (std::size_t c = 0; c < cols; ++c) sum += xr[c];
        const acc_t<T> mean = sum / static_cast<acc_t<T>>(cols);
        // Two passes: sum((x - mean)²) does not cancel like sum(x²) - n·mean².
        acc_t<T> sq = 0;
        for (std::size_t c = 0; c < cols; ++c) sq += (xr[c] - mean) * (xr[c] - mean);
        const acc_t<T> rstd = 1 / std::sqrt(sq / static_cast<acc_t<T>>(cols) + eps);
        if (mean_out) mean_out[r] = static_cast<T>(mean);
        if (rstd_out) rstd_out[r] = static_cast<T>(rstd);
        affine(cols, y + r * cols, gamma, beta,
               [&](std::size_t c) { return static_cast<T>((xr[c] - mean) * rstd); });
      }
    });
  }

  /// From dy and the forward's mean/rstd: dx, dgamma = Σ_rows dy·x̂, dbeta = Σ_rows dy.
  /// gamma null means no scale; each of dx, dgamma, dbeta may be null (not wanted).
  template <class T>
  static void layer_norm_rows_backward(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* mean,
                                       const T* rstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
    auto x_hat = [&](std::size_t r, std::size_t c) { return (x[r * cols + c] - mean[r]) * rstd[r]; };
    if (dx) {
      // With g = dy·gamma: dx = rstd · (g - mean(g) - x̂ · mean(g·x̂)).
      parallel_for(rows, cols * 8, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t r = lo; r < hi; ++r) {
          acc_t<T> sum_g = 0, sum_gx = 0;
          for (std::size_t c = 0; c < cols; ++c) {
            const T g = scaled(dy[r * cols + c], gamma, c);
            sum_g += g;
            sum_gx += g * x_hat(r, c);
          }
          const T mean_g = static_cast<T>(sum_g / static_cast<acc_t<T>>(cols));
          const T mean_gx = static_cast<T>(sum_gx / static_cast<acc_t<T>>(cols));
          for (std::size_t c = 0; c < cols; ++c)
            dx[r * cols + c] = rstd[r] * (scaled(dy[r * cols + c], gamma, c) - mean_g - x_hat(r, c) * mean_gx);
        }
      });
    }
    if (dgamma)
      column_sums(rows, cols, dgamma, [&](std::size_t r, std::size_t c) { return dy[r * cols + c] * x_hat(r, c); });
    if (dbeta) column_sums(rows, cols, dbeta, [&](std::size_t r, std::size_t c) { return dy[r * cols + c]; });
  }

  /// y = x * rstd * gamma per row, rstd = 1 / sqrt(mean(x²) + eps). gamma and rstd_out may be null.
  template <class T>
  static void rms_norm_rows(std::size_t rows, std::size_t cols, const T* x, const T* gamma, T eps, T* y, T* rstd_out) {
    parallel_for(rows, cols * 3, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T* xr = x + r * cols;
        acc_t<T> sq = 0;
        for (std::size_t c = 0; c < cols; ++c) sq += acc_t<T>(xr[c]) * xr[c];
        const acc_t<T> rstd = 1 / std::sqrt(sq / static_cast<acc_t<T>>(cols) + eps);
        if (rstd_out) rstd_out[r] = static_cast<T>(rstd);
        affine(cols, y + r * cols, gamma, static_cast<const T*>(nullptr),
               [&](std::size_t c) { return static_cast<T>(xr[c] * rstd); });
      }
    });
  }

  /// From dy and the forward's rstd: dx = rstd · (g - x̂ · mean(g·x̂)) with g = dy·gamma,
  /// dgamma = Σ_rows dy·x̂. gamma null means no scale; dx and dgamma may be null.
  template <class T>
  static void rms_norm_rows_backward(std::size_t rows, std::size_t cols, const T* x, const T* gamma, const T* rstd,
                                     const T* dy, T* dx, T* dgamma) {
    auto x_hat = [&](std::size_t r, std::size_t c) { return x[r * cols + c] * rstd[r]; };
    if (dx) {
      parallel_for(rows, cols * 6, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t r = lo; r < hi; ++r) {
          acc_t<T> sum_gx = 0;
          for (std::size_t c = 0; c < cols; ++c) sum_gx += scaled(dy[r * cols + c], gamma, c) * x_hat(r, c);
          const T mean_gx = static_cast<T>(sum_gx / static_cast<acc_t<T>>(cols));
          for (std::size_t c = 0; c < cols; ++c)
            dx[r * cols + c] = rstd[r] * (scaled(dy[r * cols + c], gamma, c) - x_hat(r, c) * mean_gx);
        }
      });
    }
    if (dgamma)
      column_sums(rows, cols, dgamma, [&](std::size_t r, std::size_t c) { return dy[r * cols + c] * x_hat(r, c); });
  }

 private:
  /// Accumulator of row statistics: double for float, T itself for wider types.
  template <class T>
  using acc_t = std::common_type_t<T, double>;

  template <class T>
  static T scaled(T v, const T* gamma, std::size_t c) {
    return gamma ? v * gamma[c] : v;
  }

  /// y[c] = normalised(c) * gamma[c] + beta[c], either of gamma, beta null.
  template <class T, class F>
  static void affine(std::size_t cols, T* y, const T* gamma, const T* beta, F normalised) {
    for (std::size_t c = 0; c < cols; ++c) y[c] = scaled(normalised(c), gamma, c) + (beta ? beta[c] : T(0));
  }

  /// out[c] = Σ_r term(r, c), the rows in order for every column whatever the
  /// threads (each thread owns whole columns). Columns go in blocks whose
  /// accumulators live on the stack, so float weights sum in double without a heap buffer.
  template <class T, class F>
  static void column_sums(std::size_t rows, std::size_t cols, T* out, F term) {
    constexpr std::size_t block = 64;
    parallel_for(cols, rows, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t c0 = lo; c0 < hi; c0 += block) {
        const std::size_t c1 = std::min(hi, c0 + block);
        acc_t<T> acc[block] = {};
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t c = c0; c < c1; ++c) acc[c - c0] += term(r, c);
        for (std::size_t c = c0; c < c1; ++c) out[c] = static_cast<T>(acc[c - c0]);
      }
    });
  }
};

}  // namespace moekit::detail
