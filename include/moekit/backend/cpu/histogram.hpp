// moekit/backend/cpu/histogram.hpp — counts of integer keys (tokens per expert).
#pragma once

#include <algorithm>
#include <cstddef>

#include "../../core/config.hpp"

namespace moekit::detail {

struct cpu_histogram {
  /// counts[b] = number of i with keys[i] == b, for b in [0, bins). Keys outside
  /// [0, bins) are not counted (as CUB's histogram does), e.g. dropped tokens (-1).
  static void histogram(std::size_t n, const index_t* keys, std::size_t bins, index_t* counts) {
    std::fill(counts, counts + bins, index_t{0});
    for (std::size_t i = 0; i < n; ++i)
      if (keys[i] >= 0 && static_cast<std::size_t>(keys[i]) < bins) ++counts[keys[i]];
  }
};

}  // namespace moekit::detail
