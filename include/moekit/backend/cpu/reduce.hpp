// moekit/backend/cpu/reduce.hpp — reductions along the rows or the columns of a
// row-major (rows, cols) matrix. Each output has a fixed summation order, so
// results do not depend on the thread count.
#pragma once

#include <cstddef>

#include "../../core/config.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_reduce {
  /// out[r] = op(...op(op(init, in[r, 0]), in[r, 1])...).
  template <class T, class Op>
  static void reduce_rows(std::size_t rows, std::size_t cols, const T* in, T* out, T init, Op op) {
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T* x = in + r * cols;
        T acc = init;
        for (std::size_t c = 0; c < cols; ++c) acc = op(acc, x[c]);
        out[r] = acc;
      }
    });
  }

  /// out[c] = op over the rows of column c, rows in order.
  template <class T, class Op>
  static void reduce_cols(std::size_t rows, std::size_t cols, const T* in, T* out, T init, Op op) {
    parallel_for(cols, rows, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t c = lo; c < hi; ++c) out[c] = init;
      for (std::size_t r = 0; r < rows; ++r) {
        const T* x = in + r * cols;
#pragma omp simd
        for (std::size_t c = lo; c < hi; ++c) out[c] = op(out[c], x[c]);
      }
    });
  }

  /// out[r] = index of the largest entry of row r (the first one on ties).
  template <class T>
  static void argmax_rows(std::size_t rows, std::size_t cols, const T* in, index_t* out) {
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T* x = in + r * cols;
        std::size_t best = 0;
        for (std::size_t c = 1; c < cols; ++c)
          if (x[c] > x[best]) best = c;
        out[r] = static_cast<index_t>(best);
      }
    });
  }
};

}  // namespace moekit::detail
