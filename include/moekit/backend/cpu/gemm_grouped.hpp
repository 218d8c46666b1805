// moekit/backend/cpu/gemm_grouped.hpp — grouped GEMMs over contiguous row
// segments: the expert GEMMs of an MoE layer. Rows [offsets[g], offsets[g+1])
// of A belong to group g, whose weight is the g-th matrix of a stacked tensor.
//
// float runs on moekit's own micro-kernels (microkernel.hpp). The work is cut
// into pieces of (group, block of 256 columns, rows); the thread that takes a
// piece packs that slab of op(W_g) into panels and runs the piece's row
// blocks over it while it sits in the thread's L2. On several threads each
// owns a contiguous range of rows in every GEMM (owner_split), so that the
// rows one GEMM writes are read by the same thread in the next; weight
// gradients too uneven for that are taken dynamically, largest first. Below
// fork_flops one thread does it all. A group of at most small_rows rows skips
// the packing (it would cost as much as its product) and runs as row-by-row
// dot products/axpys. Each element of C is summed in one fixed order: results
// do not depend on the thread count.
//
// double (gradient checks) goes through BLAS: many small groups run one per
// thread with single-threaded BLAS; few large groups run one after another,
// each GEMM with all BLAS threads. Never both at once (BLAS threads inside
// parallel regions measured up to 2× slower here).
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "../../core/config.hpp"
#include "../../core/dtype.hpp"
#include "gemm.hpp"
#include "microkernel.hpp"
#include "parallel.hpp"

namespace moekit::detail {

struct cpu_gemm_grouped {
  /// float: gemm_grouped below, on moekit's micro-kernels.
  static void gemm_grouped(bool trans_w, std::size_t groups, const index_t* offsets, std::size_t k, std::size_t n,
                           float alpha, const float* a, const float* w, std::size_t stride_w, float beta, float* c) {
    gemm_grouped_epilogue(trans_w, groups, offsets, k, n, alpha, a, w, stride_w, beta, c, microkernel::no_epilogue{});
  }

  /// gemm_grouped in float, then epi(c_tile, ldc, row, col, rows, cols) on
  /// every finished tile of C while it is in cache (row: of C, col: of n).
  template <class Epilogue>
  static void gemm_grouped_epilogue(bool trans_w, std::size_t groups, const index_t* offsets, std::size_t k,
                                    std::size_t n, float alpha, const float* a, const float* w, std::size_t stride_w,
                                    float beta, float* c, const Epilogue& epi) {
    const std::size_t ldw = trans_w ? k : n;
    packed_product(groups, offsets, k, n, /*reduce=*/false, epi, [&](std::size_t g, std::size_t begin) {
      return grouped_operands{{a + begin * k, k, 1}, w + g * stride_w, ldw, trans_w, c + begin * n, n};
    }, alpha, beta);
  }

  /// float: with v = x·W_g (+ b_g) per group, y = f(v) and z = keep(v), the
  /// bias, f and keep applied to each tile of the product while it is in
  /// cache. keep says what the backward needs: v itself (fn::identity) or
  /// f'(v) (an activation's slope, computed next to f in one loop, which
  /// shares their common terms). x (rows, k), w (G, k, n) stride k·n, b (G, n)
  /// or null; z and y (rows, n).
  template <class F, class Keep>
  static void gemm_grouped_activation(std::size_t groups, const index_t* offsets, std::size_t k, std::size_t n,
                                      const float* x, const float* w, const float* b, F f, Keep keep, float* z,
                                      float* y) {
    const bias_activation<F, Keep> epi{offsets, groups, n, b, z, f, keep};
    gemm_grouped_epilogue(false, groups, offsets, k, n, 1.0f, x, w, k * n, 0.0f, y, epi);
  }

  /// float: dz = df(z, dy·op(W_g)) per group, df applied to each tile of the
  /// product while it is in cache: the gradient through an activation f whose
  /// output fed the grouped GEMM with weights w (no separate pass over dz).
  /// dy (rows, k), w (G, ...) stride k·n read as op(W_g) (k, n), z and dz (rows, n).
  template <class DF>
  static void gemm_grouped_activation_backward(bool trans_w, std::size_t groups, const index_t* offsets,
                                               std::size_t k, std::size_t n, const float* dy, const float* w,
                                               const float* z, DF df, float* dz) {
    gemm_grouped_epilogue(trans_w, groups, offsets, k, n, 1.0f, dy, w, k * n, 0.0f, dz,
                          activation_backward<DF>{z, n, df});
  }

  /// float: gemm_grouped_reduce below (C_g = alpha · A_gᵀ · D_g + beta · C_g),
  /// on moekit's micro-kernels: D_g's rows are packed, A_gᵀ is read in place.
  static void gemm_grouped_reduce(std::size_t groups, const index_t* offsets, std::size_t m, std::size_t n, float alpha,
                                  const float* a, const float* d, float beta, float* c, std::size_t stride_c) {
    packed_product(groups, offsets, m, n, /*reduce=*/true, microkernel::no_epilogue{},
                   [&](std::size_t g, std::size_t begin) {
                     return grouped_operands{{a + begin * m, 1, m}, d + begin * n, n, false, c + g * stride_c, n};
                   }, alpha, beta);
  }

  /// For every group g: C_g = alpha · A_g · op(W_g) + beta · C_g, where A_g and
  /// C_g are the g-th row segments of A (rows, k) and C (rows, n), and W_g is
  /// W + g·stride_w, stored (k, n), or (n, k) when trans_w.
  template <real T>
  static void gemm_grouped(bool trans_w, std::size_t groups, const index_t* offsets, std::size_t k, std::size_t n,
                           T alpha, const T* a, const T* w, std::size_t stride_w, T beta, T* c) {
    for_each_group(groups, offsets, k * n, [&](std::size_t g, std::size_t begin, std::size_t rows) {
      cpu_gemm::gemm(false, trans_w, rows, n, k, alpha, a + begin * k, k, w + g * stride_w, trans_w ? k : n, beta,
                    c + begin * n, n);
    });
  }

  /// For every group g: C_g = alpha · A_gᵀ · D_g + beta · C_g, with A_g the
  /// g-th row segment of A (rows, m), D_g that of D (rows, n), and C_g the g-th
  /// (m, n) matrix of the stacked C (stride_c apart). The weight gradient of
  /// gemm_grouped; an empty group gets beta · C_g (zeros for beta = 0).
  template <real T>
  static void gemm_grouped_reduce(std::size_t groups, const index_t* offsets, std::size_t m, std::size_t n, T alpha,
                                  const T* a, const T* d, T beta, T* c, std::size_t stride_c) {
    for_each_group(groups, offsets, m * n, [&](std::size_t g, std::size_t begin, std::size_t rows) {
      T* cg = c + g * stride_c;
      if (rows == 0) {
        for (std::size_t i = 0; i < m * n; ++i) cg[i] = beta == T(0) ? T(0) : beta * cg[i];
        return;
      }
      cpu_gemm::gemm(true, false, m, n, rows, alpha, a + begin * m, m, d + begin * n, n, beta, cg, n);
    }, /*visit_empty=*/true);
  }

  /// The backward of a per-group bias followed by an activation, the
  /// epilogue of a grouped GEMM, in one pass over h and dy: for each row r of
  /// group g, dz[r, c] = df(h[r, c] + b[g, c], dy[r, c]); and, unless db is
  /// null, db[g, c] = the sum of dz[r, c] over g's rows in row order. Threads
  /// split the columns, so the sums do not depend on the thread count.
  template <class T, class DF>
  static void grouped_bias_activation_backward(std::size_t groups, const index_t* offsets, std::size_t n, const T* h,
                                               const T* b, const T* dy, DF df, T* dz, T* db) {
    const auto total_rows = static_cast<std::size_t>(offsets[groups] - offsets[0]);
    parallel_for(n, total_rows + groups, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t g = 0; g < groups; ++g) {
        const T* bg = b + g * n;
        T* dbg = db ? db + g * n : nullptr;
        if (dbg)
          for (std::size_t c = lo; c < hi; ++c) dbg[c] = T(0);
        for (auto r = static_cast<std::size_t>(offsets[g]); r < static_cast<std::size_t>(offsets[g + 1]); ++r) {
          const T* hr = h + r * n;
          const T* dyr = dy + r * n;
          T* dzr = dz + r * n;
#pragma omp simd
          for (std::size_t c = lo; c < hi; ++c) dzr[c] = df(hr[c] + bg[c], dyr[c]);
          if (dbg) {
#pragma omp simd
            for (std::size_t c = lo; c < hi; ++c) dbg[c] += dzr[c];
          }
        }
      }
    });
  }

  /// Each thread's pieces when threads own rows: thread t computes rows
  /// [R·t/T, R·(t+1)/T) of every row-wise product (all its column slabs),
  /// and the weight gradients of the groups whose middle row it owns. Every
  /// grouped GEMM of a layer step then reads the rows (X, H, dH) that the same
  /// thread wrote: on the 2-vCPU build VM a line the other core last wrote
  /// costs a ~500 ns round trip, and under the dynamic schedule (any thread,
  /// any piece) a GEMM's rows were as likely as not the other core's. Empty
  /// (use the dynamic schedule)
  /// when the weight gradients split so unevenly (a skewed router) that one
  /// thread would get over 10 % more than its share.
  /// Piece: {g, i0, i1, j0, flops, small} as packed_product makes them
  /// (public for the tests).
  template <class Piece>
  static std::vector<std::vector<Piece>> owner_split(const std::vector<Piece>& pieces, std::size_t groups,
                                                     const index_t* offsets, bool reduce, std::size_t threads) {
    const auto first = static_cast<std::size_t>(offsets[0]), rows = static_cast<std::size_t>(offsets[groups]) - first;
    auto owner = [&](std::size_t row) {
      return std::min(threads - 1, (row - first) * threads / std::max<std::size_t>(rows, 1));
    };
    auto start = [&](std::size_t t) { return first + rows * t / threads; };
    std::vector<std::vector<Piece>> out(threads);
    std::vector<std::size_t> load(threads, 0);
    std::size_t total = 0;
    for (const Piece& p : pieces) {
      const auto b = static_cast<std::size_t>(offsets[p.g]), e = static_cast<std::size_t>(offsets[p.g + 1]);
      total += p.flops;
      if (reduce || p.small) {  // whole: to the owner of its middle row
        const std::size_t t = owner((b + e - 1) / 2);
        out[t].push_back(p);
        load[t] += p.flops;
        continue;
      }
      for (std::size_t t = owner(b); t < threads && start(t) < e; ++t) {  // its rows in each owner's range
        Piece q = p;
        q.i0 = std::max(b, start(t)) - b;
        q.i1 = std::min(e, start(t + 1)) - b;
        if (q.i0 >= q.i1) continue;
        q.flops = p.flops / (e - b) * (q.i1 - q.i0);
        out[t].push_back(q);
        load[t] += q.flops;
      }
    }
    const std::size_t most = *std::max_element(load.begin(), load.end());
    if (most * threads * 10 > total * 11) return {};
    return out;
  }

 private:
  /// One group's product C_g = alpha · A · op(B) + beta · C_g, as seen by packed_product.
  struct grouped_operands {
    microkernel::strided a;  // (rows, k) in place
    const float* b;          // op(B) (k, n): stored (k, n) with row stride ldb, or (n, k) when trans
    std::size_t ldb;
    bool trans;
    float* c;  // (rows, n), row stride ldc
    std::size_t ldc;
  };

  /// Groups this small skip packing (small_rows_product).
  static constexpr std::size_t small_rows = 4;
  /// Products below this many flops run on the calling thread: waking a
  /// second one costs more than it saves.
  static constexpr std::size_t fork_flops = std::size_t{16} << 20;
  /// Columns of C per piece of work (a multiple of every panel width).
  static constexpr std::size_t block_cols = 256;

  /// The grouped products of gemm_grouped_epilogue (reduce = false: group g
  /// has rows [offsets[g], offsets[g+1]) of A and C, op(B) is (k, n)) and
  /// gemm_grouped_reduce (reduce = true: C_g is (k, n) with k = m, the
  /// group's rows are the depth, op(B) = D_g). operands(g, begin) gives a
  /// group's operands.
  ///
  /// The work is a list of pieces, each a block of block_cols columns of one
  /// group's C over a range of its rows. A packed group's piece first packs
  /// its own columns of op(B) (a slab, at most depth x block_cols floats)
  /// into the running thread's buffer, where it stays in L2 for every row
  /// block of the piece: no pass packs all weights before the products start
  /// (a memory-bound pass a second core barely speeds up), and nothing
  /// packed goes back to memory. On several threads, owner_split gives each
  /// thread its rows' pieces; where it declines, the rows of a group are split
  /// into several pieces only when there are too few pieces to keep every
  /// thread busy (each then packs the same slab), and threads take pieces
  /// largest first.
  template <class Epilogue, class Operands>
  static void packed_product(std::size_t groups, const index_t* offsets, std::size_t k, std::size_t n, bool reduce,
                             const Epilogue& epi, Operands operands, float alpha, float beta) {
    const microkernel::isa isa = microkernel::active_isa();
    const std::size_t mb = microkernel::block_rows;
    struct piece {
      std::size_t g, i0, i1, j0, flops;
      bool small;  // a few-row group: one piece, unpacked
    };
    std::vector<piece> pieces;
    std::size_t flops = 0;
    for (std::size_t g = 0; g < groups; ++g) {
      const auto rows = static_cast<std::size_t>(offsets[g + 1] - offsets[g]);
      const std::size_t out_rows = reduce ? k : rows, depth = reduce ? rows : k;
      if (out_rows == 0) continue;  // an empty group's C is empty (for reduce, C_g = beta · C_g takes the small path)
      flops += 2 * out_rows * depth * n;
      if (rows <= small_rows) {
        pieces.push_back({g, 0, out_rows, 0, 2 * out_rows * depth * n, true});
        continue;
      }
      for (std::size_t j = 0; j < n; j += block_cols)
        pieces.push_back({g, 0, out_rows, j, 2 * out_rows * depth * std::min(block_cols, n - j), false});
    }
    const int threads = flops >= fork_flops && !omp_in_parallel_region() ? num_threads() : 1;
    std::vector<std::vector<piece>> owned;  // per thread, when each owns its rows (owner_split)
    if (threads > 1) owned = owner_split(pieces, groups, offsets, reduce, static_cast<std::size_t>(threads));
    if (threads > 1 && owned.empty() && !pieces.empty() &&
        pieces.size() < min_pieces_per_thread * static_cast<std::size_t>(threads))
      split_rows(pieces, min_pieces_per_thread * static_cast<std::size_t>(threads), mb);
    if (threads > 1 && owned.empty())  // largest first, so that no thread is left with a big piece at the end
      std::stable_sort(pieces.begin(), pieces.end(), [](const piece& x, const piece& y) { return x.flops > y.flops; });

    auto run_piece = [&](const piece& p) {
      const auto begin = static_cast<std::size_t>(offsets[p.g]);
      const auto rows = static_cast<std::size_t>(offsets[p.g + 1]) - begin;
      const grouped_operands o = operands(p.g, begin);
      const std::size_t depth = reduce ? rows : k, first_row = reduce ? 0 : begin;
      if (p.small) return small_rows_product(p.i1, n, depth, alpha, o, beta, epi, first_row);
      // Columns [j0, j0 + cols) of op(B): stored (k, n) they start j0 floats into each row; (n, k), j0 rows down.
      const std::size_t cols = std::min(block_cols, n - p.j0);
      std::vector<float>& slab = pack_buffer();
      if (slab.size() < microkernel::packed_size(isa, depth, cols)) slab.resize(microkernel::packed_size(isa, depth, cols));
      microkernel::pack(isa, o.trans, depth, cols, o.trans ? o.b + p.j0 * o.ldb : o.b + p.j0, o.ldb, slab.data());
      const microkernel::panels b = microkernel::packed_panels(isa, slab.data(), depth);
      for (std::size_t i = p.i0; i < p.i1; i += mb)  // row block after row block over the slab in L2
        microkernel::gemm_block(isa, i, std::min(p.i1, i + mb), 0, cols, cols, depth, alpha, o.a, b, beta,
                                o.c + p.j0, o.ldc, offset_epilogue<Epilogue>{epi, first_row, p.j0});
    };
    if (threads == 1) {
      for (const piece& p : pieces) run_piece(p);
      return;
    }
    if (!owned.empty()) {
#pragma omp parallel num_threads(threads)
      {  // a smaller team than asked for (OMP_DYNAMIC, a thread limit) takes the lists in turn
        for (std::size_t t = thread_num(); t < owned.size(); t += team_size())
          for (const piece& p : owned[t]) run_piece(p);
      }
      return;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::size_t i = 0; i < pieces.size(); ++i) run_piece(pieces[i]);
  }

  /// Pieces per thread below which a packed group's rows are split.
  static constexpr std::size_t min_pieces_per_thread = 8;

  /// Splits the pieces of packed groups over their rows, in whole row
  /// blocks of mb, until there are about `want` pieces in all.
  template <class Piece>
  static void split_rows(std::vector<Piece>& pieces, std::size_t want, std::size_t mb) {
    const std::size_t times = (want + pieces.size() - 1) / pieces.size();
    std::vector<Piece> out;
    out.reserve(pieces.size() * times);
    for (const Piece& p : pieces) {
      const std::size_t blocks = (p.i1 - p.i0 + mb - 1) / mb;
      if (p.small || blocks < 2) {
        out.push_back(p);
        continue;
      }
      const std::size_t parts = std::min(times, blocks);
      for (std::size_t s = 0; s < parts; ++s) {
        Piece q = p;
        q.i0 = p.i0 + blocks * s / parts * mb;
        q.i1 = std::min(p.i1, p.i0 + blocks * (s + 1) / parts * mb);
        q.flops = p.flops / (p.i1 - p.i0) * (q.i1 - q.i0);
        out.push_back(q);
      }
    }
    pieces = std::move(out);
  }

  /// The calling thread's packed panels, kept between calls (grows to the largest).
  static std::vector<float>& pack_buffer() {
    thread_local std::vector<float> buffer;
    return buffer;
  }

  static bool omp_in_parallel_region() noexcept {
#if defined(_OPENMP)
    return omp_in_parallel() != 0;
#else
    return false;
#endif
  }

  /// The epilogue of gemm_grouped_activation: v = c + b[group], c = f(v),
  /// z = keep(v).
  template <class F, class Keep>
  struct bias_activation {
    const index_t* offsets;
    std::size_t groups, n;
    const float* b;  // (G, n) or null
    float* z;        // (rows, n)
    F f;
    Keep keep;
    void operator()(float* c, std::size_t ldc, std::size_t row, std::size_t col, std::size_t rows,
                    std::size_t cols) const {
      const auto g = static_cast<std::size_t>(std::upper_bound(offsets, offsets + groups + 1,
                                                               static_cast<index_t>(row)) - offsets) - 1;
      for (std::size_t r = 0; r < rows; ++r) {
        float* cr = c + r * ldc;
        float* zr = z + (row + r) * n + col;
        const auto put = [&](std::size_t j, float v) {
          cr[j] = f(v);
          zr[j] = keep(v);
        };
        // One loop per case, not one with `b ? c + b : c` inside: GCC
        // vectorises that into masked loads from b that, with b null, touch
        // page 0 with every lane masked off, and this CPU (Zen 5) takes a slow
        // assist for each (C-T's forward 4x slower).
        if (b != nullptr) {
          const float* br = b + g * n + col;
#pragma omp simd
          for (std::size_t j = 0; j < cols; ++j) put(j, cr[j] + br[j]);
        } else {
#pragma omp simd
          for (std::size_t j = 0; j < cols; ++j) put(j, cr[j]);
        }
      }
    }
  };

  /// The epilogue of gemm_grouped_activation_backward: c = df(z, c).
  template <class DF>
  struct activation_backward {
    const float* z;  // (rows, n)
    std::size_t n;
    DF df;
    void operator()(float* c, std::size_t ldc, std::size_t row, std::size_t col, std::size_t rows,
                    std::size_t cols) const {
      for (std::size_t r = 0; r < rows; ++r) {
        float* cr = c + r * ldc;
        const float* zr = z + (row + r) * n + col;
#pragma omp simd
        for (std::size_t j = 0; j < cols; ++j) cr[j] = df(zr[j], cr[j]);
      }
    }
  };

  /// An epilogue told rows relative to a group and columns relative to a
  /// slab, passed rows of all of C and columns of all of n.
  template <class Epilogue>
  struct offset_epilogue {
    const Epilogue& epi;
    std::size_t first_row, first_col;
    void operator()(float* c, std::size_t ldc, std::size_t row, std::size_t col, std::size_t rows,
                    std::size_t cols) const {
      epi(c, ldc, first_row + row, first_col + col, rows, cols);
    }
  };

  /// C(rows, n) = alpha · A(rows, depth) · op(B) + beta · C without packing:
  /// row by row, op(B) streamed once per row (a few rows: packing would
  /// cost as much). Then epi over the rows (first_row: of all of C).
  template <class Epilogue>
  static void small_rows_product(std::size_t rows, std::size_t n, std::size_t depth, float alpha,
                                 const grouped_operands& o, float beta, const Epilogue& epi, std::size_t first_row) {
    for (std::size_t i = 0; i < rows; ++i) {
      float* ci = o.c + i * o.ldc;
      const float* ai = o.a.a + i * o.a.rs;
      if (o.trans) {  // B stored (n, depth): dot products
        for (std::size_t j = 0; j < n; ++j) {
          const float* bj = o.b + j * o.ldb;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (std::size_t p = 0; p < depth; ++p) s += ai[p * o.a.cs] * bj[p];
          ci[j] = alpha * s + (beta == 0.0f ? 0.0f : beta * ci[j]);
        }
      } else {  // B stored (depth, n): axpys
        for (std::size_t j = 0; j < n; ++j) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        for (std::size_t p = 0; p < depth; ++p) {
          const float s = alpha * ai[p * o.a.cs];
          const float* bp = o.b + p * o.ldb;
#pragma omp simd
          for (std::size_t j = 0; j < n; ++j) ci[j] += s * bp[j];
        }
      }
    }
    if (rows > 0) epi(o.c, o.ldc, first_row, 0, rows, n);
  }

  /// Calls f(group, first_row, rows) for each group, choosing between one
  /// group per thread and one multi-threaded GEMM at a time.
  template <class F>
  static void for_each_group(std::size_t groups, const index_t* offsets, std::size_t flops_per_row, F&& f,
                             bool visit_empty = false) {
    const std::size_t total_rows = static_cast<std::size_t>(offsets[groups] - offsets[0]);
    const int threads = num_threads();
    // A group is "large" when its GEMM alone keeps all BLAS threads busy.
    const bool spread = threads > 1 && groups > 1 &&
                        total_rows * flops_per_row / groups < std::size_t{256} * 256 * 256;
    auto one = [&](std::size_t g) {
      const auto begin = static_cast<std::size_t>(offsets[g]);
      const auto rows = static_cast<std::size_t>(offsets[g + 1] - offsets[g]);
      if (rows > 0 || visit_empty) f(g, begin, rows);
    };
    if (!spread) {
      for (std::size_t g = 0; g < groups; ++g) one(g);
      return;
    }
    blas_calls_in_parallel guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::size_t g = 0; g < groups; ++g) one(g);
  }
};

}  // namespace moekit::detail
