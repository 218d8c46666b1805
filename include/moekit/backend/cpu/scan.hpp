// moekit/backend/cpu/scan.hpp — exclusive prefix sum (per-expert offsets).
#pragma once

#include <cstddef>

namespace moekit::detail {

struct cpu_scan {
  /// out[i] = in[0] + ... + in[i-1]; out[0] = 0. `out` may alias `in`.
  template <class T>
  static void exclusive_scan(std::size_t n, const T* in, T* out) {
    T running{};
    for (std::size_t i = 0; i < n; ++i) {
      const T v = in[i];
      out[i] = running;
      running += v;
    }
  }
};

}  // namespace moekit::detail
