// moekit/backend/cuda/reduce_axis.cuh — the fold over the middle axis of an
// (outer, n, inner) block, as cpu_reduce_axis: one thread per output (o, j)
// walks its n entries in order, so the result matches the CPU's summation
// order; neighbouring threads read neighbouring j, so the loads coalesce.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "check.cuh"
#include "launch.cuh"
#include "stream.cuh"

namespace moekit::detail {

namespace reduce_axis_kernels {

template <class T, class Op>
__global__ void reduce_middle(std::size_t outer, std::size_t n, std::size_t inner, const T* in, T* out, T init,
                              Op op) {
  for (std::size_t e = global_thread(); e < outer * inner; e += grid_stride()) {
    const std::size_t o = e / inner, j = e % inner;
    const T* x = in + o * n * inner + j;
    T acc = init;
    for (std::size_t i = 0; i < n; ++i) acc = op(acc, x[i * inner]);
    out[e] = acc;
  }
}

}  // namespace reduce_axis_kernels

struct cuda_reduce_axis {
  /// out[o, j] = op over in[o, 0..n, j] in order (see cpu_reduce_axis).
  template <class T, class Op>
  static void reduce_middle(std::size_t outer, std::size_t n, std::size_t inner, const T* in, T* out, T init,
                            Op op) {
    if (outer * inner == 0) return;
    reduce_axis_kernels::reduce_middle<<<grid_for(outer * inner), threads_per_block, 0, current_stream()>>>(
        outer, n, inner, in, out, init, op);
    check_launch("reduce_middle", "reduce_middle");
  }
};

}  // namespace moekit::detail
