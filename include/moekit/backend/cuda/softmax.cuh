// moekit/backend/cuda/softmax.cuh — numerically stable softmax and log-softmax
// over the rows of a (rows, cols) matrix on the device, and their backward
// passes: a warp per row up to warp_row_cols columns, the block per longer row
// (reduce.cuh's row_group). Arithmetic is in accumulate_t<T> (float for bf16
// and half). Every thread writes only the entries it read after the row's
// reductions, so `out` may alias `in` (and dx may alias dy or y) as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <limits>

#include "../../core/dtype.hpp"
#include "../functors.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "reduce.cuh"
#include "stream.cuh"

namespace moekit::detail {

/// One row by the Threads lanes of a row_group: y[0, cols) = log_softmax or
/// softmax of x[0, cols). Log: y = x - max - log(sum(exp(x - max))); else
/// y = exp(x - max) / sum(exp(x - max)). Also the first half of the fused
/// router kernel (top_k.cuh), so its probabilities equal softmax_rows' bit for bit.
template <int Threads, bool Log, class T>
__device__ void softmax_row(std::size_t cols, const T* x, T* y) {
  using group = row_group<Threads>;
  using A = accumulate_t<T>;
  A m = -std::numeric_limits<A>::infinity();
  for (std::size_t c = group::lane(); c < cols; c += Threads) m = fn::max{}(m, static_cast<A>(x[c]));
  m = group::reduce(m, fn::max{});
  A sum = 0;
  for (std::size_t c = group::lane(); c < cols; c += Threads) sum += std::exp(static_cast<A>(x[c]) - m);
  sum = group::reduce(sum, fn::add{});
  if constexpr (Log) {
    const A shift = m + std::log(sum);
    for (std::size_t c = group::lane(); c < cols; c += Threads) y[c] = static_cast<T>(static_cast<A>(x[c]) - shift);
  } else {
    const A inv = A(1) / sum;
    for (std::size_t c = group::lane(); c < cols; c += Threads)
      y[c] = static_cast<T>(std::exp(static_cast<A>(x[c]) - m) * inv);
  }
}

template <int Threads, bool Log, class T>
__global__ void softmax_rows_kernel(std::size_t rows, std::size_t cols, const T* in, T* out) {
  using group = row_group<Threads>;
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride())
    softmax_row<Threads, Log>(cols, in + r * cols, out + r * cols);
}

/// Log: dx = dy - exp(y) * sum(dy); else dx = y * (dy - sum(dy * y)).
template <int Threads, bool Log, class T>
__global__ void softmax_rows_backward_kernel(std::size_t rows, std::size_t cols, const T* y, const T* dy, T* dx) {
  using group = row_group<Threads>;
  using A = accumulate_t<T>;
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride()) {
    const std::size_t at = r * cols;
    A s = 0;
    for (std::size_t c = group::lane(); c < cols; c += Threads)
      s += Log ? static_cast<A>(dy[at + c]) : static_cast<A>(dy[at + c]) * static_cast<A>(y[at + c]);
    s = group::reduce(s, fn::add{});
    for (std::size_t c = group::lane(); c < cols; c += Threads) {
      const A g = static_cast<A>(dy[at + c]), v = static_cast<A>(y[at + c]);
      dx[at + c] = static_cast<T>(Log ? g - std::exp(v) * s : v * (g - s));
    }
  }
}

struct cuda_softmax {
  /// out[r] = exp(x[r] - max) / sum(exp(x[r] - max)).
  template <class T>
  static void softmax_rows(std::size_t rows, std::size_t cols, const T* in, T* out) {
    forward<false>(rows, cols, in, out, "softmax_rows");
  }

  /// out[r] = x[r] - max - log(sum(exp(x[r] - max))).
  template <class T>
  static void log_softmax_rows(std::size_t rows, std::size_t cols, const T* in, T* out) {
    forward<true>(rows, cols, in, out, "log_softmax_rows");
  }

  /// dx = y * (dy - sum(dy * y)) for y = softmax(x).
  template <class T>
  static void softmax_rows_backward(std::size_t rows, std::size_t cols, const T* y, const T* dy, T* dx) {
    backward<false>(rows, cols, y, dy, dx, "softmax_rows_backward");
  }

  /// dx = dy - exp(y) * sum(dy) for y = log_softmax(x).
  template <class T>
  static void log_softmax_rows_backward(std::size_t rows, std::size_t cols, const T* y, const T* dy, T* dx) {
    backward<true>(rows, cols, y, dy, dx, "log_softmax_rows_backward");
  }

 private:
  template <bool Log, class T>
  static void forward(std::size_t rows, std::size_t cols, const T* in, T* out, const char* op) {
    if (rows == 0) return;
    launch_rows(rows, cols, [&](auto threads, unsigned blocks) {
      softmax_rows_kernel<decltype(threads)::value, Log><<<blocks, threads_per_block, 0, current_stream()>>>(
          rows, cols, in, out);
    });
    check_launch(op, "softmax_rows_kernel");
  }

  template <bool Log, class T>
  static void backward(std::size_t rows, std::size_t cols, const T* y, const T* dy, T* dx, const char* op) {
    if (rows == 0) return;
    launch_rows(rows, cols, [&](auto threads, unsigned blocks) {
      softmax_rows_backward_kernel<decltype(threads)::value, Log><<<blocks, threads_per_block, 0, current_stream()>>>(
          rows, cols, y, dy, dx);
    });
    check_launch(op, "softmax_rows_backward_kernel");
  }
};

}  // namespace moekit::detail
