// moekit/backend/cuda/map.cuh — element-wise maps on the device, plain and
// with a row or column operand broadcast across a (rows, cols) matrix. One
// grid-stride thread per element; each thread reads element i and then writes
// element i, so `out` may alias an input as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../../core/host_device.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "stream.cuh"

namespace moekit::detail {

/// (row, col) of flat index i of a (rows, cols) matrix, moved on by a fixed
/// stride: one division when a thread starts, none per step (a 64-bit division
/// costs more than the load it indexes).
struct matrix_walk {
  std::size_t row, col;
  std::size_t step_rows, step_cols, cols;

  MOEKIT_HOST_DEVICE matrix_walk(std::size_t i, std::size_t stride, std::size_t cols_)
      : row(i / cols_), col(i % cols_), step_rows(stride / cols_), step_cols(stride % cols_), cols(cols_) {}

  MOEKIT_HOST_DEVICE void advance() {
    row += step_rows;
    col += step_cols;
    if (col >= cols) {
      col -= cols;
      ++row;
    }
  }
};

template <class T, class F, class... In>
__global__ void map_kernel(std::size_t n, T* out, F f, const In*... in) {
  for (std::size_t i = global_thread(); i < n; i += grid_stride()) out[i] = f(in[i]...);
}

template <class T, class F>
__global__ void generate_kernel(std::size_t n, T* out, F f) {
  for (std::size_t i = global_thread(); i < n; i += grid_stride()) out[i] = f(i);
}

/// out[r, c] = f(a[r, c], row[c]) when RowOperand, else f(a[r, c], col[r]).
template <bool RowOperand, class T, class F>
__global__ void map_broadcast_kernel(std::size_t rows, std::size_t cols, T* out, F f, const T* a, const T* operand) {
  const std::size_t n = rows * cols;
  std::size_t i = global_thread();
  if (i >= n) return;
  matrix_walk at(i, grid_stride(), cols);
  for (; i < n; i += grid_stride(), at.advance()) out[i] = f(a[i], operand[RowOperand ? at.col : at.row]);
}

struct cuda_map {
  /// out[i] = f(in[i]...) for i in [0, n). `out` may alias an input.
  template <class T, class F, class... In>
  static void map(std::size_t n, T* out, F f, const In*... in) {
    if (n == 0) return;
    map_kernel<<<grid_for(n), threads_per_block, 0, current_stream()>>>(n, out, f, in...);
    check_launch("map", "map_kernel");
  }

  /// out[i] = f(i) for i in [0, n): fills from the index (random streams, ranges).
  template <class T, class F>
  static void generate(std::size_t n, T* out, F f) {
    if (n == 0) return;
    generate_kernel<<<grid_for(n), threads_per_block, 0, current_stream()>>>(n, out, f);
    check_launch("generate", "generate_kernel");
  }

  /// out[r, c] = f(a[r, c], row[c]): `row` is broadcast over the rows.
  template <class T, class F>
  static void map_rows(std::size_t rows, std::size_t cols, T* out, F f, const T* a, const T* row) {
    if (rows * cols == 0) return;
    map_broadcast_kernel<true><<<grid_for(rows * cols), threads_per_block, 0, current_stream()>>>(rows, cols, out, f,
                                                                                                 a, row);
    check_launch("map_rows", "map_broadcast_kernel");
  }

  /// out[r, c] = f(a[r, c], col[r]): `col` is broadcast over the columns.
  template <class T, class F>
  static void map_cols(std::size_t rows, std::size_t cols, T* out, F f, const T* a, const T* col) {
    if (rows * cols == 0) return;
    map_broadcast_kernel<false><<<grid_for(rows * cols), threads_per_block, 0, current_stream()>>>(rows, cols, out, f,
                                                                                                  a, col);
    check_launch("map_cols", "map_broadcast_kernel");
  }
};

}  // namespace moekit::detail
