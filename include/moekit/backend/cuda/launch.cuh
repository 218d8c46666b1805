// moekit/backend/cuda/launch.cuh — launch geometry shared by the kernels:
// grid-stride loops over n elements, one block per row, warp reductions.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

namespace moekit::detail {

inline constexpr int threads_per_block = 256;
inline constexpr unsigned full_warp = 0xffffffffu;

/// Blocks for a grid-stride loop over n elements: enough to fill the GPU, no more.
inline unsigned grid_for(std::size_t n, int block = threads_per_block) {
  const std::size_t blocks = (n + static_cast<std::size_t>(block) - 1) / static_cast<std::size_t>(block);
  return static_cast<unsigned>(std::clamp<std::size_t>(blocks, 1, 65535u * 8u));
}

/// Index of this thread in a 1-D grid and the grid-stride step, as size_t.
__device__ inline std::size_t global_thread() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline std::size_t grid_stride() { return static_cast<std::size_t>(gridDim.x) * blockDim.x; }

template <class T>
__device__ inline T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(full_warp, v, offset);
  return v;
}
template <class T>
__device__ inline T warp_max(T v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(full_warp, v, offset);
    v = v < other ? other : v;  // not max(): moekit::max (a tensor op) would hide ::max
  }
  return v;
}

/// Sum of v over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets it.
template <class T>
__device__ inline T block_sum(T v) {
  __shared__ T partial[32];
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : T(0);
  return warp_sum(v);
}
template <class T>
__device__ inline T block_max(T v, T lowest) {
  __shared__ T partial[32];
  v = warp_max(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : lowest;
  return warp_max(v);
}

}  // namespace moekit::detail
