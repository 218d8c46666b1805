// moekit/backend/cuda/copy.cuh — plain and strided block copies on the device:
// clone() of device tensors, and concat / split, which move (outer, n * inner)
// blocks between a whole tensor and its slices along one axis. The copy engines
// do both (cudaMemcpyAsync, cudaMemcpy2DAsync), queued on the current stream.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "check.cuh"
#include "stream.cuh"

namespace moekit::detail {

struct cuda_copy {
  /// dst[i] = src[i] for i in [0, n); the ranges must not overlap.
  template <class T>
  static void copy(std::size_t n, const T* src, T* dst) {
    if (n == 0) return;
    MOEKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, current_stream()), "copy");
  }

  /// dst[b * dst_stride + j] = src[b * src_stride + j] for b < blocks, j < len.
  template <class T>
  static void copy_blocks(std::size_t blocks, std::size_t len, const T* src, std::size_t src_stride, T* dst,
                          std::size_t dst_stride) {
    if (len == 0 || blocks == 0) return;
    // One block needs no pitch (and its strides may be anything, even < len).
    if (blocks == 1) {
      copy(len, src, dst);
      return;
    }
    MOEKIT_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_stride * sizeof(T), src, src_stride * sizeof(T), len * sizeof(T),
                                        blocks, cudaMemcpyDeviceToDevice, current_stream()),
                      "copy_blocks");
  }
};

}  // namespace moekit::detail
