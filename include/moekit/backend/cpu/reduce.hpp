// moekit/backend/cpu/reduce.hpp — reductions along the rows or the columns of a
// row-major (rows, cols) matrix. Each output has a fixed summation order, so
// results do not depend on the thread count. Float rows of at least
// simd_cols entries are summed as SIMD reductions (per-lane partial sums, a
// fixed order per row; one accumulator chain in order is 4 cycles an element);
// narrower rows, where a vector loop's set-up and horizontal sum cost more
// than it saves, and double (gradient checks) are summed in order.
#pragma once

#include <cstddef>
#include <type_traits>

#include "../../core/config.hpp"
#include "../functors.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_reduce {
  /// Row length from which float rows are summed as SIMD reductions.
  static constexpr std::size_t simd_cols = 32;
  template <class T>
  static constexpr bool simd_row(std::size_t cols) noexcept {
    if constexpr (std::is_same_v<T, float>) return cols >= simd_cols;
    else return false;
  }

  /// init + the sum of x[0, cols).
  template <class T>
  static T row_sum(const T* x, std::size_t cols, T init = T(0)) noexcept {
    return sum_terms(cols, init, [x](std::size_t c) { return x[c]; });
  }

  /// The sum of a[c] · b[c] over [0, cols).
  template <class T>
  static T row_dot(const T* a, const T* b, std::size_t cols) noexcept {
    return sum_terms(cols, T(0), [a, b](std::size_t c) { return a[c] * b[c]; });
  }

  /// init + term(0) + ... + term(cols - 1): a SIMD reduction where simd_row,
  /// else in order.
  template <class T, class Term>
  static T sum_terms(std::size_t cols, T init, Term term) noexcept {
    T acc = init;
    if (simd_row<T>(cols)) {
#pragma omp simd reduction(+ : acc)
      for (std::size_t c = 0; c < cols; ++c) acc += term(c);
    } else {
      for (std::size_t c = 0; c < cols; ++c) acc += term(c);
    }
    return acc;
  }

  /// out[r] = op(...op(op(init, in[r, 0]), in[r, 1])...); for fn::add,
  /// init + row_sum (a SIMD order where simd_row).
  template <class T, class Op>
  static void reduce_rows(std::size_t rows, std::size_t cols, const T* in, T* out, T init, Op op) {
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T* x = in + r * cols;
        if constexpr (std::is_same_v<Op, fn::add>) {
          out[r] = row_sum(x, cols, init);
        } else {
          T acc = init;
          for (std::size_t c = 0; c < cols; ++c) acc = op(acc, x[c]);
          out[r] = acc;
        }
      }
    });
  }

  /// out[r] = the sum over c of a[r, c] · b[r, c]: row_sums(a * b) in one
  /// pass, without the product matrix (an MoE combine's gate gradient).
  template <class T>
  static void row_dots(std::size_t rows, std::size_t cols, const T* a, const T* b, T* out) {
    parallel_for(rows, 2 * cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) out[r] = row_dot(a + r * cols, b + r * cols, cols);
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
