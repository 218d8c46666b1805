// moekit/autograd/ops/reduce.hpp — differentiable sum and mean, over one axis
// or over everything.
#pragma once

#include "../../tensor/ops/expand.hpp"
#include "../../tensor/ops/reduce.hpp"
#include "../tape.hpp"

namespace moekit {

template <std::size_t Axis, class T, class S, class B>
var<T, drop_axis_t<Axis, S>, B> sum(const var<T, S, B>& x) {
  return record("sum", sum<Axis>(x.value()), [x](const auto& dy) {
    x.accumulate(expand<Axis>(dy, x.shape()));
  }, x);
}
template <std::size_t Axis, class T, class S, class B>
var<T, drop_axis_t<Axis, S>, B> mean(const var<T, S, B>& x) {
  const T scale = T(1) / static_cast<T>(x.extent(Axis));
  return record("mean", mean<Axis>(x.value()), [x, scale](const auto& dy) {
    x.accumulate(expand<Axis>(dy, x.shape()) * scale);
  }, x);
}
/// Sum of every element: a scalar var.
template <class T, class S, class B>
var<T, scalar_shape, B> sum(const var<T, S, B>& x) {
  return record("sum", sum(x.value()), [x](const auto& dy) { x.accumulate(expand_scalar(dy, x.shape())); }, x);
}
/// Mean of every element: a scalar var.
template <class T, class S, class B>
var<T, scalar_shape, B> mean(const var<T, S, B>& x) {
  return sum(x) * (T(1) / static_cast<T>(x.size()));
}

}  // namespace moekit
