// moekit/backend/cpu/copy.hpp — plain and strided block copies: clone() of
// non-host tensors, and concat / split, which move (outer, n * inner) blocks
// between a whole tensor and its slices along one axis.
#pragma once

#include <cstddef>
#include <cstring>

#include "parallel.hpp"

namespace moekit::detail {

struct cpu_copy {
  /// dst[i] = src[i] for i in [0, n); the ranges must not overlap.
  template <class T>
  static void copy(std::size_t n, const T* src, T* dst) {
    parallel_for(n, 1, [&](std::size_t lo, std::size_t hi) {
      if (hi > lo) std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(T));
    });
  }

  /// dst[b * dst_stride + j] = src[b * src_stride + j] for b < blocks, j < len.
  template <class T>
  static void copy_blocks(std::size_t blocks, std::size_t len, const T* src, std::size_t src_stride, T* dst,
                          std::size_t dst_stride) {
    if (len == 0) return;
    parallel_for(blocks, len, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t b = lo; b < hi; ++b) std::memcpy(dst + b * dst_stride, src + b * src_stride, len * sizeof(T));
    });
  }
};

}  // namespace moekit::detail
