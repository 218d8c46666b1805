// moekit/backend/cuda/pool.cuh — device memory from the stream-ordered
// allocator (cudaMallocAsync). The device's default pool is told to keep what
// it has (release threshold = unlimited), so after the first training step
// every allocation is a pool hit and no step calls into the driver.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "check.cuh"
#include "stream.cuh"

namespace moekit::detail {

inline int current_device(const char* op) {
  int device = 0;
  MOEKIT_CUDA_CHECK(cudaGetDevice(&device), op);
  return device;
}

/// Sets the release threshold of `device`'s default pool once per process.
inline void keep_pool_memory(int device) {
  constexpr int max_devices = 64;
  static std::once_flag once[max_devices];
  if (device < 0 || device >= max_devices) return;
  std::call_once(once[device], [device] {
    cudaMemPool_t pool{};
    MOEKIT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device), "cuda::allocate");
    std::uint64_t keep = UINT64_MAX;
    MOEKIT_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cuda::allocate");
  });
}

inline void* device_allocate(std::size_t bytes) {
  keep_pool_memory(current_device("cuda::allocate"));
  void* p = nullptr;
  const cudaError_t err = cudaMallocAsync(&p, bytes, current_stream());
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw_cuda_error("cuda::allocate", "cudaMallocAsync(" + std::to_string(bytes) + " bytes)",
                     std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")");
  }
  return p;
}

/// Stream-ordered: the memory returns to the pool once the work queued before
/// on the current stream is done. Errors are dropped (this runs in destructors,
/// also after the runtime has shut down at exit).
inline void device_deallocate(void* p) noexcept {
  if (p && cudaFreeAsync(p, current_stream()) != cudaSuccess) (void)cudaGetLastError();
}

}  // namespace moekit::detail
