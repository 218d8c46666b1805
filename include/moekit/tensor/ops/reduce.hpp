// moekit/tensor/ops/reduce.hpp — reductions over one axis (the axis is a
// template argument, so the result's shape is known at compile time) and over
// the whole tensor.
#pragma once

#include <cstddef>
#include <limits>

#include "../../backend/functors.hpp"
#include "../tensor.hpp"
#include "elementwise.hpp"
#include "expand.hpp"

namespace moekit {

namespace detail {
/// out = fold over `Axis` of x, for any rank: views x as (outer, n, inner).
template <std::size_t Axis, class Op, class T, class S, class B>
tensor<T, drop_axis_t<Axis, S>, B> reduce_axis(const tensor<T, S, B>& x, T init, Op op) {
  using R = drop_axis_t<Axis, S>;
  auto ext = x.shape().extents();
  const auto [outer, n, inner] = split_at(x.shape(), Axis);
  std::array<std::size_t, R::rank()> out_ext{};
  for (std::size_t i = 0, j = 0; i < S::rank(); ++i)
    if (i != Axis) out_ext[j++] = ext[i];
  tensor<T, R, B> out(R::from_extents(out_ext));
  if (inner == 1) kernels<B>::reduce_rows(outer, n, x.data(), out.data(), init, op);
  else if (outer == 1) kernels<B>::reduce_cols(n, inner, x.data(), out.data(), init, op);
  else kernels<B>::reduce_middle(outer, n, inner, x.data(), out.data(), init, op);  // one launch, not `outer`
  return out;
}
}  // namespace detail

/// Sum over `Axis`: (…, n, …) -> (…, …).
template <std::size_t Axis, class T, class S, class B>
tensor<T, drop_axis_t<Axis, S>, B> sum(const tensor<T, S, B>& x) {
  return detail::reduce_axis<Axis>(x, T(0), fn::add{});
}
/// Mean over `Axis`.
template <std::size_t Axis, class T, class S, class B>
tensor<T, drop_axis_t<Axis, S>, B> mean(const tensor<T, S, B>& x) {
  return sum<Axis>(x) * (T(1) / static_cast<T>(x.extent(Axis)));
}
/// Maximum over `Axis`.
template <std::size_t Axis, class T, class S, class B>
tensor<T, drop_axis_t<Axis, S>, B> max(const tensor<T, S, B>& x) {
  return detail::reduce_axis<Axis>(x, -std::numeric_limits<T>::infinity(), fn::max{});
}
/// Variance over `Axis` (torch.var; `var` names the autograd variable) with Bessel's `correction` (1: unbiased, as torch.var).
template <std::size_t Axis, class T, class S, class B>
tensor<T, drop_axis_t<Axis, S>, B> variance(const tensor<T, S, B>& x, std::size_t correction = 1) {
  const std::size_t n = x.extent(Axis);
  if (n <= correction) throw value_error("variance: " + std::to_string(n) + " values with correction " +
                                         std::to_string(correction));
  auto centred = x - expand<Axis>(mean<Axis>(x), x.shape());  // x - mean, the mean repeated along Axis
  auto d = map(centred, fn::square{});                        // (x - mean)²
  return sum<Axis>(d) * (T(1) / static_cast<T>(n - correction));
}

/// Index of the maximum along the last axis of a rank-2 tensor: (R, C) -> (R).
template <class T, class S, class B>
tensor<index_t, shape<S::static_extent(0)>, B> argmax(const tensor<T, S, B>& x) {
  static_assert(S::rank() == 2, "argmax: needs rank 2 (rows, cols)");
  using R = shape<S::static_extent(0)>;
  tensor<index_t, R, B> out(R::from_extents(std::array{x.extent(0)}));
  kernels<B>::argmax_rows(x.extent(0), x.extent(1), x.data(), out.data());
  return out;
}

/// Sum of every element: a rank-0 tensor.
template <class T, class S, class B>
tensor<T, scalar_shape, B> sum(const tensor<T, S, B>& x) {
  tensor<T, scalar_shape, B> out(scalar_shape{});
  kernels<B>::reduce_rows(1, x.size(), x.data(), out.data(), T(0), fn::add{});
  return out;
}

}  // namespace moekit
