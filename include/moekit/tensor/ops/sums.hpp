// moekit/tensor/ops/sums.hpp — sums over the matrix view of a tensor (leading
// axes = rows, last axis = columns): what broadcast backward passes reduce by.
#pragma once

#include "../../backend/functors.hpp"
#include "../tensor.hpp"

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

}  // namespace moekit
