// moekit/autograd/ops/rope.hpp — differentiable rotary position embedding.
// The rotation is orthogonal, so backward rotates dy back; nothing is saved.
#pragma once

#include "../../tensor/ops/rope.hpp"
#include "../tape.hpp"

namespace moekit {

/// rope (tensor/ops/rope.hpp) on a var (..., seq, dim).
template <class T, class S, class B>
var<T, S, B> rope(const var<T, S, B>& x, std::size_t offset = 0, double base = 10000.0) {
  return record("rope", rope(x.value(), offset, base), [x, offset, base](const auto& dy) {
    x.accumulate(rope_backward(dy, offset, base));
  }, x);
}

}  // namespace moekit
