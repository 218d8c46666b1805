// moekit/tensor/ops/expand.hpp — repeat a tensor along a new axis: the
// backward of a reduction over that axis.
#pragma once

#include <array>
#include <cstddef>

#include "../../core/host_device.hpp"
#include "../tensor.hpp"

namespace moekit {

namespace fn {
/// out[(o, i, j)] = src[(o, j)] for a (outer, n, inner) output.
template <class T>
struct expand_index {
  const T* src;
  std::size_t n, inner;
  MOEKIT_HOST_DEVICE T operator()(std::size_t flat) const {
    return src[flat / (n * inner) * inner + flat % inner];
  }
};
}  // namespace fn

/// y repeated `to.extent(Axis)` times along `Axis`; y's shape is `to` without Axis.
template <std::size_t Axis, class T, class SY, class S, class B>
tensor<T, S, B> expand(const tensor<T, SY, B>& y, const S& to) {
  static_assert(SY::rank() + 1 == S::rank(), "expand: the result must have one more axis");
  for (std::size_t i = 0, j = 0; i < S::rank(); ++i)
    if (i != Axis && to.extent(i) != y.extent(j++))
      detail::shape_mismatch("expand", y.shape().str(), " -> ", to.str(), "extents differ");
  const auto [outer, n, inner] = split_at(to, Axis);
  tensor<T, S, B> out(to);
  kernels<B>::generate(out.size(), out.data(), fn::expand_index<T>{y.data(), n, inner});
  return out;
}

/// A tensor of shape `to` filled with the single value of y (a rank-0 tensor).
template <class T, class SY, class S, class B>
tensor<T, S, B> expand_scalar(const tensor<T, SY, B>& y, const S& to) {
  tensor<T, S, B> out(to);
  kernels<B>::generate(out.size(), out.data(), fn::expand_index<T>{y.data(), out.size() ? out.size() : 1, 1});
  return out;
}

}  // namespace moekit
