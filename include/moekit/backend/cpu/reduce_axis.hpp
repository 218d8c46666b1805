// moekit/backend/cpu/reduce_axis.hpp — a fold over the middle axis of a
// row-major (outer, n, inner) block: sum<1> of (batch, seq, d) and the like,
// in one kernel call instead of one reduce_cols per outer block (one launch
// each on a device).
#pragma once

#include <cstddef>

#include "parallel.hpp"

namespace moekit::detail {

struct cpu_reduce_axis {
  /// out[o, j] = op(...op(op(init, in[o, 0, j]), in[o, 1, j])...) for o < outer,
  /// j < inner: the n entries of each output in order, whatever the threads.
  template <class T, class Op>
  static void reduce_middle(std::size_t outer, std::size_t n, std::size_t inner, const T* in, T* out, T init,
                            Op op) {
    parallel_for(outer, n * inner, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t o = lo; o < hi; ++o) {
        T* y = out + o * inner;
        for (std::size_t j = 0; j < inner; ++j) y[j] = init;
        for (std::size_t i = 0; i < n; ++i) {
          const T* x = in + (o * n + i) * inner;
#pragma omp simd
          for (std::size_t j = 0; j < inner; ++j) y[j] = op(y[j], x[j]);
        }
      }
    });
  }
};

}  // namespace moekit::detail
