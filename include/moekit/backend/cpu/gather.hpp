// moekit/backend/cpu/gather.hpp — row gather and row scatter-add: the two
// halves of every MoE dispatch (and of embedding lookup and its backward).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>

#include "../../core/config.hpp"
#include "parallel.hpp"

namespace moekit::detail {

/// Whether row index r lies in [0, rows).
inline bool row_in_range(index_t r, std::size_t rows) noexcept {
  return r >= 0 && static_cast<std::size_t>(r) < rows;
}

struct cpu_gather {
  static constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

  /// Fork costs of moving `floats` floats and of adding them into place (a
  /// half: scatter-adds fork from 512 K elements). Gathers fork from 256 K
  /// (parallel_grain), as element-wise maps do. Timed alone, a C-S gather of
  /// 262 K floats took 21 µs on 1 thread and 24–36 µs on 2; but inside a
  /// layer step its destination is a pool block that both threads wrote last
  /// (the expert GEMMs' output of the step before), and on the 2-vCPU build
  /// VM (a 500 ns round trip between the two) one thread pulling half the
  /// lines from the other's cache ran 2.5x slower than on a 1-thread run:
  /// C-F's forward gather 0.34 ms against 0.16, 0.20 when forked (2
  /// threads; the layer step 6 % faster, C-S 2 %, issue #16).
  static constexpr std::size_t copy_cost(std::size_t floats) noexcept { return std::max<std::size_t>(1, floats); }
  static constexpr std::size_t add_cost(std::size_t floats) noexcept { return std::max<std::size_t>(1, floats / 2); }

  /// dst[i, :] = src[index[i], :] for i in [0, n). A row whose index lies
  /// outside [0, src_rows) comes out zero: the tensor ops throw on such host
  /// indices first, but device indices cannot be read without a sync, and a
  /// bad one must not read outside src (emulated_device runs this kernel).
  template <class T>
  static void gather_rows(std::size_t n, std::size_t cols, const T* src, const index_t* index, T* dst,
                          std::size_t src_rows = unbounded) {
    parallel_for(n, copy_cost(cols), [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        if (row_in_range(index[i], src_rows))
          std::memcpy(dst + i * cols, src + static_cast<std::size_t>(index[i]) * cols, cols * sizeof(T));
        else
          std::memset(static_cast<void*>(dst + i * cols), 0, cols * sizeof(T));
      }
    });
  }

  /// dst[index[i], :] += scale[i] * src[i, :] (scale may be null: 1). Rows that
  /// collide are added in the order of i. Threads split the destination rows:
  /// each scans all n indices and adds the rows that land in its range, in
  /// the order of i, so every element gets its additions in the same order
  /// for any thread count. (Splitting the columns instead put both cores on
  /// the same destination rows, and each core's prefetchers then pulled the
  /// other's cache lines away: 3x slower on 2 threads than on 1, C-S to C-M.)
  /// Indices outside [0, dst_rows) are skipped (see gather_rows).
  template <class T>
  static void scatter_add_rows(std::size_t n, std::size_t cols, const T* src, const index_t* index, T* dst,
                               const T* scale = nullptr, std::size_t dst_rows = unbounded) {
    std::size_t rows = dst_rows;
    if (rows == unbounded) {  // the rows the indices name
      rows = 0;
      for (std::size_t i = 0; i < n; ++i)
        if (index[i] >= 0) rows = std::max(rows, static_cast<std::size_t>(index[i]) + 1);
    }
    const std::size_t per_row = rows == 0 ? 1 : add_cost(n * cols / rows);
    parallel_for(rows, per_row, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = 0; i < n; ++i) {
        if (index[i] < 0) continue;
        const auto r = static_cast<std::size_t>(index[i]);
        if (r < lo || r >= hi) continue;
        const T* s = src + i * cols;
        T* d = dst + r * cols;
        const T w = scale ? scale[i] : T(1);
#pragma omp simd
        for (std::size_t c = 0; c < cols; ++c) d[c] += w * s[c];
      }
    });
  }
};

}  // namespace moekit::detail
