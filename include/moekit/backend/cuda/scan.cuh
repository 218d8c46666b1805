// moekit/backend/cuda/scan.cuh — exclusive prefix sum (per-expert offsets), by CUB.
#pragma once

#include <cub/device/device_scan.cuh>

#include <cstddef>
#include <cstdint>

#include "check.cuh"
#include "reduce.cuh"
#include "stream.cuh"

namespace moekit::detail {

struct cuda_scan {
  /// out[i] = in[0] + ... + in[i-1]; out[0] = 0. `out` may alias `in` (CUB
  /// scans in place when the pointers are equal). Floating-point sums follow
  /// CUB's tree order, not the CPU's left-to-right one.
  template <class T>
  static void exclusive_scan(std::size_t n, const T* in, T* out) {
    if (n == 0) return;
    std::size_t bytes = 0;
    MOEKIT_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out, n, current_stream()), "exclusive_scan");
    device_scratch<std::uint8_t> temp(bytes);
    MOEKIT_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp.get(), bytes, in, out, n, current_stream()),
                      "exclusive_scan");
  }
};

}  // namespace moekit::detail
