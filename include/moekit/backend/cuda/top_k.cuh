// moekit/backend/cuda/top_k.cuh — the k largest entries of each row, in
// descending order, and the router's fused softmax + top-k.
//
// A group of threads per row (reduce.cuh's row_group: a warp for rows up to
// warp_row_cols columns, the block beyond) selects the k entries by k rounds
// of a group argmax: round j takes the best entry that comes after round
// j-1's pick in the selection order.
// That order is total (value descending, then index ascending: the CPU's
// tie-break), so any reduction order finds the same entry, and k rounds of
// cols / group comparisons stay cheap for router sizes (k <= 8, cols <= 256).
// It is correct for every k <= cols, only slower for large k.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <limits>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "../functors.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "softmax.cuh"
#include "stream.cuh"

namespace moekit::detail {

namespace top_k_kernels {

/// A selectable entry is an arg_best (reduce.cuh): value in the compute type
/// and column, column -1 meaning "none".
///
/// Whether a is selected before b: the higher value first, then the lower
/// index. NaN goes after every number, so a row with NaN still yields k
/// distinct columns (the CPU's choice there is unspecified).
template <class A>
__device__ inline bool before(arg_best<A> a, arg_best<A> b) {
  const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
  if (a_nan || b_nan) return !a_nan || (b_nan && a.index < b.index);
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

/// The earlier of a and b in the selection order, "none" losing to anything.
/// Commutative and associative (the order is total), as row_group::reduce needs.
struct earlier {
  template <class A>
  __device__ arg_best<A> operator()(arg_best<A> a, arg_best<A> b) const {
    if (b.index < 0) return a;
    if (a.index < 0) return b;
    return before(b, a) ? b : a;
  }
};

/// values[0, k), indices[0, k) of the row x[0, cols): k rounds of group argmax.
template <int Threads, class T>
__device__ void select_row(std::size_t cols, std::size_t k, const T* x, T* values, index_t* indices) {
  using A = accumulate_t<T>;
  using group = row_group<Threads>;
  arg_best<A> last{A(0), -1};
  for (std::size_t j = 0; j < k; ++j) {
    arg_best<A> best{A(0), -1};
    for (std::size_t c = group::lane(); c < cols; c += Threads) {
      const arg_best<A> here{static_cast<A>(x[c]), static_cast<long long>(c)};
      if (last.index < 0 || before(last, here)) best = earlier{}(best, here);
    }
    last = group::reduce(best, earlier{});
    if (last.index < 0) return;  // k > cols: nothing left to select (the tensor op rejects it)
    if (group::lane() == 0) {
      values[j] = x[last.index];  // the stored value, bits and all
      indices[j] = static_cast<index_t>(last.index);
    }
  }
}

template <int Threads, class T>
__global__ void __launch_bounds__(threads_per_block)
    top_k(std::size_t rows, std::size_t cols, std::size_t k, const T* in, T* values, index_t* indices) {
  using group = row_group<Threads>;
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride())
    select_row<Threads>(cols, k, in + r * cols, values + r * k, indices + r * k);
}

template <int Threads, class T>
__global__ void __launch_bounds__(threads_per_block)
    softmax_top_k(std::size_t rows, std::size_t cols, std::size_t k, const T* logits, T* probs, T* values,
                  index_t* indices) {
  using group = row_group<Threads>;
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride()) {
    T* p = probs + r * cols;
    softmax_row<Threads, false>(cols, logits + r * cols, p);
    // The selection reads probabilities other threads of the group wrote.
    if constexpr (Threads == 32) __syncwarp();
    else __syncthreads();
    select_row<Threads>(cols, k, p, values + r * k, indices + r * k);
  }
}

}  // namespace top_k_kernels

struct cuda_top_k {
  /// The k largest entries of each row of in (rows, cols), descending, into
  /// values and indices (rows, k); ties go to the lower index, as on the CPU.
  template <class T>
  static void top_k_rows(std::size_t rows, std::size_t cols, std::size_t k, const T* in, T* values, index_t* indices) {
    if (k == 0 || rows == 0) return;
    launch_rows(rows, cols, [&](auto threads, unsigned blocks) {
      top_k_kernels::top_k<decltype(threads)::value>
          <<<blocks, threads_per_block, 0, current_stream()>>>(rows, cols, k, in, values, indices);
      check_launch("top_k_rows", "top_k");
    });
  }

  /// probs (rows, cols) = softmax_rows(logits), then values and indices
  /// (rows, k) = top_k_rows(probs), in one kernel: the selection ranks the
  /// probabilities as stored, so values[r, j] == probs[r, indices[r, j]] exactly.
  template <class T>
  static void softmax_top_k_rows(std::size_t rows, std::size_t cols, std::size_t k, const T* logits, T* probs,
                                 T* values, index_t* indices) {
    if (rows == 0 || cols == 0) return;
    launch_rows(rows, cols, [&](auto threads, unsigned blocks) {
      top_k_kernels::softmax_top_k<decltype(threads)::value>
          <<<blocks, threads_per_block, 0, current_stream()>>>(rows, cols, k, logits, probs, values, indices);
      check_launch("softmax_top_k_rows", "softmax_top_k");
    });
  }
};

}  // namespace moekit::detail
