// moekit/backend/cuda/check.cuh — every CUDA runtime, cuBLAS and kernel-launch
// result goes through these; a failure becomes a moekit::cuda_error that names
// the call, the op that made it and the runtime's own message.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <string_view>

#include "../../core/error.hpp"

namespace moekit::detail {

[[noreturn]] inline void throw_cuda_error(std::string_view op, std::string_view call, std::string_view what) {
  throw cuda_error(std::string(op) + ": " + std::string(call) + " failed: " + std::string(what));
}

inline void check_cuda(cudaError_t err, std::string_view op, std::string_view call) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  throw_cuda_error(op, call, std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")");
}

inline void check_cublas(cublasStatus_t status, std::string_view op, std::string_view call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw_cuda_error(op, call, cublasGetStatusString(status));
}

/// After a <<<...>>> launch: a bad configuration shows up here, not later.
inline void check_launch(std::string_view op, std::string_view kernel) {
  check_cuda(cudaGetLastError(), op, std::string(kernel) + "<<<>>>");
}

}  // namespace moekit::detail

/// MOEKIT_CUDA_CHECK(cudaMemcpyAsync(...), "to<cpu>") — throws cuda_error naming the call and the op.
#define MOEKIT_CUDA_CHECK(call, op) ::moekit::detail::check_cuda((call), (op), #call)
#define MOEKIT_CUBLAS_CHECK(call, op) ::moekit::detail::check_cublas((call), (op), #call)
