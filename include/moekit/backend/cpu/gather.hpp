// moekit/backend/cpu/gather.hpp — row gather and row scatter-add: the two
// halves of every MoE dispatch (and of embedding lookup and its backward).
#pragma once

#include <cstddef>
#include <cstring>

#include "../../core/config.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_gather {
  /// dst[i, :] = src[index[i], :] for i in [0, n).
  template <class T>
  static void gather_rows(std::size_t n, std::size_t cols, const T* src, const index_t* index, T* dst) {
    parallel_for(n, cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i)
        std::memcpy(dst + i * cols, src + static_cast<std::size_t>(index[i]) * cols, cols * sizeof(T));
    });
  }

  /// dst[index[i], :] += scale[i] * src[i, :] (scale may be null: 1). Rows that
  /// collide are added in the order of i; threads split the columns, so the
  /// result is the same for any thread count.
  template <class T>
  static void scatter_add_rows(std::size_t n, std::size_t cols, const T* src, const index_t* index, T* dst,
                               const T* scale = nullptr) {
    parallel_for(cols, n, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = 0; i < n; ++i) {
        const T* s = src + i * cols;
        T* d = dst + static_cast<std::size_t>(index[i]) * cols;
        const T w = scale ? scale[i] : T(1);
#pragma omp simd
        for (std::size_t c = lo; c < hi; ++c) d[c] += w * s[c];
      }
    });
  }
};

}  // namespace moekit::detail
