// moekit/tensor/ops/top_k.hpp — the k largest entries of each row of a matrix,
// in descending order, with their column indices. Ties go to the lower index,
// so the selection is a total order and every backend agrees.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>

#include "../tensor.hpp"

namespace moekit {

/// What top_k returns: `values` (rows, k) and their column `indices` (rows, k).
/// Works with structured bindings: `auto [v, i] = top_k(x, 2);`
template <class Values, class Indices>
struct top_k_result {
  Values values;
  Indices indices;
};

/// Static k must be at least 1 and at most the columns where those are static.
template <std::size_t K, std::size_t Cols>
struct k_fits_columns : std::bool_constant<K != 0 && (K == dyn || Cols == dyn || K <= Cols)> {};

namespace detail {

/// Result shape of top_k with K (dyn or static) selected out of each row of S.
template <std::size_t K, class S>
using top_k_shape_t = shape<S::static_extent(0), K>;

template <class S>
void check_k(const S& x, std::size_t k) {
  if (k == 0 || k > x.extent(1))
    throw value_error("top_k: k = " + std::to_string(k) + " but x " + x.str() + " has " +
                      std::to_string(x.extent(1)) + " columns (need 1 <= k <= columns)");
}

template <std::size_t K, class T, class S, class B>
top_k_result<tensor<T, top_k_shape_t<K, S>, B>, tensor<index_t, top_k_shape_t<K, S>, B>> top_k(
    const tensor<T, S, B>& x, std::size_t k) {
  static_assert(S::rank() == 2, "top_k: needs rank 2 (rows, cols)");
  static_assert(k_fits_columns<K, S::static_extent(1)>::value, "top_k: k must be in [1, columns]");
  using R = top_k_shape_t<K, S>;
  check_k(x.shape(), k);
  const auto s = R::from_extents(std::array{x.extent(0), k}, "top_k");
  top_k_result<tensor<T, R, B>, tensor<index_t, R, B>> out{tensor<T, R, B>(s), tensor<index_t, R, B>(s)};
  kernels<B>::top_k_rows(x.extent(0), x.extent(1), k, x.data(), out.values.data(), out.indices.data());
  return out;
}

}  // namespace detail

/// The k largest entries of each row of x (rows, cols), descending: values and
/// indices (rows, k). Throws value_error unless 1 <= k <= cols.
template <class T, class S, class B>
auto top_k(const tensor<T, S, B>& x, std::size_t k) {
  return detail::top_k<dyn>(x, k);
}
/// With k fixed at compile time: results (rows, K).
template <std::size_t K, class T, class S, class B>
auto top_k(const tensor<T, S, B>& x) {
  return detail::top_k<K>(x, K);
}

}  // namespace moekit
