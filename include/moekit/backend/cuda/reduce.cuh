// moekit/backend/cuda/reduce.cuh — reductions along the rows or the columns of
// a row-major (rows, cols) matrix on the device, and the two launch patterns
// the other row and column kernels (softmax, norms, batch norm) share:
//   rows:    a warp per row up to warp_row_cols columns, the whole block per
//            longer row; few very long rows are cut into segments first;
//   columns: 32 columns per block, 8 row lanes, the rows in chunks whose
//            partial results a second pass reduces.
// Each output is combined in a tree fixed by (rows, cols) alone, with no
// atomics, so results repeat bit for bit from run to run; they differ from the
// CPU's sequential order only by rounding. `init` must be an identity of `op`
// (0 for add, -inf for max: what every caller passes), as every partial starts
// from it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "pool.cuh"
#include "stream.cuh"

namespace moekit::detail {

/// Rows up to this long get a warp each; longer ones the whole block.
inline constexpr std::size_t warp_row_cols = 1024;

/// Device scratch for n values of T (none for n = 0), handed back to the pool
/// in stream order when it goes out of scope, i.e. after the kernels queued
/// before that.
template <class T>
class device_scratch {
 public:
  explicit device_scratch(std::size_t n) : p_(n ? static_cast<T*>(device_allocate(n * sizeof(T))) : nullptr) {}
  ~device_scratch() { device_deallocate(p_); }
  device_scratch(const device_scratch&) = delete;
  device_scratch& operator=(const device_scratch&) = delete;
  T* get() const noexcept { return p_; }

 private:
  T* p_;
};

/// The best entry seen so far by argmax: index -1 until there is one.
template <class T>
struct arg_best {
  T value;
  long long index;
};

template <class T>
__device__ inline T shuffle_xor(T v, int offset) {
  return __shfl_xor_sync(full_warp, v, offset);
}
template <class T>
  requires storage_16<T>
__device__ inline T shuffle_xor(T v, int offset) {  // bf16/half: through float (exact both ways)
  return T(__shfl_xor_sync(full_warp, static_cast<float>(v), offset));
}
template <class T>
__device__ inline arg_best<T> shuffle_xor(arg_best<T> v, int offset) {
  return {shuffle_xor(v.value, offset), shuffle_xor(v.index, offset)};
}

/// The rows of a matrix handed out to groups of Threads threads of a
/// threads_per_block block: 32 (a warp per row) or threads_per_block (the
/// block per row). Groups stride over the rows, so any grid covers them.
template <int Threads>
struct row_group {
  static_assert(Threads == 32 || Threads == threads_per_block, "row_group: a warp or the block per row");
  static constexpr int per_block = threads_per_block / Threads;

  __device__ static std::size_t lane() { return threadIdx.x % Threads; }
  __device__ static std::size_t first_row() {
    return static_cast<std::size_t>(blockIdx.x) * per_block + threadIdx.x / Threads;
  }
  __device__ static std::size_t row_stride() { return static_cast<std::size_t>(gridDim.x) * per_block; }

  /// op over the group's values, in a fixed tree; every thread of the group
  /// gets the same result. op must be commutative (the butterfly combines
  /// each pair in both orders).
  template <class T, class Op>
  __device__ static T reduce(T v, Op op) {
    for (int offset = 16; offset > 0; offset /= 2) v = op(v, shuffle_xor(v, offset));
    if constexpr (Threads == 32) {
      return v;
    } else {
      constexpr int warps = Threads / 32;
      __shared__ T partial[warps];
      __syncthreads();  // the previous call's readers are done with partial[]
      if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
      __syncthreads();
      T total = partial[0];
      for (int w = 1; w < warps; ++w) total = op(total, partial[w]);
      return total;
    }
  }
};

/// Calls launch(std::integral_constant<int, Threads>{}, blocks) with the
/// row-group width for rows of `cols` entries and enough blocks for `rows`.
template <class Launch>
void launch_rows(std::size_t rows, std::size_t cols, Launch&& launch) {
  if (cols <= warp_row_cols)
    launch(std::integral_constant<int, 32>{}, grid_for(rows, row_group<32>::per_block));
  else
    launch(std::integral_constant<int, threads_per_block>{}, grid_for(rows, 1));
}

/// Segments per row for reduce_rows: a few long rows (a whole-tensor sum is
/// one row) are cut so that enough blocks work at once; 1 otherwise.
inline std::size_t row_segments(std::size_t rows, std::size_t cols) {
  constexpr std::size_t min_segment = 16384;
  if (rows >= 256 || cols < 2 * min_segment) return 1;
  return std::min<std::size_t>(cols / min_segment, (1024 + rows - 1) / rows);
}

/// out[r * gridDim.y + s] = op over the columns [s * seg, (s + 1) * seg) of row r.
template <int Threads, class T, class Op>
__global__ void reduce_rows_kernel(std::size_t rows, std::size_t cols, std::size_t seg, const T* in, T* out, T init,
                                   Op op) {
  using group = row_group<Threads>;
  const std::size_t c0 = blockIdx.y * seg, c1 = std::min(cols, c0 + seg);
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride()) {
    const T* x = in + r * cols;
    T acc = init;
    for (std::size_t c = c0 + group::lane(); c < c1; c += Threads) acc = op(acc, x[c]);
    acc = group::reduce(acc, op);
    if (group::lane() == 0) out[r * gridDim.y + blockIdx.y] = acc;
  }
}

/// Index of the largest entry of each row, the first one on ties. A NaN is
/// never the largest, except in column 0, where the CPU's scan (`x[c] > x[best]`
/// from best = 0) keeps it.
template <int Threads, class T>
__global__ void argmax_rows_kernel(std::size_t rows, std::size_t cols, const T* in, index_t* out) {
  using group = row_group<Threads>;
  const auto better = [](arg_best<T> a, arg_best<T> b) {
    if (a.index < 0) return b;
    if (b.index < 0) return a;
    if (a.value > b.value) return a;
    if (b.value > a.value) return b;
    return a.index < b.index ? a : b;
  };
  for (std::size_t r = group::first_row(); r < rows; r += group::row_stride()) {
    const T* x = in + r * cols;
    arg_best<T> best{T{}, -1};
    for (std::size_t c = group::lane(); c < cols; c += Threads) {
      const T v = x[c];
      if (v == v && (best.index < 0 || v > best.value)) best = {v, static_cast<long long>(c)};
    }
    best = group::reduce(best, better);
    if (group::lane() == 0) out[r] = cols == 0 || x[0] != x[0] || best.index < 0 ? 0 : static_cast<index_t>(best.index);
  }
}

/// One column-fold pass over a block of 32 columns x chunk_rows rows: 8 row
/// lanes each fold every 8th row, then lane 0 folds the 8 lanes in order and
/// hands store(chunk, c, value) the result.
inline constexpr int fold_cols = 32, fold_lanes = 8;

template <class A, class Term, class Op, class Store>
__global__ void column_fold_kernel(std::size_t rows, std::size_t cols, std::size_t chunk_rows, Term term, A init, Op op,
                                   Store store) {
  __shared__ A lanes[fold_lanes][fold_cols];
  const std::size_t c = static_cast<std::size_t>(blockIdx.x) * fold_cols + threadIdx.x;
  const std::size_t r0 = blockIdx.y * chunk_rows, r1 = std::min(rows, r0 + chunk_rows);
  A acc = init;
  if (c < cols)
    for (std::size_t r = r0 + threadIdx.y; r < r1; r += fold_lanes) acc = op(acc, term(r, c));
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  for (int k = 1; k < fold_lanes; ++k) acc = op(acc, lanes[k][threadIdx.x]);
  store(static_cast<std::size_t>(blockIdx.y), c, acc);
}

/// Terms and stores of the column fold's two passes.
template <class A>
struct chunk_term {
  const A* partial;
  std::size_t cols;
  __device__ A operator()(std::size_t chunk, std::size_t c) const { return partial[chunk * cols + c]; }
};
template <class A>
struct chunk_store {
  A* partial;
  std::size_t cols;
  __device__ void operator()(std::size_t chunk, std::size_t c, A v) const { partial[chunk * cols + c] = v; }
};
template <class Store>
struct column_store {
  Store store;
  template <class A>
  __device__ void operator()(std::size_t, std::size_t c, A v) const {
    store(c, v);
  }
};

/// Row chunks of a column fold: about 512 blocks in all, chunks of at least
/// 64 rows; fixed by the sizes alone, so the combination order never changes.
inline std::size_t fold_chunks(std::size_t rows, std::size_t cols) {
  const std::size_t col_blocks = (cols + fold_cols - 1) / fold_cols;
  const std::size_t wanted = (512 + col_blocks - 1) / col_blocks, most = (rows + 63) / 64;
  return std::max<std::size_t>(1, std::min(wanted, most));
}

/// store(c, op over r of term(r, c)) for every column c, in A. One pass when
/// the rows fit one chunk, else partial results per chunk folded in a second.
template <class A, class Term, class Op, class Store>
void column_fold(std::size_t rows, std::size_t cols, Term term, A init, Op op, Store store, const char* op_name) {
  if (cols == 0) return;
  const dim3 block(fold_cols, fold_lanes);
  const auto col_blocks = static_cast<unsigned>((cols + fold_cols - 1) / fold_cols);
  std::size_t chunks = fold_chunks(rows, cols);
  const std::size_t chunk_rows = (rows + chunks - 1) / chunks;
  chunks = chunk_rows ? (rows + chunk_rows - 1) / chunk_rows : 1;
  if (chunks == 1) {
    column_fold_kernel<<<dim3(col_blocks, 1), block, 0, current_stream()>>>(rows, cols, rows, term, init, op,
                                                                             column_store<Store>{store});
    check_launch(op_name, "column_fold_kernel");
    return;
  }
  device_scratch<A> partial(chunks * cols);  // (chunks, cols)
  column_fold_kernel<<<dim3(col_blocks, static_cast<unsigned>(chunks)), block, 0, current_stream()>>>(
      rows, cols, chunk_rows, term, init, op, chunk_store<A>{partial.get(), cols});
  check_launch(op_name, "column_fold_kernel");
  column_fold_kernel<<<dim3(col_blocks, 1), block, 0, current_stream()>>>(
      chunks, cols, chunks, chunk_term<A>{partial.get(), cols}, init, op, column_store<Store>{store});
  check_launch(op_name, "column_fold_kernel");
}

/// in[r, c] converted to A, as a column-fold term.
template <class T, class A = T>
struct matrix_term {
  const T* in;
  std::size_t cols;
  __device__ A operator()(std::size_t r, std::size_t c) const { return static_cast<A>(in[r * cols + c]); }
};
/// out[c] = v converted to T, as a column-fold store.
template <class T>
struct store_to {
  T* out;
  template <class A>
  __device__ void operator()(std::size_t c, A v) const {
    out[c] = static_cast<T>(v);
  }
};

struct cuda_reduce {
  /// out[r] = op(...op(op(init, in[r, 0]), in[r, 1])...), init an identity of op.
  template <class T, class Op>
  static void reduce_rows(std::size_t rows, std::size_t cols, const T* in, T* out, T init, Op op) {
    if (rows == 0) return;
    const std::size_t wanted = row_segments(rows, cols);
    if (wanted == 1) {
      launch_reduce_rows(rows, cols, cols, 1, in, out, init, op);
      return;
    }
    const std::size_t seg = (cols + wanted - 1) / wanted, segments = (cols + seg - 1) / seg;
    device_scratch<T> partial(rows * segments);  // (rows, segments)
    launch_reduce_rows(rows, cols, seg, segments, in, partial.get(), init, op);
    launch_reduce_rows(rows, segments, segments, 1, partial.get(), out, init, op);
  }

  /// out[c] = op over the rows of column c, init an identity of op.
  template <class T, class Op>
  static void reduce_cols(std::size_t rows, std::size_t cols, const T* in, T* out, T init, Op op) {
    column_fold(rows, cols, matrix_term<T>{in, cols}, init, op, store_to<T>{out}, "reduce_cols");
  }

  /// out[r] = index of the largest entry of row r (the first one on ties).
  template <class T>
  static void argmax_rows(std::size_t rows, std::size_t cols, const T* in, index_t* out) {
    if (rows == 0) return;
    launch_rows(rows, cols, [&](auto threads, unsigned blocks) {
      argmax_rows_kernel<decltype(threads)::value><<<blocks, threads_per_block, 0, current_stream()>>>(rows, cols, in,
                                                                                                      out);
    });
    check_launch("argmax_rows", "argmax_rows_kernel");
  }

 private:
  template <class T, class Op>
  static void launch_reduce_rows(std::size_t rows, std::size_t cols, std::size_t seg, std::size_t segments,
                                 const T* in, T* out, T init, Op op) {
    launch_rows(rows, seg, [&](auto threads, unsigned blocks) {
      reduce_rows_kernel<decltype(threads)::value><<<dim3(blocks, static_cast<unsigned>(segments)), threads_per_block,
                                                     0, current_stream()>>>(rows, cols, seg, in, out, init, op);
    });
    check_launch("reduce_rows", "reduce_rows_kernel");
  }
};

}  // namespace moekit::detail
