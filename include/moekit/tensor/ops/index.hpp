// moekit/tensor/ops/index.hpp — row indexing along the first axis: gather_rows
// (index_select) picks rows by index, scatter_add_rows adds rows into the
// indexed positions. They are each other's backward, and the dispatch and
// combine steps of every MoE layer.
#pragma once

#include <cstddef>
#include <string>

#include "../tensor.hpp"
#include "creation.hpp"

namespace moekit {

namespace detail {

/// Throws value_error unless every index lies in [0, n); `of()` describes what
/// is indexed (built only on failure). Only host-visible indices are checked:
/// reading device indices here would synchronise. On a device the kernels
/// get the bound instead: an out-of-range gather row is zero, an out-of-range
/// scatter row is skipped.
template <class SI, class B, class Describe>
void check_indices(const char* op, const tensor<index_t, SI, B>& idx, std::size_t n, Describe of) {
  static_assert(SI::rank() == 1, "index: the index tensor must have rank 1");
  if constexpr (B::host_accessible) {
    for (std::size_t i = 0; i < idx.size(); ++i)
      if (idx[i] < 0 || static_cast<std::size_t>(idx[i]) >= n)
        throw value_error(std::string(op) + ": index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                          " is out of range [0, " + std::to_string(n) + ") of " + of());
  }
}

/// Elements per row along the first axis (the product of the trailing extents).
template <class S>
std::size_t row_size(const S& s) {
  return split_at(s, 0).inner;
}

/// gather_rows under the name of the op that uses it (gather_rows, embedding, ...).
template <class T, class S, class SI, class B>
tensor<T, set_axis_t<0, SI::static_extent(0), S>, B> gather_rows(const char* op, const tensor<T, S, B>& x,
                                                                 const tensor<index_t, SI, B>& idx) {
  static_assert(S::rank() >= 1, "gather_rows: x needs at least one axis");
  using R = set_axis_t<0, SI::static_extent(0), S>;
  check_indices(op, idx, x.extent(0), [&] { return "the rows of " + x.shape().str(); });
  auto ext = x.shape().extents();
  ext[0] = idx.extent(0);
  tensor<T, R, B> out(R::from_extents(ext, op));
  kernels<B>::gather_rows(idx.size(), row_size(x.shape()), x.data(), idx.data(), out.data(), x.extent(0));
  return out;
}

/// scatter_add_rows with an optional per-row scale (null: 1).
template <class T, class S, class SI, class B>
tensor<T, set_axis_t<0, dyn, S>, B> scatter_add_rows(const char* op, const tensor<T, S, B>& src,
                                                     const tensor<index_t, SI, B>& idx, std::size_t rows,
                                                     const T* scale) {
  static_assert(S::rank() >= 1, "scatter_add_rows: src needs at least one axis");
  static_assert(extents_match<S::static_extent(0), SI::static_extent(0)>::value,
                "scatter_add_rows: one index per source row");
  using R = set_axis_t<0, dyn, S>;
  if (idx.extent(0) != src.extent(0))
    shape_mismatch(op, src.shape().str(), " with indices ", idx.shape().str(), "one index per source row");
  check_indices(op, idx, rows, [&] { return "the " + std::to_string(rows) + " output rows"; });
  auto ext = src.shape().extents();
  ext[0] = rows;
  auto out = zeros<T, B>(R::from_extents(ext, op));
  kernels<B>::scatter_add_rows(idx.size(), row_size(src.shape()), src.data(), idx.data(), out.data(), scale, rows);
  return out;
}

}  // namespace detail

/// out[i] = x[idx[i]]: rows of x (N, D...) picked by idx (M) -> (M, D...).
/// Every index must lie in [0, N) (value_error otherwise).
template <class T, class S, class SI, class B>
auto gather_rows(const tensor<T, S, B>& x, const tensor<index_t, SI, B>& idx) {
  return detail::gather_rows("gather_rows", x, idx);
}
/// index_select along the first axis: the same op as gather_rows.
template <class T, class S, class SI, class B>
auto index_select(const tensor<T, S, B>& x, const tensor<index_t, SI, B>& idx) {
  return detail::gather_rows("index_select", x, idx);
}

/// A zero tensor of `rows` rows with out[idx[i]] += src[i]: src (M, D...),
/// idx (M) -> (rows, D...). Repeated indices add up, in the order of i.
template <class T, class S, class SI, class B>
tensor<T, set_axis_t<0, dyn, S>, B> scatter_add_rows(const tensor<T, S, B>& src, const tensor<index_t, SI, B>& idx,
                                                     std::size_t rows) {
  return detail::scatter_add_rows("scatter_add_rows", src, idx, rows, static_cast<const T*>(nullptr));
}
/// As above with out[idx[i]] += scale[i] * src[i] (the weighted combine of MoE outputs).
template <class T, class S, class SI, class SS, class B>
tensor<T, set_axis_t<0, dyn, S>, B> scatter_add_rows(const tensor<T, S, B>& src, const tensor<index_t, SI, B>& idx,
                                                     std::size_t rows, const tensor<T, SS, B>& scale) {
  static_assert(SS::rank() == 1, "scatter_add_rows: scale must have rank 1, one weight per source row");
  if (scale.extent(0) != src.extent(0))
    detail::shape_mismatch("scatter_add_rows", src.shape().str(), " with scale ", scale.shape().str(),
                           "one weight per source row");
  return detail::scatter_add_rows("scatter_add_rows", src, idx, rows, scale.data());
}

}  // namespace moekit
