// moekit/backend/cuda/gemm_grouped.cuh — the grouped GEMMs of an MoE layer on
// the GPU, with cpu_gemm_grouped's interface and results: rows
// [offsets[g], offsets[g+1]) of A belong to group g. `offsets` lives on the
// device and the host never reads it (no sync inside an MoE layer), so the
// kernels find their groups themselves.
//
// One SIMT tile kernel serves all three GEMM shapes: a 64 x 128 tile of C per
// block of 256 threads, each thread 4 x 8 outputs in registers, k in slices of
// 16 staged through shared memory in the accumulation type (float for 16-bit
// storage, double for double). No tensor cores: fp32 and fp64 are what the
// oracle tests compare exactly-ish, and a 16-bit tensor-core path is future work.
//
// gemm_grouped is persistent: as many blocks as fit on the device at once,
// each looping over linear tile ids (row tile, column tile). The row tiles are
// the aligned scheme of tile_schedule.hpp: their count comes from offsets[0]
// and offsets[groups] on the device and a block finds its group by binary
// search, so no host-side row count or prefix sum is needed (the CPU signature
// has no total-row argument, and reading offsets would sync).
//
// gemm_grouped_reduce (dW_g = A_gᵀ·D_g) has a fixed grid: one block per
// (m tile, n tile) and a group per grid row, looping over the group's rows.
//
// grouped_bias_activation_backward: one block per (32 columns, group); 8 row
// slices sum their rows and the 8 partials are added in a fixed order, so db
// is deterministic (no atomics).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "../../core/error.hpp"
#include "check.cuh"
#include "pool.cuh"
#include "stream.cuh"
#include "tile_schedule.hpp"

namespace moekit::detail {

/// Geometry of the grouped GEMM kernels' output tile.
struct grouped_tile {
  static constexpr int rows = 64;     // of C: a row tile of a group (gemm_grouped), of m (reduce)
  static constexpr int cols = 128;    // of C
  static constexpr int depth = 16;    // k (or reduced rows) per shared-memory slice
  static constexpr int thread_rows = 4, thread_cols = 8;
  static constexpr int threads_x = cols / thread_cols;            // 16
  static constexpr int threads = rows / thread_rows * threads_x;  // 256
  static constexpr int pad = 4;  // spreads transposed stores over banks; rows stay 16-byte aligned
  /// Blocks per SM the register budget must allow: two for float accumulation
  /// (≤ 128 registers: ptxas -v, CUDA 13, sm_90, shows no spills in
  /// gemm_grouped_kernel and ~40 bytes in the reduce, against 1 block/SM at
  /// ~170 registers without the bound), one for double (64 registers of accumulators).
  template <class T>
  static constexpr int min_blocks = sizeof(accumulate_t<T>) == 4 ? 2 : 1;

  /// Column within the tile of a thread's j-th output: runs of 4 columns, a
  /// half tile apart, so the 16 x-neighbours of a warp read 64 consecutive
  /// values per run (conflict-free vector loads from shared memory).
  __device__ static int col(int tx, int j) { return j / 4 * (cols / (thread_cols / 4)) + tx * 4 + j % 4; }

  static_assert(thread_cols % 4 == 0 && rows % thread_rows == 0 && cols % thread_cols == 0);
  static_assert(depth * rows % threads == 0 && depth * cols % threads == 0);
};

/// One k slice of both operands: a[kk][i] multiplies b[kk][j] into C(i, j).
template <class A>
struct grouped_slice {
  A a[grouped_tile::depth][grouped_tile::rows + grouped_tile::pad];
  A b[grouped_tile::depth][grouped_tile::cols + grouped_tile::pad];
};

/// dst[kk][j] = get(kk, j) over the (depth, Width) slice. DepthFastest: the
/// source is contiguous along kk, so neighbouring threads take neighbouring
/// kk; otherwise along j. Either way a warp reads contiguous memory.
template <int Width, bool DepthFastest, class A, class Get>
__device__ inline void fill_slice(A (&dst)[grouped_tile::depth][Width + grouped_tile::pad], Get get) {
  constexpr int depth = grouped_tile::depth, per_thread = depth * Width / grouped_tile::threads;
#pragma unroll
  for (int p = 0; p < per_thread; ++p) {
    const int e = p * grouped_tile::threads + static_cast<int>(threadIdx.x);
    const int kk = DepthFastest ? e % depth : e / Width;
    const int j = DepthFastest ? e / depth : e % Width;
    dst[kk][j] = get(kk, j);
  }
}

/// acc += this slice's contribution to the thread's outputs.
template <class A>
__device__ inline void multiply_slice(const grouped_slice<A>& s, A (&acc)[grouped_tile::thread_rows][grouped_tile::thread_cols],
                                      int tx, int ty) {
  using tile = grouped_tile;
#pragma unroll
  for (int kk = 0; kk < tile::depth; ++kk) {
    A x[tile::thread_rows], y[tile::thread_cols];
#pragma unroll
    for (int i = 0; i < tile::thread_rows; ++i) x[i] = s.a[kk][ty * tile::thread_rows + i];
#pragma unroll
    for (int j = 0; j < tile::thread_cols; ++j) y[j] = s.b[kk][tile::col(tx, j)];
#pragma unroll
    for (int i = 0; i < tile::thread_rows; ++i)
#pragma unroll
      for (int j = 0; j < tile::thread_cols; ++j) acc[i][j] += x[i] * y[j];
  }
}

/// C(r, col) = alpha · acc + beta · C(r, col) for the thread's outputs inside
/// rows [row0, row_end) and columns [col0, n); C is not read when beta is 0
/// (BLAS semantics: whatever is there, NaN included, is overwritten).
template <class T, class A>
__device__ inline void store_tile(const A (&acc)[grouped_tile::thread_rows][grouped_tile::thread_cols], T* c,
                                  std::size_t ldc, std::int64_t row0, std::int64_t row_end, std::size_t col0,
                                  std::size_t n, A alpha, A beta, int tx, int ty) {
  using tile = grouped_tile;
#pragma unroll
  for (int i = 0; i < tile::thread_rows; ++i) {
    const std::int64_t r = row0 + ty * tile::thread_rows + i;
    if (r >= row_end) break;
#pragma unroll
    for (int j = 0; j < tile::thread_cols; ++j) {
      const std::size_t col = col0 + static_cast<std::size_t>(tile::col(tx, j));
      if (col >= n) continue;
      T& out = c[static_cast<std::size_t>(r) * ldc + col];
      A v = alpha * acc[i][j];
      if (beta != A(0)) v += beta * static_cast<A>(out);
      out = T(v);
    }
  }
}

/// C_g = alpha · A_g · op(W_g) + beta · C_g for every row tile of every group;
/// persistent over linear tile ids (row tile major, so consecutive blocks
/// share A rows and sweep W_g's columns).
template <class T, bool TransW>
__global__ void __launch_bounds__(grouped_tile::threads, grouped_tile::min_blocks<T>)
    gemm_grouped_kernel(std::size_t groups, const index_t* offsets, std::size_t k, std::size_t n,
                        accumulate_t<T> alpha, const T* a, const T* w, std::size_t stride_w, accumulate_t<T> beta,
                        T* c) {
  using A = accumulate_t<T>;
  using tile = grouped_tile;
  __shared__ grouped_slice<A> s;
  const int tx = static_cast<int>(threadIdx.x) % tile::threads_x, ty = static_cast<int>(threadIdx.x) / tile::threads_x;
  const auto col_tiles = static_cast<std::int64_t>((n + tile::cols - 1) / tile::cols);
  const std::int64_t tiles = row_tile_count(offsets, groups, tile::rows) * col_tiles;
  for (std::int64_t u = blockIdx.x; u < tiles; u += gridDim.x) {
    const row_tile rt = find_row_tile(offsets, groups, tile::rows, u / col_tiles);
    if (rt.begin == rt.end) continue;  // the whole block agrees: same inputs
    const auto col0 = static_cast<std::size_t>(u % col_tiles) * tile::cols;
    const int rows = static_cast<int>(rt.end - rt.begin);
    const int cols = static_cast<int>(std::min<std::size_t>(tile::cols, n - col0));
    const T* a_tile = a + static_cast<std::size_t>(rt.begin) * k;
    const T* w_tile = w + static_cast<std::size_t>(rt.group) * stride_w + (TransW ? col0 * k : col0);
    A acc[tile::thread_rows][tile::thread_cols] = {};
    for (std::size_t k0 = 0; k0 < k; k0 += tile::depth) {
      const int depth = static_cast<int>(std::min<std::size_t>(tile::depth, k - k0));
      fill_slice<tile::rows, true>(s.a, [&](int kk, int i) {  // A_g rows: contiguous along k
        return i < rows && kk < depth ? static_cast<A>(a_tile[static_cast<std::size_t>(i) * k + k0 + kk]) : A(0);
      });
      fill_slice<tile::cols, TransW>(s.b, [&](int kk, int j) {  // W_g (k, n), or (n, k) when TransW
        if (j >= cols || kk >= depth) return A(0);
        const std::size_t p = k0 + static_cast<std::size_t>(kk);
        return static_cast<A>(TransW ? w_tile[static_cast<std::size_t>(j) * k + p] : w_tile[p * n + j]);
      });
      __syncthreads();
      multiply_slice(s, acc, tx, ty);
      __syncthreads();  // the slice is overwritten next
    }
    store_tile(acc, c, n, rt.begin, rt.end, col0, n, alpha, beta, tx, ty);
  }
}

/// C_g = alpha · A_gᵀ · D_g + beta · C_g: block (m tile, n tile) of every
/// group in its grid row, summing over the group's rows in slices.
template <class T>
__global__ void __launch_bounds__(grouped_tile::threads, grouped_tile::min_blocks<T>)
    gemm_grouped_reduce_kernel(std::size_t groups, const index_t* offsets, std::size_t m, std::size_t n,
                               accumulate_t<T> alpha, const T* a, const T* d, accumulate_t<T> beta, T* c,
                               std::size_t stride_c) {
  using A = accumulate_t<T>;
  using tile = grouped_tile;
  __shared__ grouped_slice<A> s;
  const int tx = static_cast<int>(threadIdx.x) % tile::threads_x, ty = static_cast<int>(threadIdx.x) / tile::threads_x;
  const std::size_t col_tiles = (n + tile::cols - 1) / tile::cols;
  const std::size_t row0 = blockIdx.x / col_tiles * tile::rows, col0 = blockIdx.x % col_tiles * tile::cols;
  const int rows = static_cast<int>(std::min<std::size_t>(tile::rows, m - row0));
  const int cols = static_cast<int>(std::min<std::size_t>(tile::cols, n - col0));
  for (std::size_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const std::int64_t begin = offsets[g], end = offsets[g + 1];
    A acc[tile::thread_rows][tile::thread_cols] = {};
    const T* a_slice = a + static_cast<std::size_t>(begin) * m + row0;  // A rows (rows, m)
    const T* d_slice = d + static_cast<std::size_t>(begin) * n + col0;  // D rows (rows, n)
    for (std::int64_t left = end - begin; left > 0; left -= tile::depth) {
      const int depth = static_cast<int>(std::min<std::int64_t>(tile::depth, left));
      fill_slice<tile::rows, false>(s.a, [&](int kk, int i) {
        return kk < depth && i < rows ? static_cast<A>(a_slice[static_cast<std::size_t>(kk) * m + i]) : A(0);
      });
      fill_slice<tile::cols, false>(s.b, [&](int kk, int j) {
        return kk < depth && j < cols ? static_cast<A>(d_slice[static_cast<std::size_t>(kk) * n + j]) : A(0);
      });
      __syncthreads();
      multiply_slice(s, acc, tx, ty);
      __syncthreads();
      a_slice += tile::depth * m;
      d_slice += tile::depth * n;
    }
    // An empty group leaves acc at 0: C_g = beta · C_g, zeros for beta = 0, as on the CPU.
    store_tile(acc, c + g * stride_c, n, static_cast<std::int64_t>(row0), static_cast<std::int64_t>(row0) + rows, col0, n,
               alpha, beta, tx, ty);
  }
}

/// Block shape of grouped_bias_activation_backward: 32 columns (one coalesced
/// warp row) by 8 row slices.
inline constexpr int bias_backward_cols = 32, bias_backward_slices = 8;

/// dz = df(h + b_g, dy) for the group's rows; db_g = column sums of dz, each
/// slice summing rows slice, slice + 8, ... and the slices added in order.
template <class T, class DF>
__global__ void __launch_bounds__(bias_backward_cols* bias_backward_slices)
    grouped_bias_activation_backward_kernel(std::size_t groups, const index_t* offsets, std::size_t n, const T* h,
                                            const T* b, const T* dy, DF df, T* dz, T* db) {
  using A = accumulate_t<T>;
  __shared__ A partial[bias_backward_slices][bias_backward_cols];
  const std::size_t col = static_cast<std::size_t>(blockIdx.x) * bias_backward_cols + threadIdx.x;
  for (std::size_t g = blockIdx.y; g < groups; g += gridDim.y) {
    A sum = A(0);
    if (col < n) {
      const A bias = static_cast<A>(b[g * n + col]);
      for (std::int64_t r = offsets[g] + threadIdx.y; r < offsets[g + 1]; r += bias_backward_slices) {
        const std::size_t i = static_cast<std::size_t>(r) * n + col;
        const T z = T(df(static_cast<A>(h[i]) + bias, static_cast<A>(dy[i])));
        dz[i] = z;
        sum += static_cast<A>(z);  // the stored value, as the CPU sums it
      }
    }
    if (db) {  // a kernel argument: the same for the whole block
      partial[threadIdx.y][threadIdx.x] = sum;
      __syncthreads();
      if (threadIdx.y == 0 && col < n) {
        A total = partial[0][threadIdx.x];
        for (int slice = 1; slice < bias_backward_slices; ++slice) total += partial[slice][threadIdx.x];
        db[g * n + col] = T(total);
      }
      __syncthreads();  // partial is reused for the next group
    }
  }
}

/// Blocks of `kernel` resident on the current device at once (SMs × blocks
/// per SM): the grid of a persistent kernel. Host-side queries only, cached
/// per host thread, device and kernel.
template <class Kernel>
unsigned resident_blocks(Kernel* kernel, int threads, const char* op) {
  thread_local std::map<std::pair<int, std::uintptr_t>, unsigned> cache;
  const int device = current_device(op);
  const std::pair<int, std::uintptr_t> key{device, reinterpret_cast<std::uintptr_t>(kernel)};
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  int sms = 0, per_sm = 0;
  MOEKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), op);
  MOEKIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0), op);
  const auto blocks = static_cast<unsigned>(std::max(1, sms) * std::max(1, per_sm));
  cache.emplace(key, blocks);
  return blocks;
}

/// A grid's x extent, or a value_error naming `op` past CUDA's limit.
inline unsigned grid_x(const char* op, std::size_t blocks) {
  if (blocks > static_cast<std::size_t>(INT_MAX))
    throw value_error(std::string(op) + ": " + std::to_string(blocks) + " blocks exceed the grid limit");
  return static_cast<unsigned>(blocks);
}

/// Groups per grid row (gridDim.y ≤ 65535; kernels loop over the rest).
inline unsigned grid_groups(std::size_t groups) { return static_cast<unsigned>(std::min<std::size_t>(groups, 65535)); }

struct cuda_gemm_grouped {
  /// For every group g: C_g = alpha · A_g · op(W_g) + beta · C_g, where A_g and
  /// C_g are the g-th row segments of A (rows, k) and C (rows, n), and W_g is
  /// W + g·stride_w, stored (k, n), or (n, k) when trans_w. All pointers,
  /// offsets included, are device memory.
  template <class T>
    requires(real<T> || storage_16<T>)
  static void gemm_grouped(bool trans_w, std::size_t groups, const index_t* offsets, std::size_t k, std::size_t n,
                           T alpha, const T* a, const T* w, std::size_t stride_w, T beta, T* c) {
    if (groups == 0 || n == 0) return;
    using A = accumulate_t<T>;
    const auto kernel = trans_w ? gemm_grouped_kernel<T, true> : gemm_grouped_kernel<T, false>;
    const unsigned blocks = resident_blocks(kernel, grouped_tile::threads, "gemm_grouped");
    kernel<<<blocks, grouped_tile::threads, 0, current_stream()>>>(groups, offsets, k, n, static_cast<A>(alpha), a, w,
                                                                   stride_w, static_cast<A>(beta), c);
    check_launch("gemm_grouped", "gemm_grouped_kernel");
  }

  /// For every group g: C_g = alpha · A_gᵀ · D_g + beta · C_g, with A_g the
  /// g-th row segment of A (rows, m), D_g that of D (rows, n), and C_g the g-th
  /// (m, n) matrix of the stacked C (stride_c apart). An empty group gets
  /// beta · C_g (zeros for beta = 0).
  template <class T>
    requires(real<T> || storage_16<T>)
  static void gemm_grouped_reduce(std::size_t groups, const index_t* offsets, std::size_t m, std::size_t n, T alpha,
                                  const T* a, const T* d, T beta, T* c, std::size_t stride_c) {
    if (groups == 0 || m == 0 || n == 0) return;
    using A = accumulate_t<T>;
    const std::size_t tiles = (m + grouped_tile::rows - 1) / grouped_tile::rows *
                              ((n + grouped_tile::cols - 1) / grouped_tile::cols);
    const dim3 grid(grid_x("gemm_grouped_reduce", tiles), grid_groups(groups));
    gemm_grouped_reduce_kernel<T><<<grid, grouped_tile::threads, 0, current_stream()>>>(
        groups, offsets, m, n, static_cast<A>(alpha), a, d, static_cast<A>(beta), c, stride_c);
    check_launch("gemm_grouped_reduce", "gemm_grouped_reduce_kernel");
  }

  /// For each row r of group g: dz[r, c] = df(h[r, c] + b[g, c], dy[r, c]);
  /// and, unless db is null, db[g, c] = the sum of dz[r, c] over g's rows (a
  /// fixed summation order: the same result on every run).
  template <class T, class DF>
  static void grouped_bias_activation_backward(std::size_t groups, const index_t* offsets, std::size_t n, const T* h,
                                               const T* b, const T* dy, DF df, T* dz, T* db) {
    if (groups == 0 || n == 0) return;
    const dim3 block(bias_backward_cols, bias_backward_slices);
    const dim3 grid(grid_x("grouped_bias_activation_backward", (n + bias_backward_cols - 1) / bias_backward_cols),
                    grid_groups(groups));
    grouped_bias_activation_backward_kernel<T, DF><<<grid, block, 0, current_stream()>>>(groups, offsets, n, h, b, dy,
                                                                                         df, dz, db);
    check_launch("grouped_bias_activation_backward", "grouped_bias_activation_backward_kernel");
  }
};

}  // namespace moekit::detail
