// moekit/backend/cpu/transpose.hpp — materialised matrix transposes, plain and
// batched. Square tiles keep both the reads and the strided writes in cache.
#pragma once

#include <algorithm>
#include <cstddef>

#include "parallel.hpp"

namespace moekit::detail {

struct cpu_transpose {
  /// Tile edge: a 32x32 tile of doubles (8 KiB) and its image fit in L1.
  static constexpr std::size_t transpose_tile = 32;

  /// out (cols, rows) = in (rows, cols)ᵀ.
  template <class T>
  static void transpose_2d(std::size_t rows, std::size_t cols, const T* in, T* out) {
    transpose_2d_batched(1, rows, cols, in, out);
  }

  /// out[b] (cols, rows) = in[b] (rows, cols)ᵀ for b < batch. Threads take
  /// bands of input rows, which write disjoint column bands of the output.
  template <class T>
  static void transpose_2d_batched(std::size_t batch, std::size_t rows, std::size_t cols, const T* in, T* out) {
    constexpr std::size_t tile = transpose_tile;
    const std::size_t bands = (rows + tile - 1) / tile;
    parallel_for(batch * bands, tile * cols, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t t = lo; t < hi; ++t) {
        const std::size_t b = t / bands, r0 = t % bands * tile, r1 = std::min(rows, r0 + tile);
        const T* src = in + b * rows * cols;
        T* dst = out + b * rows * cols;
        for (std::size_t c0 = 0; c0 < cols; c0 += tile) {
          const std::size_t c1 = std::min(cols, c0 + tile);
          for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
        }
      }
    });
  }
};

}  // namespace moekit::detail
