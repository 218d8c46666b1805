// moekit/autograd/ops/index.hpp — differentiable row indexing: gather_rows
// (alias index_select), scatter_add_rows and embedding lookup. Gathering and
// scatter-adding rows are each other's backward.
#pragma once

#include <cstddef>

#include "../../tensor/ops/index.hpp"
#include "../tape.hpp"

namespace moekit {

namespace detail {
/// gather_rows recorded under `op`; dx = scatter_add_rows(dy, idx, rows of x).
template <class T, class S, class SI, class B>
auto gather_rows(const char* op, const var<T, S, B>& x, const tensor<index_t, SI, B>& idx) {
  return record(op, gather_rows(op, x.value(), idx), [x, idx, op](const auto& dy) {
    x.accumulate(scatter_add_rows(op, dy, idx, x.extent(0), static_cast<const T*>(nullptr)));
  }, x);
}
}  // namespace detail

/// out[i] = x[idx[i]]: x (N, D...), idx (M) -> (M, D...). Rows picked more
/// than once get the sum of their gradients.
template <class T, class S, class SI, class B>
auto gather_rows(const var<T, S, B>& x, const tensor<index_t, SI, B>& idx) {
  return detail::gather_rows("gather_rows", x, idx);
}
/// index_select along the first axis: the same op as gather_rows.
template <class T, class S, class SI, class B>
auto index_select(const var<T, S, B>& x, const tensor<index_t, SI, B>& idx) {
  return detail::gather_rows("index_select", x, idx);
}

/// A zero tensor of `rows` rows with out[idx[i]] += src[i]; d src = dy gathered by idx.
template <class T, class S, class SI, class B>
var<T, set_axis_t<0, dyn, S>, B> scatter_add_rows(const var<T, S, B>& src, const tensor<index_t, SI, B>& idx,
                                                  std::size_t rows) {
  return record("scatter_add_rows", scatter_add_rows(src.value(), idx, rows), [src, idx](const auto& dy) {
    src.accumulate(detail::gather_rows("scatter_add_rows", dy, idx));
  }, src);
}

/// Rows of `table` (vocabulary, dim) picked by `ids` (n) -> (n, dim); the
/// gradient of each looked-up row is added into the table's row. Ids outside
/// [0, vocabulary) throw value_error.
template <class T, class S, class SI, class B>
auto embedding(const var<T, S, B>& table, const tensor<index_t, SI, B>& ids) {
  static_assert(S::rank() == 2, "embedding: the table must have rank 2 (vocabulary, dim)");
  return detail::gather_rows("embedding", table, ids);
}

}  // namespace moekit
