// moekit/backend/cuda/gather.cuh — row gather and row scatter-add: the two
// halves of every MoE dispatch (and of embedding lookup and its backward).
//
// The CPU scatter-add promises that rows colliding on one index are added in
// the order of i. Float atomics would add them in whatever order the threads
// arrive, so instead the indices are first sorted stably (i stays in order
// within each destination row) and one thread per (destination row, column)
// adds its sources in that order: the result is deterministic and sums in the
// CPU's order, at the price of one radix sort of n pairs per call.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "sort.cuh"
#include "stream.cuh"

namespace moekit::detail {

namespace gather_kernels {

template <class T>
__global__ void gather(std::size_t n, std::size_t cols, const T* src, const index_t* index, T* dst,
                       std::size_t src_rows) {
  for (std::size_t e = global_thread(); e < n * cols; e += grid_stride()) {
    const std::size_t i = e / cols, c = e % cols;
    const index_t r = index[i];
    dst[e] = r >= 0 && static_cast<std::size_t>(r) < src_rows ? src[static_cast<std::size_t>(r) * cols + c] : T{};
  }
}

template <class I>  // a template so several translation units may include it
__global__ void iota(std::size_t n, I* out) {
  for (std::size_t i = global_thread(); i < n; i += grid_stride()) out[i] = static_cast<I>(i);
}

/// Element (j, c) of the sorted order: the first j of each run of equal
/// destination rows adds the whole run into column c, in run (= i) order.
/// Destinations outside [0, dst_rows) (invalid) are skipped rather than written.
template <class T>
__global__ void scatter_add_sorted(std::size_t n, std::size_t cols, const T* src, const index_t* sorted_row,
                                   const index_t* source, T* dst, const T* scale, std::size_t dst_rows) {
  using A = accumulate_t<T>;
  for (std::size_t e = global_thread(); e < n * cols; e += grid_stride()) {
    const std::size_t j = e / cols, c = e % cols;
    const index_t row = sorted_row[j];
    if (row < 0 || static_cast<std::size_t>(row) >= dst_rows || (j > 0 && sorted_row[j - 1] == row)) continue;
    T* d = dst + static_cast<std::size_t>(row) * cols + c;
    A acc = static_cast<A>(*d);
    for (std::size_t t = j; t < n && sorted_row[t] == row; ++t) {
      const auto i = static_cast<std::size_t>(source[t]);
      const A w = scale ? static_cast<A>(scale[i]) : A(1);
      acc += w * static_cast<A>(src[i * cols + c]);
    }
    *d = static_cast<T>(acc);
  }
}

}  // namespace gather_kernels

struct cuda_gather {
  static constexpr std::size_t unbounded = static_cast<std::size_t>(-1);  // as cpu_gather::unbounded

  /// dst[i, :] = src[index[i], :] for i in [0, n). As on the CPU, a row whose
  /// index lies outside [0, src_rows) comes out zero: device indices cannot be
  /// checked on the host without a sync, and a bad one must not read out of bounds.
  template <class T>
  static void gather_rows(std::size_t n, std::size_t cols, const T* src, const index_t* index, T* dst,
                          std::size_t src_rows = unbounded) {
    if (n * cols == 0) return;
    gather_kernels::gather<<<grid_for(n * cols), threads_per_block, 0, current_stream()>>>(n, cols, src, index, dst,
                                                                                         src_rows);
    check_launch("gather_rows", "gather");
  }

  /// dst[index[i], :] += scale[i] * src[i, :] (scale may be null: 1). Rows that
  /// collide are added in the order of i, as on the CPU, without float
  /// atomics: deterministic run to run (see the top of this file). Indices
  /// outside [0, dst_rows) are skipped.
  template <class T>
  static void scatter_add_rows(std::size_t n, std::size_t cols, const T* src, const index_t* index, T* dst,
                               const T* scale = nullptr, std::size_t dst_rows = unbounded) {
    if (n * cols == 0) return;
    device_scratch<index_t> ids(3 * n);  // iota, sorted rows, their source i
    index_t *order = ids.get(), *sorted_row = ids.get() + n, *source = ids.get() + 2 * n;
    gather_kernels::iota<<<grid_for(n), threads_per_block, 0, current_stream()>>>(n, order);
    check_launch("scatter_add_rows", "iota");
    cuda_sort::sort_pairs(n, index, order, sorted_row, source);
    gather_kernels::scatter_add_sorted<<<grid_for(n * cols), threads_per_block, 0, current_stream()>>>(
        n, cols, src, sorted_row, source, dst, scale, dst_rows);
    check_launch("scatter_add_rows", "scatter_add_sorted");
  }
};

}  // namespace moekit::detail
