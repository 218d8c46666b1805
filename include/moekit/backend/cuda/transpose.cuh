// moekit/backend/cuda/transpose.cuh — materialised matrix transposes on the
// device, plain and batched. A block of 32x8 threads moves a 32x32 tile through
// shared memory: it reads rows of the tile and writes rows of the transposed
// tile, so both global accesses are coalesced; the +1 column of padding puts a
// tile column's 32 entries in 32 different banks.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "check.cuh"
#include "launch.cuh"
#include "stream.cuh"

namespace moekit::detail {

inline constexpr unsigned transpose_tile_edge = 32, transpose_lanes = 8;

/// out[b] (cols, rows) = in[b] (rows, cols)ᵀ; tiles (column tile blockIdx.x,
/// row tiles and batches striding over blockIdx.y and blockIdx.z).
template <class T>
__global__ void transpose_kernel(std::size_t batch, std::size_t rows, std::size_t cols, const T* in, T* out) {
  constexpr unsigned edge = transpose_tile_edge;
  // Raw bytes: T (bf16, half) may have a default member initializer, which __shared__ forbids.
  __shared__ alignas(T) unsigned char raw[edge * (edge + 1) * sizeof(T)];
  T(*tile)[edge + 1] = reinterpret_cast<T(*)[edge + 1]>(raw);
  const std::size_t row_tiles = (rows + edge - 1) / edge;
  const std::size_t c0 = static_cast<std::size_t>(blockIdx.x) * edge;
  for (std::size_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const T* src = in + b * rows * cols;
    T* dst = out + b * rows * cols;
    for (std::size_t t = blockIdx.y; t < row_tiles; t += gridDim.y) {
      const std::size_t r0 = t * edge;
      for (unsigned j = threadIdx.y; j < edge; j += transpose_lanes) {
        const std::size_t r = r0 + j, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[j][threadIdx.x] = src[r * cols + c];
      }
      __syncthreads();
      for (unsigned j = threadIdx.y; j < edge; j += transpose_lanes) {
        const std::size_t c = c0 + j, r = r0 + threadIdx.x;
        if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][j];
      }
      __syncthreads();  // the tile is read out before the next one comes in
    }
  }
}

struct cuda_transpose {
  /// out (cols, rows) = in (rows, cols)ᵀ.
  template <class T>
  static void transpose_2d(std::size_t rows, std::size_t cols, const T* in, T* out) {
    transpose_2d_batched(1, rows, cols, in, out);
  }

  /// out[b] (cols, rows) = in[b] (rows, cols)ᵀ for b < batch.
  template <class T>
  static void transpose_2d_batched(std::size_t batch, std::size_t rows, std::size_t cols, const T* in, T* out) {
    if (batch * rows * cols == 0) return;
    constexpr std::size_t edge = transpose_tile_edge, most = 65535;  // grid y and z limits
    const dim3 grid(static_cast<unsigned>((cols + edge - 1) / edge),
                    static_cast<unsigned>(std::min((rows + edge - 1) / edge, most)),
                    static_cast<unsigned>(std::min(batch, most)));
    transpose_kernel<<<grid, dim3(transpose_tile_edge, transpose_lanes), 0, current_stream()>>>(batch, rows, cols, in,
                                                                                               out);
    check_launch("transpose_2d_batched", "transpose_kernel");
  }
};

}  // namespace moekit::detail
