// moekit/autograd/ops/auxiliary_loss.hpp — add_auxiliary_loss(y, aux): y
// unchanged, but its backward also sends d(aux) = 1 into the scalar aux, so a
// layer's auxiliary losses (router balance terms) join any loss built on y.
// aux may have another element type than y (an fp32 router under a bf16 layer).
#pragma once

#include "../../tensor/ops/creation.hpp"
#include "../tape.hpp"

namespace moekit {

template <class T, class S, class U, class B>
var<T, S, B> add_auxiliary_loss(const var<T, S, B>& y, const var<U, scalar_shape, B>& aux) {
  if (!aux.value().defined()) return y;
  return record("add_auxiliary_loss", y.value(), [y, aux](const auto& dy) {
    y.accumulate(dy);
    aux.accumulate(ones<U, B>(scalar_shape{}));
  }, y, aux);
}

}  // namespace moekit
