// moekit/backend/cuda/histogram.cuh — counts of integer keys (tokens per
// expert). Integer atomics commute exactly, so the counts are deterministic.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "../../core/config.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "stream.cuh"

namespace moekit::detail {

namespace histogram_kernels {

/// Bins up to this many are counted in shared memory first (expert counts are
/// small): one global atomic per bin and block instead of one per key.
inline constexpr std::size_t shared_bins = 4096;

/// Keys outside [0, bins) are skipped, as on the CPU (dropped tokens are -1).
__device__ inline bool in_range(index_t key, std::size_t bins) {
  return key >= 0 && static_cast<std::size_t>(key) < bins;
}

// Templates (on the index type) only so the header may be included by several
// translation units: a plain __global__ function cannot be inline.
template <class I>
__global__ void count_shared(std::size_t n, const I* keys, std::size_t bins, I* counts) {
  __shared__ I local[shared_bins];
  for (std::size_t b = threadIdx.x; b < bins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (std::size_t i = global_thread(); i < n; i += grid_stride())
    if (const I key = keys[i]; in_range(key, bins)) atomicAdd(&local[key], I{1});
  __syncthreads();
  for (std::size_t b = threadIdx.x; b < bins; b += blockDim.x)
    if (local[b] != 0) atomicAdd(&counts[b], local[b]);
}

template <class I>
__global__ void count_global(std::size_t n, const I* keys, std::size_t bins, I* counts) {
  for (std::size_t i = global_thread(); i < n; i += grid_stride())
    if (const I key = keys[i]; in_range(key, bins)) atomicAdd(&counts[key], I{1});
}

}  // namespace histogram_kernels

struct cuda_histogram {
  /// counts[b] = number of i with keys[i] == b, for b in [0, bins). Keys outside
  /// [0, bins) are not counted (nor written anywhere), e.g. dropped tokens (-1).
  static void histogram(std::size_t n, const index_t* keys, std::size_t bins, index_t* counts) {
    if (bins == 0) return;
    MOEKIT_CUDA_CHECK(cudaMemsetAsync(counts, 0, bins * sizeof(index_t), current_stream()), "histogram");
    if (n == 0) return;
    if (bins <= histogram_kernels::shared_bins) {
      // Few blocks: each one clears and flushes all bins, so more would cost more than they save.
      const unsigned blocks = std::min(grid_for(n), 1024u);
      histogram_kernels::count_shared<<<blocks, threads_per_block, 0, current_stream()>>>(n, keys, bins, counts);
      check_launch("histogram", "count_shared");
    } else {
      histogram_kernels::count_global<<<grid_for(n), threads_per_block, 0, current_stream()>>>(n, keys, bins, counts);
      check_launch("histogram", "count_global");
    }
  }
};

}  // namespace moekit::detail
