// moekit/autograd/ops/rope.hpp — differentiable rotary position embedding,
// at consecutive positions (offset, offset+1, ...) or at given positions.
// The rotation is orthogonal, so backward rotates dy back; the node keeps
// only the positions (a handle), never x.
#pragma once

#include "../../tensor/ops/rope.hpp"
#include "../tape.hpp"

namespace moekit {

/// rope (tensor/ops/rope.hpp) on a var (..., seq, dim), positions offset + 0..seq-1.
template <class T, class S, class B>
var<T, S, B> rope(const var<T, S, B>& x, std::size_t offset = 0, double base = 10000.0) {
  return record("rope", rope(x.value(), offset, base), [x, offset, base](const auto& dy) {
    x.accumulate(rope_backward(dy, offset, base));
  }, x);
}

/// rope on a var (..., seq, dim) at `positions`: (seq) for every row, or
/// (R, seq) with R dividing the rows of x's leading axes — e.g. for heads
/// (batch·H, seq, d_head): (batch, seq) per batch row, (batch·H, seq) per head.
/// Not differentiable in the positions (integers).
template <class T, class S, class PS, class B>
var<T, S, B> rope(const var<T, S, B>& x, const tensor<index_t, PS, B>& positions, double base = 10000.0) {
  return record("rope", rope(x.value(), positions, base), [x, positions, base](const auto& dy) {
    x.accumulate(rope_backward(dy, positions, base));
  }, x);
}

}  // namespace moekit
