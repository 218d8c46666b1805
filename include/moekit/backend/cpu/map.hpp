// moekit/backend/cpu/map.hpp — threaded element-wise maps, plain and with a
// row or column operand broadcast across a (rows, cols) matrix.
#pragma once

#include <cstddef>

#include "parallel.hpp"

namespace moekit::detail {

struct cpu_map {
  /// out[i] = f(in[i]...) for i in [0, n). `out` may alias an input.
  template <class T, class F, class... In>
  static void map(std::size_t n, T* out, F f, const In*... in) {
    parallel_for(n, 1, [&](std::size_t lo, std::size_t hi) {
#pragma omp simd
      for (std::size_t i = lo; i < hi; ++i) out[i] = f(in[i]...);
    });
  }

  /// out_f[i] = f(in[i]) and out_g[i] = g(in[i]) in one loop: f and g inline
  /// side by side, so the terms they share (an activation and its slope:
  /// GELU's one exponential) are computed once.
  template <class T, class F, class G>
  static void map_pair(std::size_t n, T* out_f, F f, T* out_g, G g, const T* in) {
    parallel_for(n, 1, [&](std::size_t lo, std::size_t hi) {
#pragma omp simd
      for (std::size_t i = lo; i < hi; ++i) {
        const T v = in[i];
        out_f[i] = f(v);
        out_g[i] = g(v);
      }
    });
  }

  /// out[i] = f(i) for i in [0, n): fills from the index (random streams,
  /// ranges). A functor with fill(lo, hi, out) fills its ranges itself (a
  /// counter-based stream then computes each block of words once).
  template <class T, class F>
  static void generate(std::size_t n, T* out, F f) {
    parallel_for(n, 4, [&](std::size_t lo, std::size_t hi) {
      if constexpr (requires { f.fill(lo, hi, out); }) f.fill(lo, hi, out);
      else
        for (std::size_t i = lo; i < hi; ++i) out[i] = f(i);
    });
  }

  /// out[r, c] = f(a[r, c], row[c]): `row` is broadcast over the rows.
  template <class T, class F>
  static void map_rows(std::size_t rows, std::size_t cols, T* out, F f, const T* a, const T* row) {
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T* ar = a + r * cols;
        T* o = out + r * cols;
#pragma omp simd
        for (std::size_t c = 0; c < cols; ++c) o[c] = f(ar[c], row[c]);
      }
    });
  }

  /// out[r, c] = f(a[r, c], col[r]): `col` is broadcast over the columns.
  template <class T, class F>
  static void map_cols(std::size_t rows, std::size_t cols, T* out, F f, const T* a, const T* col) {
    parallel_for(rows, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        const T* ar = a + r * cols;
        T* o = out + r * cols;
        const T v = col[r];
#pragma omp simd
        for (std::size_t c = 0; c < cols; ++c) o[c] = f(ar[c], v);
      }
    });
  }
};

}  // namespace moekit::detail
