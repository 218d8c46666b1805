// moekit/tensor/ops/sums.hpp — sums over the matrix view of a tensor (leading
// axes = rows, last axis = columns): what broadcast backward passes reduce by.
#pragma once

#include "../../backend/functors.hpp"
#include "../tensor.hpp"
#include "elementwise.hpp"

namespace moekit {

/// Sum over the rows of x's matrix view, shaped as `RowShape` (the last extent).
template <class RowShape, class T, class S, class B>
tensor<T, RowShape, B> column_sums(const tensor<T, S, B>& x, const RowShape& row_shape) {
  auto [r, c] = as_matrix(x.shape());
  tensor<T, RowShape, B> out(row_shape);
  kernels<B>::reduce_cols(r, c, x.data(), out.data(), T(0), fn::add{});
  return out;
}
/// Sum over the columns of x's matrix view, shaped as `ColShape` (the leading extents).
template <class ColShape, class T, class S, class B>
tensor<T, ColShape, B> row_sums(const tensor<T, S, B>& x, const ColShape& col_shape) {
  auto [r, c] = as_matrix(x.shape());
  tensor<T, ColShape, B> out(col_shape);
  kernels<B>::reduce_rows(r, c, x.data(), out.data(), T(0), fn::add{});
  return out;
}
/// row_sums(a * b) for a and b of one shape: where the backend has a
/// row_dots kernel (the CPU) in one pass, without the product tensor.
template <class ColShape, class T, class SA, class SB, class B>
tensor<T, ColShape, B> row_dots(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b, const ColShape& col_shape) {
  if (!(a.shape() == b.shape()))
    detail::shape_mismatch("row_dots", a.shape().str(), " with ", b.shape().str(), "shapes must be equal");
  if constexpr (requires(T* p) { kernels<B>::row_dots(std::size_t{}, std::size_t{}, p, p, p); }) {
    auto [r, c] = as_matrix(a.shape());
    tensor<T, ColShape, B> out(col_shape);
    kernels<B>::row_dots(r, c, a.data(), b.data(), out.data());
    return out;
  } else {
    return row_sums(zip("row_dots", a, b, fn::mul{}), col_shape);
  }
}

}  // namespace moekit
