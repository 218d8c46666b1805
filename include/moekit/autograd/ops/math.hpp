// moekit/autograd/ops/math.hpp — differentiable exp, log, sqrt and pow.
#pragma once

#include "../../tensor/ops/activation.hpp"
#include "../tape.hpp"
#include "activation.hpp"

namespace moekit {

namespace fn {
/// From y = exp(x): dx = dy * y.
struct exp_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T y, T dy) const { return dy * y; }
};
struct log_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x, T dy) const { return dy / x; }
};
/// From y = sqrt(x): dx = dy / (2 y).
struct sqrt_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T y, T dy) const { return dy / (T(2) * y); }
};
}  // namespace fn

template <class T, class S, class B>
var<T, S, B> exp(const var<T, S, B>& x) {
  return detail::unary_from_output("exp", x, fn::exp{}, fn::exp_backward{});
}
template <class T, class S, class B>
var<T, S, B> log(const var<T, S, B>& x) {
  return detail::unary_from_input("log", x, fn::log{}, fn::log_backward{});
}
template <class T, class S, class B>
var<T, S, B> sqrt(const var<T, S, B>& x) {
  return detail::unary_from_output("sqrt", x, fn::sqrt{}, fn::sqrt_backward{});
}
/// x^p for a constant exponent p.
template <class T, class S, class B>
var<T, S, B> pow(const var<T, S, B>& x, std::type_identity_t<T> p) {
  return detail::unary_from_input("pow", x, fn::pow<T>{p}, fn::pow_backward<T>{p});
}

}  // namespace moekit
