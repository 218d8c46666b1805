// moekit/backend/cuda/cuda.cuh — the device backend policy: memory from the
// stream-ordered pool, every op ordered on current_stream(), GEMMs through
// cuBLAS, the rest in moekit's own kernels and CUB.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "../backend.hpp"
#include "../cpu/cpu.hpp"
#include "check.cuh"
#include "pool.cuh"
#include "stream.cuh"

namespace moekit {

struct cuda {
  static constexpr std::string_view name = "cuda";
  static constexpr bool host_accessible = false;
  static void* allocate(std::size_t bytes) { return detail::device_allocate(bytes); }
  static void deallocate(void* p, std::size_t) noexcept { detail::device_deallocate(p); }
};

static_assert(backend<cuda>);

/// Host to device: queued on the current stream. The source is pageable
/// memory, so the runtime stages it before returning and the host buffer may
/// be reused at once.
template <>
struct transfer<cpu, cuda> {
  static void copy(const void* src, void* dst, std::size_t bytes) {
    if (bytes == 0) return;
    MOEKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, current_stream()), "to<cuda>");
  }
};

/// Device to host: the one place moekit waits for the device (the data must
/// be there when the host reads it).
template <>
struct transfer<cuda, cpu> {
  static void copy(const void* src, void* dst, std::size_t bytes) {
    if (bytes == 0) return;
    MOEKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, current_stream()), "to<cpu>");
    MOEKIT_CUDA_CHECK(cudaStreamSynchronize(current_stream()), "to<cpu>");
  }
};

template <>
struct transfer<cuda, cuda> {
  static void copy(const void* src, void* dst, std::size_t bytes) {
    if (bytes == 0) return;
    MOEKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, current_stream()), "to<cuda>");
  }
};

/// Whether a CUDA device can be used (false, not an exception, without one).
inline bool cuda_available() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return count > 0;
}

/// The current device's name, e.g. "NVIDIA H100 80GB HBM3" (for logs and benchmark records).
inline std::string device_name() {
  int device = 0;
  cudaDeviceProp p{};
  MOEKIT_CUDA_CHECK(cudaGetDevice(&device), "device_name");
  MOEKIT_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "device_name");
  return p.name;
}

/// Waits until everything queued on the current stream has run (benchmarks, tests).
inline void synchronize() { MOEKIT_CUDA_CHECK(cudaStreamSynchronize(current_stream()), "synchronize"); }

}  // namespace moekit
