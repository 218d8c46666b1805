// moekit/autograd/ops/constant.hpp — vars through which no gradient flows:
// constant(t) lifts a tensor (data, masks, noise, counts) into an expression,
// detach(x) keeps x's values but stops its gradient.
#pragma once

#include <utility>

#include "../tape.hpp"

namespace moekit {

/// `value` as a var that never requires grad, on the current tape (ops that
/// meet it record on their other inputs' tape as usual).
template <class T, class S, class B>
var<T, S, B> constant(tensor<T, S, B> value) {
  return var<T, S, B>(std::move(value), tape::current(), nullptr);
}

/// x's values, with no gradient flowing back into x.
template <class T, class S, class B>
var<T, S, B> detach(const var<T, S, B>& x) {
  return var<T, S, B>(x.value(), x.tape_ptr(), nullptr);
}

}  // namespace moekit
