// moekit/tensor/ops/grouped.hpp — ops over row segments ("groups"): rows
// [offsets[g], offsets[g+1]) of a tensor belong to group g (an expert), whose
// parameters are the g-th slice of a stacked tensor (G, ...). The offsets live
// on the rows' backend: on a device they come from the routing and the host
// never reads them.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "../../backend/functors.hpp"
#include "../tensor.hpp"
#include "elementwise.hpp"
#include "fast_activation.hpp"

namespace moekit {

/// Group boundaries: (G + 1) non-decreasing row offsets from 0 to the row count, on backend B.
template <backend B = cpu>
using group_offsets = tensor<index_t, shape<dyn>, B>;
/// Group boundaries on the host.
using offsets_tensor = group_offsets<cpu>;

namespace detail {
/// Checks offsets against `groups` groups over `rows` rows; throws value_error
/// naming `op`. Their count is always checked, their values only where the
/// host can read them: device offsets come from moekit's own routing (an
/// exclusive scan of per-expert counts, so non-decreasing from 0 to the row
/// count by construction), and reading them here would wait for the device
/// in every grouped op.
template <class B>
void check_offsets(const char* op, const group_offsets<B>& offsets, std::size_t groups, std::size_t rows) {
  const std::string name(op);
  if (offsets.size() != groups + 1)
    throw value_error(name + ": " + std::to_string(offsets.size()) + " offsets for " + std::to_string(groups) +
                      " groups (need groups + 1)");
  if constexpr (B::host_accessible) {
    if (offsets[0] != 0 || static_cast<std::size_t>(offsets[groups]) != rows)
      throw value_error(name + ": offsets must run from 0 to the row count " + std::to_string(rows) + ", got " +
                        std::to_string(offsets[0]) + " .. " + std::to_string(offsets[groups]));
    for (std::size_t g = 0; g < groups; ++g)
      if (offsets[g + 1] < offsets[g])
        throw value_error(name + ": offsets decrease at group " + std::to_string(g));
  }
}
}  // namespace detail

/// (A, k) rows grouped by `offsets`, times the stacked w (G, k, n) — or
/// (G, n, k) read transposed when TransW — gives (A, n).
template <bool TransW = false, class T, class SX, class SW, class B>
auto grouped_matmul(const tensor<T, SX, B>& x, const tensor<T, SW, B>& w, const group_offsets<B>& offsets) {
  static_assert(SX::rank() == 2 && SW::rank() == 3, "grouped_matmul: x must be (rows, k) and w (groups, k, n)");
  constexpr std::size_t wk = TransW ? 2 : 1, wn = TransW ? 1 : 2;
  static_assert(inner_dims_match<SX::static_extent(1), SW::static_extent(wk)>::value,
                "grouped_matmul: inner dimensions differ");
  if (x.extent(1) != w.extent(wk))
    detail::shape_mismatch("grouped_matmul", x.shape().str(), " x ", w.shape().str(),
                           "inner dimensions " + std::to_string(x.extent(1)) + " != " + std::to_string(w.extent(wk)));
  const std::size_t groups = w.extent(0), k = x.extent(1), n = w.extent(wn);
  detail::check_offsets("grouped_matmul", offsets, groups, x.extent(0));
  using R = shape<SX::static_extent(0), SW::static_extent(wn)>;
  tensor<T, R, B> out(R::from_extents(std::array{x.extent(0), n}));
  kernels<B>::gemm_grouped(TransW, groups, offsets.data(), k, n, T(1), x.data(), w.data(), k * n, T(0), out.data());
  return out;
}

/// v = x·W_g (+ b_g) for the rows of each group g: returns {keep(v), f(v)}.
/// keep is what the backward needs: v (fn::identity, the default) or f'(v)
/// (fn::slope_of<DF>, which computes it next to f and shares their terms).
/// x (A, k), w (G, k, n), b (G, n) or null; both results (A, n). On the CPU in
/// float the bias, f and keep run in the GEMM's output pass, on each tile while
/// it is in cache; elsewhere grouped_matmul, then one pass for the bias and
/// map_pair for f and keep.
template <class F, class Keep = fn::identity, class T, class SX, class SW, class SB, class B>
auto grouped_matmul_activation(const tensor<T, SX, B>& x, const tensor<T, SW, B>& w, const tensor<T, SB, B>* b,
                               const group_offsets<B>& offsets, F f, Keep keep = {}) {
  static_assert(SX::rank() == 2 && SW::rank() == 3, "grouped_matmul_activation: x must be (rows, k) and w (groups, k, n)");
  using RS = shape<SX::static_extent(0), SW::static_extent(2)>;
  using R = tensor<T, RS, B>;
  if constexpr (std::is_same_v<B, cpu> && std::is_same_v<T, float>) {
    detail::check_offsets("grouped_matmul_activation", offsets, w.extent(0), x.extent(0));
    if (x.extent(1) != w.extent(1))
      detail::shape_mismatch("grouped_matmul_activation", x.shape().str(), " x ", w.shape().str(),
                             "inner dimensions differ");
    if (b && (b->extent(0) != w.extent(0) || b->extent(1) != w.extent(2)))
      detail::shape_mismatch("grouped_matmul_activation", w.shape().str(), " with bias ", b->shape().str(),
                             "bias must be (groups, n)");
    const auto out_shape = RS::from_extents(std::array{x.extent(0), w.extent(2)});
    R z(out_shape), y(out_shape);
    kernels<cpu>::gemm_grouped_activation(w.extent(0), offsets.data(), x.extent(1), w.extent(2), x.data(), w.data(),
                                          b ? b->data() : nullptr, f, keep, z.data(), y.data());
    return std::pair<R, R>{std::move(z), std::move(y)};
  } else {
    R z = b ? add_grouped_rows(grouped_matmul(x, w, offsets), *b, offsets) : grouped_matmul(x, w, offsets);
    if constexpr (std::is_same_v<Keep, fn::identity>) {
      R y = map(z, f);
      return std::pair<R, R>{std::move(z), std::move(y)};
    } else {
      return map_pair(z, keep, f);  // {keep(z), f(z)}: one pass where fused_map_pair<B>
    }
  }
}

/// dz = df(z, dy·W_gᵀ) for the rows of each group g: the gradient at the
/// input z of an activation f whose output h = f(z) was multiplied by w
/// (G, n, k) (y = h·W_g), given dy (A, k); z, dz (A, n). With f'(z) kept in
/// place of z, df = fn::mul gives the same. On the CPU in float df
/// runs in the GEMM's output pass; elsewhere grouped_matmul, then one zip.
template <class DF, class T, class SD, class SW, class SZ, class B>
tensor<T, SZ, B> grouped_matmul_activation_backward(const tensor<T, SD, B>& dy, const tensor<T, SW, B>& w,
                                                    const tensor<T, SZ, B>& z, const group_offsets<B>& offsets,
                                                    DF df) {
  static_assert(SD::rank() == 2 && SW::rank() == 3 && SZ::rank() == 2,
                "grouped_matmul_activation_backward: dy must be (rows, k), w (groups, n, k), z (rows, n)");
  if constexpr (std::is_same_v<B, cpu> && std::is_same_v<T, float>) {
    detail::check_offsets("grouped_matmul_activation_backward", offsets, w.extent(0), dy.extent(0));
    if (dy.extent(1) != w.extent(2) || z.extent(0) != dy.extent(0) || z.extent(1) != w.extent(1))
      detail::shape_mismatch("grouped_matmul_activation_backward", dy.shape().str() + " x " + w.shape().str() + "ᵀ",
                             " with z ", z.shape().str(), "extents differ");
    tensor<T, SZ, B> dz(z.shape());
    kernels<cpu>::gemm_grouped_activation_backward(true, w.extent(0), offsets.data(), dy.extent(1), w.extent(1),
                                                   dy.data(), w.data(), z.data(), df, dz.data());
    return dz;
  } else {
    return shape_cast<SZ>(zip("grouped_matmul_activation_backward", z, grouped_matmul<true>(dy, w, offsets), df));
  }
}

/// Per group g: a_gᵀ · d_g, stacked: (A, m) and (A, n) give (G, m, n).
template <class WShape, class T, class SA, class SD, class B>
tensor<T, WShape, B> grouped_matmul_reduce(const tensor<T, SA, B>& a, const tensor<T, SD, B>& d,
                                           const group_offsets<B>& offsets, const WShape& w_shape) {
  const std::size_t groups = w_shape.extent(0), m = a.extent(1), n = d.extent(1);
  tensor<T, WShape, B> out(w_shape);
  kernels<B>::gemm_grouped_reduce(groups, offsets.data(), m, n, T(1), a.data(), d.data(), T(0), out.data(), m * n);
  return out;
}

/// out_g += A_gᵀ·D_g in place for every group g, out (G, m, n) (the beta = 1
/// grouped_matmul_reduce: a weight gradient summed into the one already there).
template <class T, class SA, class SD, class SO, class B>
void grouped_matmul_reduce_add_into(const tensor<T, SA, B>& a, const tensor<T, SD, B>& d,
                                    const group_offsets<B>& offsets, tensor<T, SO, B>& out) {
  static_assert(SO::rank() == 3, "grouped_matmul_reduce_add_into: out must be (groups, m, n)");
  const std::size_t groups = out.extent(0), m = a.extent(1), n = d.extent(1);
  if (out.extent(1) != m || out.extent(2) != n || a.extent(0) != d.extent(0))
    detail::shape_mismatch("grouped_matmul_reduce_add_into", out.shape().str(), " += per-group products of ",
                           a.shape().str() + "ᵀ and " + d.shape().str(), "extents differ");
  kernels<B>::gemm_grouped_reduce(groups, offsets.data(), m, n, T(1), a.data(), d.data(), T(1), out.data(), m * n);
}

namespace detail {
/// Checks h (A, n) against per-group rows b (G, n) and offsets; throws naming `op`.
template <class T, class SH, class SB, class B>
void check_grouped_rows(const char* op, const tensor<T, SH, B>& h, const tensor<T, SB, B>& b,
                        const group_offsets<B>& offsets) {
  static_assert(SH::rank() == 2 && SB::rank() == 2, "grouped rows: h must be (rows, n) and b (groups, n)");
  if (h.extent(1) != b.extent(1)) shape_mismatch(op, h.shape().str(), " with ", b.shape().str(), "row lengths differ");
  check_offsets(op, offsets, b.extent(0), h.extent(0));
}

/// out[r] = f(h[r], b[g]) for every row r of group g.
template <class F, class T, class SH, class SB, class B>
tensor<T, SH, B> map_grouped_rows(const char* op, const tensor<T, SH, B>& h, const tensor<T, SB, B>& b,
                                  const group_offsets<B>& offsets, F f) {
  check_grouped_rows(op, h, b, offsets);
  tensor<T, SH, B> out(h.shape());
  kernels<B>::map_grouped_rows(h.extent(0), b.extent(0), offsets.data(), h.extent(1), out.data(), f, h.data(),
                               b.data());
  return out;
}
}  // namespace detail

/// h[r] + b[g] for every row r of group g: h (A, n), b (G, n).
template <class T, class SH, class SB, class B>
tensor<T, SH, B> add_grouped_rows(const tensor<T, SH, B>& h, const tensor<T, SB, B>& b,
                                  const group_offsets<B>& offsets) {
  return detail::map_grouped_rows("add_grouped_rows", h, b, offsets, fn::add{});
}

/// f(h[r] + b[g]) for every row r of group g, in one pass over h: the bias
/// and activation epilogue of a grouped GEMM. h (A, n), b (G, n).
template <class F, class T, class SH, class SB, class B>
tensor<T, SH, B> grouped_bias_activation(const tensor<T, SH, B>& h, const tensor<T, SB, B>& b,
                                         const group_offsets<B>& offsets, F f) {
  return detail::map_grouped_rows("grouped_bias_activation", h, b, offsets, fn::biased<F>{f});
}

/// The backward of grouped_bias_activation in one pass over h and dy:
/// dz[r] = df(h[r] + b[g], dy[r]) (df: the activation's backward functor) and,
/// when `want_db`, db[g] = column sums of dz over group g's rows. Returns {dz, db}.
template <class DF, class T, class SH, class SB, class SD, class B>
std::pair<tensor<T, SH, B>, tensor<T, SB, B>> grouped_bias_activation_backward(const tensor<T, SH, B>& h,
                                                                               const tensor<T, SB, B>& b,
                                                                               const tensor<T, SD, B>& dy,
                                                                               const group_offsets<B>& offsets, DF df,
                                                                               bool want_db = true) {
  detail::check_grouped_rows("grouped_bias_activation_backward", h, b, offsets);
  if (dy.extent(0) != h.extent(0) || dy.extent(1) != h.extent(1))
    detail::shape_mismatch("grouped_bias_activation_backward", h.shape().str(), " with gradient ", dy.shape().str(),
                           "shapes differ");
  tensor<T, SH, B> dz(h.shape());
  tensor<T, SB, B> db;
  if (want_db) db = tensor<T, SB, B>(b.shape());
  kernels<B>::grouped_bias_activation_backward(b.extent(0), offsets.data(), h.extent(1), h.data(), b.data(), dy.data(),
                                               df, dz.data(), want_db ? db.data() : static_cast<T*>(nullptr));
  return {std::move(dz), std::move(db)};
}

/// Column sums of each group's rows, stacked: dy (A, n) gives (G, n).
template <class BShape, class T, class S, class B>
tensor<T, BShape, B> grouped_column_sums(const tensor<T, S, B>& dy, const group_offsets<B>& offsets,
                                         const BShape& b_shape) {
  tensor<T, BShape, B> out(b_shape);
  kernels<B>::grouped_column_sums(b_shape.extent(0), offsets.data(), dy.extent(1), dy.data(), out.data());
  return out;
}

}  // namespace moekit
