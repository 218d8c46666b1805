// moekit/autograd/ops/activation.hpp — differentiable activations. Each keeps
// only what its backward reads: the input, the output where that is cheaper,
// or the derivative itself where the backward functor gives it alone.
#pragma once

#include "../../tensor/ops/activation.hpp"
#include "../tape.hpp"

namespace moekit {

namespace detail {
/// y = Fwd(x); dx = Bwd(x, dy): the pattern of activations whose backward reads
/// x. When Bwd gives f'(x) alone (fn::has_slope: the fast GELU and SiLU), a
/// backward will run and the backend computes two maps in one pass (the CPU),
/// the forward computes f(x) and f'(x) in one loop (they share their terms)
/// and keeps f'(x), one tensor more than x, so the backward is a product
/// (dy · f'(x), the same bits as Bwd(x, dy)).
template <class Fwd, class Bwd, class T, class S, class B>
var<T, S, B> unary_from_input(const char* op, const var<T, S, B>& x, Fwd f, Bwd g) {
  if constexpr (fn::has_slope<Bwd> && fused_map_pair<B>) {
    if (will_record(x)) {
      auto [y, s] = map_pair(x.value(), f, fn::slope_of<Bwd>{g});
      return record(op, std::move(y), [x, s = std::move(s)](const auto& dy) {
        x.accumulate(zip("backward", s, dy, fn::mul{}));
      }, x);
    }
  }
  return record(op, map(x.value(), f), [x, g](const auto& dy) {
    x.accumulate(zip("backward", x.value(), dy, g));
  }, x);
}
/// y = Fwd(x); dx = Bwd(y, dy): activations whose derivative is a function of y.
template <class Fwd, class Bwd, class T, class S, class B>
var<T, S, B> unary_from_output(const char* op, const var<T, S, B>& x, Fwd f, Bwd g) {
  auto y = map(x.value(), f);
  return record(op, y, [x, y, g](const auto& dy) { x.accumulate(zip("backward", y, dy, g)); }, x);
}
}  // namespace detail

template <class T, class S, class B>
var<T, S, B> relu(const var<T, S, B>& x) {
  return detail::unary_from_input("relu", x, fn::relu{}, fn::relu_backward{});
}
template <class T, class S, class B>
var<T, S, B> gelu(const var<T, S, B>& x) {
  return detail::unary_from_input("gelu", x, fn::gelu{}, fn::gelu_backward{});
}
template <class T, class S, class B>
var<T, S, B> silu(const var<T, S, B>& x) {
  return detail::unary_from_input("silu", x, fn::silu{}, fn::silu_backward{});
}
template <class T, class S, class B>
var<T, S, B> sigmoid(const var<T, S, B>& x) {
  return detail::unary_from_output("sigmoid", x, fn::sigmoid{}, fn::sigmoid_backward{});
}
template <class T, class S, class B>
var<T, S, B> tanh(const var<T, S, B>& x) {
  return detail::unary_from_output("tanh", x, fn::tanh{}, fn::tanh_backward{});
}
template <class T, class S, class B>
var<T, S, B> elu(const var<T, S, B>& x, std::type_identity_t<T> alpha = T(1)) {
  return detail::unary_from_input("elu", x, fn::elu<T>{alpha}, fn::elu_backward<T>{alpha});
}
template <class T, class S, class B>
var<T, S, B> leaky_relu(const var<T, S, B>& x, std::type_identity_t<T> slope = T(0.01)) {
  return detail::unary_from_input("leaky_relu", x, fn::leaky_relu<T>{slope}, fn::leaky_relu_backward<T>{slope});
}

}  // namespace moekit
