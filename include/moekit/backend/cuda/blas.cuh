// moekit/backend/cuda/blas.cuh — one cuBLAS handle per host thread and device,
// created on first use and bound to the current stream on every fetch. TF32
// tensor-core math is off unless a program asks for it: fp32 GEMMs then match
// the CPU backend to fp32 rounding.
#pragma once

#include <cublas_v2.h>

#include <atomic>
#include <memory>
#include <unordered_map>

#include "check.cuh"
#include "pool.cuh"
#include "stream.cuh"

namespace moekit {

namespace detail {
inline std::atomic<bool>& tf32_flag() noexcept {
  static std::atomic<bool> on{false};
  return on;
}

struct cublas_handle_deleter {
  void operator()(cublasContext* h) const noexcept { (void)cublasDestroy(h); }
};

/// This thread's handle for the current device, on the current stream.
inline cublasHandle_t cublas_handle(const char* op) {
  thread_local std::unordered_map<int, std::unique_ptr<cublasContext, cublas_handle_deleter>> handles;
  const int device = current_device(op);
  auto& slot = handles[device];
  if (!slot) {
    cublasHandle_t h = nullptr;
    MOEKIT_CUBLAS_CHECK(cublasCreate(&h), op);
    slot.reset(h);
  }
  cublasHandle_t h = slot.get();
  MOEKIT_CUBLAS_CHECK(cublasSetStream(h, current_stream()), op);
  MOEKIT_CUBLAS_CHECK(
      cublasSetMathMode(h, tf32_flag().load(std::memory_order_relaxed) ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
      op);
  return h;
}
}  // namespace detail

/// Lets fp32 GEMMs use TF32 tensor cores (10-bit mantissa products): faster,
/// no longer fp32-exact. Off by default, as in PyTorch >= 1.12.
inline void allow_tf32(bool on) noexcept { detail::tf32_flag().store(on, std::memory_order_relaxed); }
inline bool tf32_allowed() noexcept { return detail::tf32_flag().load(std::memory_order_relaxed); }

}  // namespace moekit
