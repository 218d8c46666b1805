// moekit/autograd/ops/softmax.hpp — differentiable softmax and log-softmax over
// the last axis. Backward reads only the saved output.
#pragma once

#include "../../tensor/ops/softmax.hpp"
#include "../tape.hpp"

namespace moekit {

template <class T, class S, class B>
var<T, S, B> softmax(const var<T, S, B>& x) {
  auto y = softmax(x.value());
  return record("softmax", y, [x, y](const auto& dy) { x.accumulate(softmax_backward(y, dy)); }, x);
}

template <class T, class S, class B>
var<T, S, B> log_softmax(const var<T, S, B>& x) {
  auto y = log_softmax(x.value());
  return record("log_softmax", y, [x, y](const auto& dy) { x.accumulate(log_softmax_backward(y, dy)); }, x);
}

}  // namespace moekit
