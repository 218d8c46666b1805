// moekit/backend/cpu/top_k.hpp — the k largest entries of each row, in
// descending order. Ties: the higher score first, then the lower index, so the
// result is a total order and CPU and CUDA agree.
#pragma once

#include <algorithm>
#include <cstddef>

#include "../../core/config.hpp"
#include "parallel.hpp"
#include "softmax.hpp"

namespace moekit::detail {

struct cpu_top_k {
  template <class T>
  static void top_k_rows(std::size_t rows, std::size_t cols, std::size_t k, const T* in, T* values, index_t* indices) {
    if (k == 0) return;
    parallel_for(rows, cols * 4, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) select_row(cols, k, in + r * cols, values + r * k, indices + r * k);
    });
  }

  /// The router's two steps in one pass over each row, while it is in cache:
  /// probs (rows, cols) = softmax_rows(logits), then values and indices
  /// (rows, k) = top_k_rows(probs). Equal to those two calls, bit for bit.
  template <class T>
  static void softmax_top_k_rows(std::size_t rows, std::size_t cols, std::size_t k, const T* logits, T* probs,
                                 T* values, index_t* indices) {
    parallel_for(rows, cols * 12, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t r = lo; r < hi; ++r) {
        T* p = probs + r * cols;
        cpu_softmax::softmax_row(cols, logits + r * cols, p);
        if (k != 0) select_row(cols, k, p, values + r * k, indices + r * k);
      }
    });
  }

 private:
  /// values[0, k) and indices[0, k) of one row x[0, cols).
  template <class T>
  static void select_row(std::size_t cols, std::size_t k, const T* x, T* values, index_t* best) {
    // Insertion into a sorted list of k: cheap for the small k of routers.
    std::size_t filled = 0;
    for (std::size_t c = 0; c < cols; ++c) {
      if (filled == k && !(x[c] > x[best[k - 1]])) continue;  // lower index wins ties
      std::size_t pos = std::min(filled, k - 1);
      while (pos > 0 && x[c] > x[best[pos - 1]]) {
        best[pos] = best[pos - 1];
        --pos;
      }
      best[pos] = static_cast<index_t>(c);
      filled = std::min(filled + 1, k);
    }
    for (std::size_t j = 0; j < k; ++j) values[j] = x[best[j]];
  }
};

}  // namespace moekit::detail
