// moekit/backend/cpu/softmax.hpp — numerically stable softmax and log-softmax
// over the rows of a (rows, cols) matrix, and their backward passes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "parallel.hpp"

namespace moekit::detail {

struct cpu_softmax {
  /// out[r] = exp(x[r] - max) / sum(exp(x[r] - max)).
  template <class T>
  static void softmax_rows(std::size_t rows, std::size_t cols, const T* in, T* out) {
    rows_loop(rows, cols, [&](const T* x, T* y) {
      const T m = row_max(x, cols);
      T sum = 0;
      for (std::size_t c = 0; c < cols; ++c) sum += y[c] = std::exp(x[c] - m);
      const T inv = T(1) / sum;
      for (std::size_t c = 0; c < cols; ++c) y[c] *= inv;
    }, in, out);
  }

  /// out[r] = x[r] - max - log(sum(exp(x[r] - max))).
  template <class T>
  static void log_softmax_rows(std::size_t rows, std::size_t cols, const T* in, T* out) {
    rows_loop(rows, cols, [&](const T* x, T* y) {
      const T m = row_max(x, cols);
      T sum = 0;
      for (std::size_t c = 0; c < cols; ++c) sum += std::exp(x[c] - m);
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
        T dot = 0;
        for (std::size_t c = 0; c < cols; ++c) dot += g[c] * yr[c];
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
        T sum = 0;
        for (std::size_t c = 0; c < cols; ++c) sum += g[c];
        for (std::size_t c = 0; c < cols; ++c) dx[r * cols + c] = g[c] - std::exp(yr[c]) * sum;
      }
    });
  }

 private:
  template <class T>
  static T row_max(const T* x, std::size_t cols) {
    T m = -std::numeric_limits<T>::infinity();
    for (std::size_t c = 0; c < cols; ++c) m = std::max(m, x[c]);
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
