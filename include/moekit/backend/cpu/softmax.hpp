// moekit/backend/cpu/softmax.hpp — numerically stable softmax and log-softmax
// over the rows of a (rows, cols) matrix, and their backward passes. Float
// rows of at least cpu_reduce::simd_cols entries run as vector code: e^x by exp_approx
// (~1 ulp; exactly 0 below e^-87, so a masked -inf logit gets probability 0),
// sums and maxima as SIMD reductions (a fixed order per row, whatever the
// threads). Narrower rows (a router over 8 experts) and double (gradient
// checks) keep std::exp and sequential sums: there a vector loop's set-up
// and horizontal sums cost more than the scalar loop (8 columns: 2x slower).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "../../core/fast_exp.hpp"
#include "parallel.hpp"
#include "reduce.hpp"

namespace moekit::detail {

struct cpu_softmax {
  /// out[r] = exp(x[r] - max) / sum(exp(x[r] - max)).
  template <class T>
  static void softmax_rows(std::size_t rows, std::size_t cols, const T* in, T* out) {
    rows_loop(rows, cols, [&](const T* x, T* y) { softmax_row(cols, x, y); }, in, out);
  }

  /// One row of softmax_rows, on the calling thread.
  template <class T>
  static void softmax_row(std::size_t cols, const T* x, T* y) {
    const T m = row_max(x, cols);
    T sum = 0;
    if (vector_row<T>(cols)) {
#pragma omp simd reduction(+ : sum)
      for (std::size_t c = 0; c < cols; ++c) sum += y[c] = exp_or_zero(x[c] - m);
    } else {
      for (std::size_t c = 0; c < cols; ++c) sum += y[c] = std::exp(x[c] - m);
    }
    const T inv = T(1) / sum;
    for (std::size_t c = 0; c < cols; ++c) y[c] *= inv;
  }

  /// out[r] = x[r] - max - log(sum(exp(x[r] - max))).
  template <class T>
  static void log_softmax_rows(std::size_t rows, std::size_t cols, const T* in, T* out) {
    rows_loop(rows, cols, [&](const T* x, T* y) {
      const T m = row_max(x, cols);
      T sum = 0;
      if (vector_row<T>(cols)) {
#pragma omp simd reduction(+ : sum)
        for (std::size_t c = 0; c < cols; ++c) sum += exp_or_zero(x[c] - m);
      } else {
        for (std::size_t c = 0; c < cols; ++c) sum += std::exp(x[c] - m);
      }
      const T shift = m + std::log(sum);
      for (std::size_t c = 0; c < cols; ++c) y[c] = x[c] - shift;
    }, in, out);
  }

  /// dx = y * (dy - sum(dy * y)) for y = softmax(x).
  template <class T>
  static void softmax_rows_backward(std::size_t rows, std::size_t cols, const T* y, const T* dy, T* dx) {
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T *yr = y + r * cols, *g = dy + r * cols;
        const T dot = cpu_reduce::row_dot(g, yr, cols);
        for (std::size_t c = 0; c < cols; ++c) dx[r * cols + c] = yr[c] * (g[c] - dot);
      }
    });
  }

  /// dx = dy - exp(y) * sum(dy) for y = log_softmax(x).
  template <class T>
  static void log_softmax_rows_backward(std::size_t rows, std::size_t cols, const T* y, const T* dy, T* dx) {
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T *yr = y + r * cols, *g = dy + r * cols;
        const T sum = cpu_reduce::row_sum(g, cols);
        if (vector_row<T>(cols)) {
#pragma omp simd
          for (std::size_t c = 0; c < cols; ++c) dx[r * cols + c] = g[c] - exp_or_zero(yr[c]) * sum;
        } else {
          for (std::size_t c = 0; c < cols; ++c) dx[r * cols + c] = g[c] - std::exp(yr[c]) * sum;
        }
      }
    });
  }

 private:
  /// Float rows of at least cpu_reduce::simd_cols run as vector code
  /// (softmax of 64 columns 9x faster than with std::exp; see the header for
  /// narrower rows).
  template <class T>
  static constexpr bool vector_row(std::size_t cols) noexcept {
    return cpu_reduce::simd_row<T>(cols);
  }

  /// e^d in float, and exactly 0 below e^-87 (as std::exp rounds to float;
  /// exp_approx alone stops at e^-87).
  static MOEKIT_ALWAYS_INLINE float exp_or_zero(float d) {
    const float e = exp_approx(d);
    return d < -87.0f ? 0.0f : e;
  }

  template <class T>
  static T row_max(const T* x, std::size_t cols) {
    T m = -std::numeric_limits<T>::infinity();
    if (vector_row<T>(cols)) {
#pragma omp simd reduction(max : m)
      for (std::size_t c = 0; c < cols; ++c) m = x[c] > m ? x[c] : m;
    } else {
      for (std::size_t c = 0; c < cols; ++c) m = std::max(m, x[c]);
    }
    return m;
  }
  template <class T, class F>
  static void rows_loop(std::size_t rows, std::size_t cols, F&& f, const T* in, T* out) {
    parallel_for(rows, cols * 8, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) f(in + r * cols, out + r * cols);
    });
  }
};

}  // namespace moekit::detail
