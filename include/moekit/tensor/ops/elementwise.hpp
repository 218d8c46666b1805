// moekit/tensor/ops/elementwise.hpp — element-wise arithmetic: tensor-tensor
// (same shape), tensor-scalar, and a row or column operand broadcast over a
// matrix view of the tensor (last axis = columns, all leading axes = rows).
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "../../backend/functors.hpp"
#include "../tensor.hpp"

namespace moekit {

/// y[i] = f(x[i]).
template <class F, class T, class S, class B>
tensor<T, S, B> map(const tensor<T, S, B>& x, F f) {
  tensor<T, S, B> out(x.shape());
  kernels<B>::map(x.size(), out.data(), f, x.data());
  return out;
}
/// Whether map_pair runs as one pass on backend B (the CPU). Only then does an
/// op gain by keeping an activation's slope from its forward: elsewhere the
/// second map costs a pass over memory, which is what recomputing the slope
/// in the backward costs there (element-wise kernels on a GPU wait on memory,
/// not on the arithmetic).
template <class B>
inline constexpr bool fused_map_pair = std::is_same_v<B, cpu>;

/// {f(x[i]), g(x[i])}: on the CPU in one loop, where f and g share their
/// common terms (an activation and its slope, fn::slope_of); elsewhere two maps.
template <class F, class G, class T, class S, class B>
std::pair<tensor<T, S, B>, tensor<T, S, B>> map_pair(const tensor<T, S, B>& x, F f, G g) {
  if constexpr (fused_map_pair<B>) {
    tensor<T, S, B> out_f(x.shape()), out_g(x.shape());
    kernels<B>::map_pair(x.size(), out_f.data(), f, out_g.data(), g, x.data());
    return {std::move(out_f), std::move(out_g)};
  } else {
    return {map(x, f), map(x, g)};
  }
}
/// y[i] = f(a[i], b[i]); shapes must agree (checked at compile time where static).
template <class F, class T, class SA, class SB, class B>
auto zip(const char* op, const tensor<T, SA, B>& a, const tensor<T, SB, B>& b, F f) {
  auto s = elementwise_result(op, a.shape(), b.shape());
  tensor<T, decltype(s), B> out(s);
  kernels<B>::map(out.size(), out.data(), f, a.data(), b.data());
  return out;
}

template <class T, class SA, class SB, class B>
auto operator+(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) { return zip("add", a, b, fn::add{}); }
template <class T, class SA, class SB, class B>
auto operator-(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) { return zip("sub", a, b, fn::sub{}); }
template <class T, class SA, class SB, class B>
auto operator*(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) { return zip("mul", a, b, fn::mul{}); }
template <class T, class SA, class SB, class B>
auto operator/(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) { return zip("div", a, b, fn::div{}); }
template <class T, class S, class B>
tensor<T, S, B> operator-(const tensor<T, S, B>& x) { return map(x, fn::neg{}); }

// Scalars: the scalar takes the tensor's element type.
#define MOEKIT_SCALAR_OP(sym, F)                                                         \
  template <class T, class S, class B>                                                   \
  tensor<T, S, B> operator sym(const tensor<T, S, B>& x, std::type_identity_t<T> s) {    \
    return map(x, fn::with_scalar<F, T>{s});                                             \
  }                                                                                      \
  template <class T, class S, class B>                                                   \
  tensor<T, S, B> operator sym(std::type_identity_t<T> s, const tensor<T, S, B>& x) {    \
    return map(x, fn::scalar_first<F, T>{s});                                            \
  }
MOEKIT_SCALAR_OP(+, fn::add)
MOEKIT_SCALAR_OP(-, fn::sub)
MOEKIT_SCALAR_OP(*, fn::mul)
MOEKIT_SCALAR_OP(/, fn::div)
#undef MOEKIT_SCALAR_OP

namespace detail {
/// Checks that `row` (rank 1) matches the last extent of x.
template <class SX, class SR>
void check_row_operand(const char* op, const SX& x, const SR& row) {
  static_assert(SR::rank() == 1, "broadcast: the row operand must have rank 1");
  static_assert(extents_match<last_extent_v<SX>, SR::static_extent(0)>::value, "broadcast: row length differs");
  if (row.extent(0) != x.extent(SX::rank() - 1))
    shape_mismatch(op, x.str(), " with row ", row.str(), "row length differs from the last extent");
}
/// Checks that `col` matches all extents of x but the last.
template <class SX, class SC>
void check_col_operand(const char* op, const SX& x, const SC& col) {
  static_assert(SC::rank() + 1 == SX::rank(), "broadcast: the column operand must have rank(x) - 1");
  for (std::size_t i = 0; i < SC::rank(); ++i)
    if (col.extent(i) != x.extent(i))
      shape_mismatch(op, x.str(), " with column ", col.str(), "column extents differ from the leading extents");
}
}  // namespace detail

/// out[r, c] = f(x[r, c], row[c]) over the matrix view of x.
template <class F, class T, class SX, class SR, class B>
tensor<T, SX, B> broadcast_rows(const char* op, const tensor<T, SX, B>& x, const tensor<T, SR, B>& row, F f) {
  detail::check_row_operand(op, x.shape(), row.shape());
  auto [r, c] = as_matrix(x.shape());
  tensor<T, SX, B> out(x.shape());
  kernels<B>::map_rows(r, c, out.data(), f, x.data(), row.data());
  return out;
}
/// out[r, c] = f(x[r, c], col[r]) over the matrix view of x.
template <class F, class T, class SX, class SC, class B>
tensor<T, SX, B> broadcast_cols(const char* op, const tensor<T, SX, B>& x, const tensor<T, SC, B>& col, F f) {
  detail::check_col_operand(op, x.shape(), col.shape());
  auto [r, c] = as_matrix(x.shape());
  tensor<T, SX, B> out(x.shape());
  kernels<B>::map_cols(r, c, out.data(), f, x.data(), col.data());
  return out;
}

template <class T, class SX, class SR, class B>
tensor<T, SX, B> add_rows(const tensor<T, SX, B>& x, const tensor<T, SR, B>& row) { return broadcast_rows("add_rows", x, row, fn::add{}); }
template <class T, class SX, class SR, class B>
tensor<T, SX, B> sub_rows(const tensor<T, SX, B>& x, const tensor<T, SR, B>& row) { return broadcast_rows("sub_rows", x, row, fn::sub{}); }
template <class T, class SX, class SR, class B>
tensor<T, SX, B> mul_rows(const tensor<T, SX, B>& x, const tensor<T, SR, B>& row) { return broadcast_rows("mul_rows", x, row, fn::mul{}); }
template <class T, class SX, class SR, class B>
tensor<T, SX, B> div_rows(const tensor<T, SX, B>& x, const tensor<T, SR, B>& row) { return broadcast_rows("div_rows", x, row, fn::div{}); }
template <class T, class SX, class SC, class B>
tensor<T, SX, B> add_cols(const tensor<T, SX, B>& x, const tensor<T, SC, B>& col) { return broadcast_cols("add_cols", x, col, fn::add{}); }
template <class T, class SX, class SC, class B>
tensor<T, SX, B> sub_cols(const tensor<T, SX, B>& x, const tensor<T, SC, B>& col) { return broadcast_cols("sub_cols", x, col, fn::sub{}); }
template <class T, class SX, class SC, class B>
tensor<T, SX, B> mul_cols(const tensor<T, SX, B>& x, const tensor<T, SC, B>& col) { return broadcast_cols("mul_cols", x, col, fn::mul{}); }
template <class T, class SX, class SC, class B>
tensor<T, SX, B> div_cols(const tensor<T, SX, B>& x, const tensor<T, SC, B>& col) { return broadcast_cols("div_cols", x, col, fn::div{}); }

template <class T, class S, class B> tensor<T, S, B> exp(const tensor<T, S, B>& x) { return map(x, fn::exp{}); }
template <class T, class S, class B> tensor<T, S, B> log(const tensor<T, S, B>& x) { return map(x, fn::log{}); }
template <class T, class S, class B> tensor<T, S, B> sqrt(const tensor<T, S, B>& x) { return map(x, fn::sqrt{}); }

/// a += b in place (same shape); used by gradient accumulation.
template <class T, class SA, class SB, class B>
void add_into(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) {
  (void)elementwise_result("add_into", a.shape(), b.shape());
  kernels<B>::map(a.size(), a.data(), fn::add{}, a.data(), b.data());
}
/// Sets every element to v in place.
template <class T, class S, class B>
void fill(const tensor<T, S, B>& x, T v) {
  kernels<B>::generate(x.size(), x.data(), fn::constant<T>{v});
}

}  // namespace moekit
