// moekit/backend/cuda/grouped_rows.cuh — row-wise work over row segments whose
// bounds (offsets, groups + 1) live on the device (twin of
// cpu/grouped_rows.hpp): the per-expert bias of an expert bank and its
// gradient. The host never reads the offsets; a thread finds its row's group
// by binary search in them (a few cached loads: groups are experts).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "stream.cuh"

namespace moekit::detail {

/// The group g with offsets[g] <= row < offsets[g + 1]: the last of the
/// groups + 1 offsets not above row (empty groups before it are skipped).
__device__ inline std::size_t group_of_row(const index_t* offsets, std::size_t groups, std::size_t row) {
  std::size_t lo = 0, hi = groups;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (static_cast<std::size_t>(offsets[mid]) <= row) lo = mid;
    else hi = mid;
  }
  return lo;
}

template <class T, class F>
__global__ void map_grouped_rows_kernel(std::size_t rows, std::size_t groups, const index_t* offsets, std::size_t n,
                                        T* out, F f, const T* h, const T* b) {
  const std::size_t total = rows * n;
  for (std::size_t i = global_thread(); i < total; i += grid_stride()) {
    const std::size_t r = i / n, c = i % n;
    out[i] = f(h[i], b[group_of_row(offsets, groups, r) * n + c]);
  }
}

/// One thread per (group, column): sums the group's rows in order, like the CPU.
template <class T>
__global__ void grouped_column_sums_kernel(std::size_t groups, const index_t* offsets, std::size_t n, const T* dy,
                                           T* out) {
  using A = accumulate_t<T>;
  const std::size_t total = groups * n;
  for (std::size_t i = global_thread(); i < total; i += grid_stride()) {
    const std::size_t g = i / n, c = i % n;
    A acc = A(0);
    const auto end = static_cast<std::size_t>(offsets[g + 1]);
    for (auto r = static_cast<std::size_t>(offsets[g]); r < end; ++r) acc += static_cast<A>(dy[r * n + c]);
    out[i] = static_cast<T>(acc);
  }
}

struct cuda_grouped_rows {
  /// out[r, c] = f(h[r, c], b[g, c]) for every row r of group g (see cpu_grouped_rows).
  template <class T, class F>
  static void map_grouped_rows(std::size_t rows, std::size_t groups, const index_t* offsets, std::size_t n, T* out,
                               F f, const T* h, const T* b) {
    if (rows * n == 0 || groups == 0) return;
    map_grouped_rows_kernel<<<grid_for(rows * n), threads_per_block, 0, current_stream()>>>(rows, groups, offsets, n,
                                                                                           out, f, h, b);
    check_launch("map_grouped_rows", "map_grouped_rows_kernel");
  }

  /// out[g, c] = Σ over group g's rows of dy[r, c] (an empty group gets 0).
  template <class T>
  static void grouped_column_sums(std::size_t groups, const index_t* offsets, std::size_t n, const T* dy, T* out) {
    if (groups * n == 0) return;
    grouped_column_sums_kernel<<<grid_for(groups * n), threads_per_block, 0, current_stream()>>>(groups, offsets, n,
                                                                                                dy, out);
    check_launch("grouped_column_sums", "grouped_column_sums_kernel");
  }
};

}  // namespace moekit::detail
