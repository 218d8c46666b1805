// moekit/backend/cuda/sort.cuh — stable sort of (key, value) pairs by key: the
// "order assignments by expert" step of MoE routing, by CUB's radix sort.
#pragma once

#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../../core/config.hpp"
#include "check.cuh"
#include "reduce.cuh"
#include "stream.cuh"

namespace moekit::detail {

struct cuda_sort {
  /// Stable: equal keys keep their input order (radix sort is stable), so the
  /// result equals the CPU's. All 32 key bits are sorted: the signature gives
  /// no key range, and negative keys must order before the others as on the
  /// CPU (CUB orders signed keys numerically). The outputs may alias the inputs.
  static void sort_pairs(std::size_t n, const index_t* keys_in, const index_t* values_in, index_t* keys_out,
                         index_t* values_out) {
    if (n == 0) return;
    // CUB needs disjoint input and output: copy aliased inputs aside first.
    const bool aliased = keys_in == keys_out || values_in == values_out;
    device_scratch<index_t> copies(aliased ? 2 * n : 0);
    if (aliased) {
      MOEKIT_CUDA_CHECK(cudaMemcpyAsync(copies.get(), keys_in, n * sizeof(index_t),
                                        cudaMemcpyDeviceToDevice, current_stream()), "sort_pairs");
      MOEKIT_CUDA_CHECK(cudaMemcpyAsync(copies.get() + n, values_in, n * sizeof(index_t),
                                        cudaMemcpyDeviceToDevice, current_stream()), "sort_pairs");
      keys_in = copies.get();
      values_in = copies.get() + n;
    }
    std::size_t bytes = 0;
    MOEKIT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in, keys_out, values_in, values_out, n, 0,
                                                      32, current_stream()), "sort_pairs");
    device_scratch<std::uint8_t> temp(bytes);
    MOEKIT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.get(), bytes, keys_in, keys_out, values_in, values_out, n,
                                                      0, 32, current_stream()), "sort_pairs");
  }
};

}  // namespace moekit::detail
