// moekit/backend/cpu/top_k.hpp — the k largest entries of each row, in
// descending order. Ties: the higher score first, then the lower index, so the
// result is a total order and CPU and CUDA agree.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <type_traits>

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
    if constexpr (std::is_same_v<T, float>)
      if (cols >= pass_min_cols && cols <= pass_cols && k >= pass_min_k && k <= pass_k &&
          select_by_passes(cols, k, x, values, best))
        return;
    select_by_insertion(cols, k, x, values, best);
  }

  /// Float rows select_by_passes takes: pass_min_cols to pass_cols entries,
  /// k from pass_min_k to pass_k (top-2 of 64: insertion 4 % faster).
  static constexpr std::size_t pass_min_cols = 64, pass_cols = 256, pass_min_k = 4, pass_k = 16;

  /// k passes over a copy of the row, each a vector max, then the first
  /// entry equal to it, which is taken and set to -inf: the only branch on
  /// the data is the scan's exit, where insertion mispredicts on about every
  /// entry that gets in (C-F's top-6 of 64 on random scores: 1.4x faster,
  /// top-8 of 128 1.7x; at 32 columns slower, so rows from pass_min_cols).
  /// The same result as insertion; false, with nothing usable written, for
  /// a row with a NaN or fewer than k entries above -inf, which insertion
  /// then decides as before.
  static bool select_by_passes(std::size_t cols, std::size_t k, const float* x, float* values, index_t* best) {
    constexpr float none = -std::numeric_limits<float>::infinity();
    alignas(64) float w[pass_cols];
    int nan = 0;
#pragma omp simd reduction(| : nan)
    for (std::size_t c = 0; c < cols; ++c) {
      w[c] = x[c];
      nan |= x[c] != x[c];
    }
    if (nan != 0) return false;
    for (std::size_t j = 0; j < k; ++j) {
      float m = none;
#pragma omp simd reduction(max : m)
      for (std::size_t c = 0; c < cols; ++c) m = w[c] > m ? w[c] : m;
      if (!(m > none)) return false;
      std::size_t c = 0;
      while (w[c] != m) ++c;  // the lowest index wins ties
      values[j] = w[c];  // not m: -0 and +0 are equal, and either may be the max
      best[j] = static_cast<index_t>(c);
      w[c] = none;
    }
    return true;
  }

  /// Insertion into the sorted list (values, best), the k-th value in a
  /// register: cheap for the small k of routers, and the order that defines
  /// every case (NaN included).
  template <class T>
  static void select_by_insertion(std::size_t cols, std::size_t k, const T* x, T* values, index_t* best) {
    std::size_t filled = 0;
    T kth{};  // values[k - 1] once filled == k
    for (std::size_t c = 0; c < cols; ++c) {
      const T v = x[c];
      if (filled == k && !(v > kth)) continue;  // lower index wins ties
      std::size_t pos = std::min(filled, k - 1);
      for (; pos > 0 && v > values[pos - 1]; --pos) {
        values[pos] = values[pos - 1];
        best[pos] = best[pos - 1];
      }
      values[pos] = v;
      best[pos] = static_cast<index_t>(c);
      filled = std::min(filled + 1, k);
      if (filled == k) kth = values[k - 1];
    }
  }
};

}  // namespace moekit::detail
