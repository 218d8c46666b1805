// moekit/mlp/block.hpp — the pieces the MLP models share: feed_forward
// (Linear → GELU → Linear) and pre_norm (LayerNorm, then an inner layer).
// Both list their parameters flat, so a bottleneck block
// nn::residual<pre_norm<W, feed_forward<W, 4W>>> names them "norm.weight",
// "fc1.weight", "fc2.bias", ... as the reference implementation does.
#pragma once

#include <cstddef>
#include <utility>

#include "../autograd/ops/activation.hpp"
#include "../nn/linear.hpp"
#include "../nn/norm.hpp"
#include "../tensor/ops/fast_activation.hpp"

namespace moekit::mlp {

/// Exact-erf GELU whose float form vectorises (fast_activation.hpp, ~1e-7
/// relative error); double stays exact. std::erf is a library call per
/// element, which made GELU a tenth of a B-MLP training step.
template <class T, class S, class B>
var<T, S, B> gelu(const var<T, S, B>& x) {
  return moekit::detail::unary_from_input("gelu", x, fn::gelu_fast{}, fn::gelu_fast_backward{});
}

/// fc2(GELU(fc1(x))): (N, D) -> (N, H) -> (N, D); D and H may be dyn.
template <std::size_t D, std::size_t H, class T = float, backend B = cpu>
class feed_forward {
 public:
  feed_forward(rng& g, std::size_t d = D, std::size_t h = H) : fc1_(g, d, h), fc2_(g, h, d) {}

  template <class S>
  auto operator()(const var<T, S, B>& x) const {
    return fc2_(mlp::gelu(fc1_(x)));  // (N, H) -> (N, D)
  }

  nn::linear<D, H, T, B>& fc1() noexcept { return fc1_; }
  nn::linear<H, D, T, B>& fc2() noexcept { return fc2_; }

  template <class V>
  void parameters(V&& visit) {
    visit("fc1", fc1_);
    visit("fc2", fc2_);
  }

 private:
  nn::linear<D, H, T, B> fc1_;  // (D, H)
  nn::linear<H, D, T, B> fc2_;  // (H, D)
};

/// inner(LayerNorm(x)) over the last axis of width D; parameters "norm.*"
/// followed by the inner layer's own (no extra name level).
template <std::size_t D, class Inner, class T = float, backend B = cpu>
class pre_norm {
 public:
  pre_norm(std::size_t d, Inner inner) : norm_(d), inner_(std::move(inner)) {}

  template <class S>
  auto operator()(const var<T, S, B>& x) const {
    return inner_(norm_(x));
  }

  template <class V>
  void parameters(V&& visit) {
    visit("norm", norm_);
    inner_.parameters(visit);
  }

 private:
  nn::layer_norm<D, T, B> norm_;
  Inner inner_;
};

}  // namespace moekit::mlp
