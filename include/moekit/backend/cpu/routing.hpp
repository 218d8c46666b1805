// moekit/backend/cpu/routing.hpp — the last step of device-side MoE routing:
// from assignments sorted by expert, the routing plan's arrays (token, expert,
// and the index of each assignment's gate), with a capacity applied.
#pragma once

#include <cstddef>

#include "../../core/config.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_routing {
  /// n assignments of `tokens` tokens with k slots each, stably sorted by
  /// expert: sorted_experts[p] (non-decreasing) and sorted_slots[p] = j·tokens + t
  /// (slot-major position: token t's j-th choice). offsets (E + 1) bound each
  /// expert's sorted run. With capacity > 0 an assignment of rank r within its
  /// expert's run is kept only if r < capacity and lands at kept_offsets[e] + r
  /// (kept_offsets: the exclusive scan of min(count, capacity)); with
  /// capacity = 0 every assignment is kept and kept_offsets is offsets.
  /// Writes, at each kept assignment's place: token[at] = t, expert[at] = e,
  /// slot_index[at] = t·k + j (its entry in the (tokens, k) gates).
  /// Each input position writes its own output place, so the result does not
  /// depend on the thread count.
  static void assignment_layout(std::size_t n, std::size_t tokens, std::size_t k, const index_t* sorted_experts,
                                const index_t* sorted_slots, const index_t* offsets, const index_t* kept_offsets,
                                std::size_t capacity, index_t* token, index_t* expert, index_t* slot_index) {
    if (n == 0) return;
    parallel_for(n, 4, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t p = lo; p < hi; ++p) {
        const index_t e = sorted_experts[p];
        const auto rank = static_cast<index_t>(p) - offsets[e];
        if (capacity && static_cast<std::size_t>(rank) >= capacity) continue;
        const auto at = static_cast<std::size_t>(kept_offsets[e] + rank);
        const auto v = static_cast<std::size_t>(sorted_slots[p]);
        const std::size_t t = v % tokens, j = v / tokens;
        token[at] = static_cast<index_t>(t);
        expert[at] = e;
        slot_index[at] = static_cast<index_t>(t * k + j);
      }
    });
  }
};

}  // namespace moekit::detail
