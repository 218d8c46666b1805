// moekit/backend/cpu/grouped_rows.hpp — row-wise work over row segments
// ("groups", an MoE layer's experts) whose bounds live in backend memory:
// rows [offsets[g], offsets[g+1]) belong to group g, whose row operand is
// b[g]. The per-expert bias (and its gradient) of an expert bank.
#pragma once

#include <cstddef>

#include "../../core/config.hpp"
#include "map.hpp"
#include "reduce.hpp"

namespace moekit::detail {

struct cpu_grouped_rows {
  /// out[r, c] = f(h[r, c], b[g, c]) for every row r of group g; h and out
  /// are (rows, n) with rows = offsets[groups], b is (groups, n). `out` may
  /// alias h.
  template <class T, class F>
  static void map_grouped_rows(std::size_t rows, std::size_t groups, const index_t* offsets, std::size_t n, T* out,
                               F f, const T* h, const T* b) {
    (void)rows;  // the offsets carry it here; a device kernel needs it without reading them
    for (std::size_t g = 0; g < groups; ++g) {
      const auto begin = static_cast<std::size_t>(offsets[g]), size = static_cast<std::size_t>(offsets[g + 1]) - begin;
      cpu_map::map_rows(size, n, out + begin * n, f, h + begin * n, b + g * n);
    }
  }

  /// out[g, c] = Σ over the rows r of group g of dy[r, c], rows in order (an
  /// empty group gets 0). dy is (rows, n), out (groups, n).
  template <class T>
  static void grouped_column_sums(std::size_t groups, const index_t* offsets, std::size_t n, const T* dy, T* out) {
    for (std::size_t g = 0; g < groups; ++g) {
      const auto begin = static_cast<std::size_t>(offsets[g]), size = static_cast<std::size_t>(offsets[g + 1]) - begin;
      cpu_reduce::reduce_cols(size, n, dy + begin * n, out + g * n, T(0), add_op{});
    }
  }

 private:
  struct add_op {
    template <class T>
    T operator()(T a, T b) const {
      return a + b;
    }
  };
};

}  // namespace moekit::detail
