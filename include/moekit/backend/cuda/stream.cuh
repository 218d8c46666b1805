// moekit/backend/cuda/stream.cuh — the stream every moekit CUDA call of this
// host thread is ordered on, and a guard that changes it for a scope.
//
// The default is cudaStreamPerThread, not the legacy stream 0, so two host
// threads driving the GPU do not serialise each other.
#pragma once

#include <cuda_runtime.h>

namespace moekit {

namespace detail {
inline cudaStream_t& current_stream_slot() noexcept {
  thread_local cudaStream_t stream = cudaStreamPerThread;
  return stream;
}
}  // namespace detail

/// The stream moekit's kernels, copies, allocations and cuBLAS calls use on this thread.
inline cudaStream_t current_stream() noexcept { return detail::current_stream_slot(); }

/// Makes `s` the current stream until the end of the scope:
///   { stream_guard g(my_stream); y = model(x); }   // all of it on my_stream
/// Memory freed on one stream may be reused on another only after the work that
/// freed it is ordered before the reuse; synchronise streams yourself when you switch.
class stream_guard {
 public:
  explicit stream_guard(cudaStream_t s) noexcept : saved_(detail::current_stream_slot()) {
    detail::current_stream_slot() = s;
  }
  ~stream_guard() { detail::current_stream_slot() = saved_; }
  stream_guard(const stream_guard&) = delete;
  stream_guard& operator=(const stream_guard&) = delete;

 private:
  cudaStream_t saved_;
};

}  // namespace moekit
