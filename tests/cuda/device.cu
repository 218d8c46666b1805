// CUDA smoke test: is there a device, and does a trivial kernel run on it?
// Without a device every CUDA test case prints "SKIPPED: no CUDA device" and
// returns; ctest (SKIP_REGULAR_EXPRESSION) then reports the test as skipped.
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

namespace {

bool has_cuda_device() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error
    return false;
  }
  return count > 0;
}

__global__ void add_vectors(const float* a, const float* b, float* c, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

}  // namespace

TEST_CASE("cuda device: a vector add on the device matches the host", "[cuda]") {
  if (!has_cuda_device()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }

  constexpr int n = 1000;
  std::vector<float> a(n), b(n), c(n, -1.0f);
  for (int i = 0; i < n; ++i) {
    a[i] = 0.5f * static_cast<float>(i);
    b[i] = 2.0f - static_cast<float>(i);
  }

  const std::size_t bytes = n * sizeof(float);
  float *da = nullptr, *db = nullptr, *dc = nullptr;
  REQUIRE(cudaMalloc(&da, bytes) == cudaSuccess);
  REQUIRE(cudaMalloc(&db, bytes) == cudaSuccess);
  REQUIRE(cudaMalloc(&dc, bytes) == cudaSuccess);
  REQUIRE(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(db, b.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess);

  constexpr int block = 256;
  add_vectors<<<(n + block - 1) / block, block>>>(da, db, dc, n);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  REQUIRE(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);

  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);

  for (int i = 0; i < n; ++i) {
    INFO("i = " << i);
    REQUIRE(c[i] == a[i] + b[i]);
  }
}
