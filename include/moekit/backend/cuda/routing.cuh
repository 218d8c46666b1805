// moekit/backend/cuda/routing.cuh — the last step of device-side MoE routing
// (twin of cpu/routing.hpp): from assignments sorted by expert, the routing
// plan's token, expert and gate-index arrays, with a capacity applied. One
// thread per sorted assignment; each writes its own output place, so the
// result is the CPU's exactly.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../../core/config.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "stream.cuh"

namespace moekit::detail {

// A template (over the index type) so that the header may be included by
// several translation units: a plain __global__ function cannot be inline.
template <class I>
__global__ void assignment_layout_kernel(std::size_t n, std::size_t tokens, std::size_t k, const I* sorted_experts,
                                         const I* sorted_slots, const I* offsets, const I* kept_offsets,
                                         std::size_t capacity, I* token, I* expert, I* slot_index) {
  for (std::size_t p = global_thread(); p < n; p += grid_stride()) {
    const I e = sorted_experts[p];
    const auto rank = static_cast<I>(p) - offsets[e];
    if (capacity && static_cast<std::size_t>(rank) >= capacity) continue;
    const auto at = static_cast<std::size_t>(kept_offsets[e] + rank);
    const auto v = static_cast<std::size_t>(sorted_slots[p]);
    const std::size_t t = v % tokens, j = v / tokens;
    token[at] = static_cast<I>(t);
    expert[at] = e;
    slot_index[at] = static_cast<I>(t * k + j);
  }
}

struct cuda_routing {
  /// See cpu_routing::assignment_layout. Every pointer is device memory.
  static void assignment_layout(std::size_t n, std::size_t tokens, std::size_t k, const index_t* sorted_experts,
                                const index_t* sorted_slots, const index_t* offsets, const index_t* kept_offsets,
                                std::size_t capacity, index_t* token, index_t* expert, index_t* slot_index) {
    if (n == 0) return;
    assignment_layout_kernel<<<grid_for(n), threads_per_block, 0, current_stream()>>>(
        n, tokens, k, sorted_experts, sorted_slots, offsets, kept_offsets, capacity, token, expert, slot_index);
    check_launch("assignment_layout", "assignment_layout_kernel");
  }
};

}  // namespace moekit::detail
