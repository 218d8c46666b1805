// moekit/backend/cuda/sparse.cuh — CSR kernels for graph learning: SpMM
// (aggregate neighbour rows), SDDMM (one dot product per stored entry) and a
// softmax over the entries of each row (attention over incoming edges).
//
// One warp per row (per row and head for the softmaxes), writing only that
// row's outputs: no atomics, deterministic. SpMM adds a row's entries in
// entry order, as the CPU does; the dot products and softmax sums reduce
// across the warp's lanes (tree order), so they match the CPU to rounding.
// A very high-degree row keeps its warp busy alone; balancing such rows
// (as the CPU's equal-work chunks do) is left for when a graph needs it.
//
// Multi-head layout as on the CPU: dense operands (n, H·F), entry values
// (nnz, H); head h of entry k uses value[k·H + h] and columns [h·F, (h + 1)·F).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <limits>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "../functors.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "stream.cuh"

namespace moekit::detail {

namespace sparse_kernels {

/// This thread's warp in the grid, the number of warps, its lane.
__device__ inline std::size_t warp_index() { return global_thread() / 32; }
__device__ inline std::size_t warp_count() { return grid_stride() / 32; }
__device__ inline std::size_t lane() { return threadIdx.x % 32; }

/// Blocks for one warp per item.
inline unsigned warps_for(std::size_t items) { return grid_for(items * 32); }

template <class T>
__global__ void spmm(std::size_t rows, std::size_t heads, std::size_t feat, const index_t* row_ptr,
                     const index_t* col, const T* values, const index_t* perm, const T* x, T* y) {
  using A = accumulate_t<T>;
  const std::size_t width = heads * feat;
  for (std::size_t i = warp_index(); i < rows; i += warp_count()) {
    const auto b = static_cast<std::size_t>(row_ptr[i]), e = static_cast<std::size_t>(row_ptr[i + 1]);
    for (std::size_t c = lane(); c < width; c += 32) {
      const std::size_t h = c / feat;
      A acc = 0;
      for (std::size_t k = b; k < e; ++k) {  // entry order, as on the CPU
        const std::size_t v = perm ? static_cast<std::size_t>(perm[k]) : k;
        const A w = values ? static_cast<A>(values[v * heads + h]) : A(1);
        acc += w * static_cast<A>(x[static_cast<std::size_t>(col[k]) * width + c]);
      }
      y[i * width + c] = static_cast<T>(acc);
    }
  }
}

template <class T>
__global__ void sddmm(std::size_t rows, std::size_t heads, std::size_t feat, const index_t* row_ptr,
                      const index_t* col, const T* a, const T* b, T* out) {
  using A = accumulate_t<T>;
  const std::size_t width = heads * feat;
  for (std::size_t i = warp_index(); i < rows; i += warp_count()) {
    const T* ai = a + i * width;
    for (auto k = static_cast<std::size_t>(row_ptr[i]); k < static_cast<std::size_t>(row_ptr[i + 1]); ++k) {
      const T* bj = b + static_cast<std::size_t>(col[k]) * width;
      for (std::size_t h = 0; h < heads; ++h) {
        A dot = 0;
        for (std::size_t f = lane(); f < feat; f += 32)
          dot += static_cast<A>(ai[h * feat + f]) * static_cast<A>(bj[h * feat + f]);
        dot = warp_sum(dot);
        if (lane() == 0) out[k * heads + h] = static_cast<T>(dot);
      }
    }
  }
}

/// One warp per (row, head): max, sum of shifted exponentials, normalise.
template <class T>
__global__ void segment_softmax(std::size_t rows, std::size_t heads, const index_t* row_ptr, const T* s, T* out) {
  using A = accumulate_t<T>;
  for (std::size_t w = warp_index(); w < rows * heads; w += warp_count()) {
    const std::size_t i = w / heads, h = w % heads;
    const auto b = static_cast<std::size_t>(row_ptr[i]), e = static_cast<std::size_t>(row_ptr[i + 1]);
    if (b == e) continue;  // an empty row has nothing to write
    A m = -std::numeric_limits<A>::infinity();
    for (std::size_t k = b + lane(); k < e; k += 32) m = fn::max{}(m, static_cast<A>(s[k * heads + h]));
    m = row_group<32>::reduce(m, fn::max{});
    A sum = 0;
    for (std::size_t k = b + lane(); k < e; k += 32) sum += std::exp(static_cast<A>(s[k * heads + h]) - m);
    const A inv = A(1) / warp_sum(sum);
    for (std::size_t k = b + lane(); k < e; k += 32)
      out[k * heads + h] = static_cast<T>(std::exp(static_cast<A>(s[k * heads + h]) - m) * inv);
  }
}

template <class T>
__global__ void segment_softmax_backward(std::size_t rows, std::size_t heads, const index_t* row_ptr, const T* y,
                                         const T* dy, T* dx) {
  using A = accumulate_t<T>;
  for (std::size_t w = warp_index(); w < rows * heads; w += warp_count()) {
    const std::size_t i = w / heads, h = w % heads;
    const auto b = static_cast<std::size_t>(row_ptr[i]), e = static_cast<std::size_t>(row_ptr[i + 1]);
    A dot = 0;
    for (std::size_t k = b + lane(); k < e; k += 32)
      dot += static_cast<A>(y[k * heads + h]) * static_cast<A>(dy[k * heads + h]);
    dot = warp_sum(dot);
    for (std::size_t k = b + lane(); k < e; k += 32) {
      const std::size_t at = k * heads + h;
      dx[at] = static_cast<T>(static_cast<A>(y[at]) * (static_cast<A>(dy[at]) - dot));
    }
  }
}

}  // namespace sparse_kernels

struct cuda_sparse {
  /// y[i, h, :] = Σ_{k in row i} v(k, h) · x[col[k], h, :], for rows i < rows,
  /// where v(k, h) = values[e·H + h] with e = perm ? perm[k] : k, and 1 when
  /// values is null. `perm` lets the transposed structure read A's values.
  template <class T>
  static void spmm_csr(std::size_t rows, std::size_t heads, std::size_t feat, const index_t* row_ptr,
                       const index_t* col, const T* values, const index_t* perm, const T* x, T* y) {
    if (rows == 0 || heads * feat == 0) return;
    sparse_kernels::spmm<<<sparse_kernels::warps_for(rows), threads_per_block, 0, current_stream()>>>(
        rows, heads, feat, row_ptr, col, values, perm, x, y);
    check_launch("spmm_csr", "spmm");
  }

  /// out[k, h] = Σ_f a[i, h, f] · b[col[k], h, f] for every entry k of row i.
  template <class T>
  static void sddmm_csr(std::size_t rows, std::size_t heads, std::size_t feat, const index_t* row_ptr,
                        const index_t* col, const T* a, const T* b, T* out) {
    if (rows == 0 || heads == 0) return;
    sparse_kernels::sddmm<<<sparse_kernels::warps_for(rows), threads_per_block, 0, current_stream()>>>(
        rows, heads, feat, row_ptr, col, a, b, out);
    check_launch("sddmm_csr", "sddmm");
  }

  /// For every row and head, out[k, h] = softmax over the row's entries k of
  /// s[k, h] (max-shifted). Empty rows have nothing to write.
  template <class T>
  static void segment_softmax_csr(std::size_t rows, std::size_t heads, const index_t* row_ptr, const T* s, T* out) {
    if (rows * heads == 0) return;
    sparse_kernels::segment_softmax<<<sparse_kernels::warps_for(rows * heads), threads_per_block, 0,
                                      current_stream()>>>(rows, heads, row_ptr, s, out);
    check_launch("segment_softmax_csr", "segment_softmax");
  }

  /// dx[k, h] = y[k, h] · (dy[k, h] - Σ_{k' in row} y[k', h] dy[k', h]) for y = segment softmax.
  template <class T>
  static void segment_softmax_csr_backward(std::size_t rows, std::size_t heads, const index_t* row_ptr, const T* y,
                                           const T* dy, T* dx) {
    if (rows * heads == 0) return;
    sparse_kernels::segment_softmax_backward<<<sparse_kernels::warps_for(rows * heads), threads_per_block, 0,
                                               current_stream()>>>(rows, heads, row_ptr, y, dy, dx);
    check_launch("segment_softmax_csr_backward", "segment_softmax_backward");
  }
};

}  // namespace moekit::detail
