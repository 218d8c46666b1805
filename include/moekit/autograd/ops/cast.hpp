// moekit/autograd/ops/cast.hpp — a differentiable cast between element types:
// the gradient is cast back to the input's type (mixed precision: keep master
// weights in float, compute in bf16, accumulate gradients in float).
#pragma once

#include "../../tensor/ops/cast.hpp"
#include "../tape.hpp"

namespace moekit {

template <class U, class T, class S, class B>
var<U, S, B> cast(const var<T, S, B>& x) {
  return record("cast", cast<U>(x.value()), [x](const tensor<U, S, B>& dy) { x.accumulate(cast<T>(dy)); }, x);
}

}  // namespace moekit
