// moekit/backend/cpu/sort.hpp — stable sort of (key, value) pairs by key: the
// "order assignments by expert" step of MoE routing.
#pragma once

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <vector>

#include "../../core/config.hpp"

namespace moekit::detail {

struct cpu_sort {
  /// Stable: equal keys keep their input order. Small non-negative key ranges
  /// (expert ids) use a counting sort, O(n + range); others a merge sort.
  static void sort_pairs(std::size_t n, const index_t* keys_in, const index_t* values_in, index_t* keys_out,
                         index_t* values_out) {
    if (n == 0) return;
    const auto [lo, hi] = std::minmax_element(keys_in, keys_in + n);
    if (*lo >= 0 && static_cast<std::size_t>(*hi) < std::max<std::size_t>(n, 4096)) {
      std::vector<std::size_t> start(static_cast<std::size_t>(*hi) + 2, 0);
      for (std::size_t i = 0; i < n; ++i) ++start[static_cast<std::size_t>(keys_in[i]) + 1];
      std::partial_sum(start.begin(), start.end(), start.begin());
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t at = start[static_cast<std::size_t>(keys_in[i])]++;
        keys_out[at] = keys_in[i];
        values_out[at] = values_in[i];
      }
      return;
    }
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return keys_in[a] < keys_in[b]; });
    std::vector<index_t> k(n), v(n);  // keys_out may alias keys_in
    for (std::size_t i = 0; i < n; ++i) k[i] = keys_in[order[i]], v[i] = values_in[order[i]];
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
  }
};

}  // namespace moekit::detail
