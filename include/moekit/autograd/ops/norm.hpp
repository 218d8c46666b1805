// moekit/autograd/ops/norm.hpp — differentiable layer norm and RMS norm over the
// last axis. The forward saves its per-row mean/rstd, so backward never
// recomputes the statistics; gradients flow to x, gamma and beta.
#pragma once

#include "../../tensor/ops/norm.hpp"
#include "../tape.hpp"

namespace moekit {

namespace detail {
/// Uninitialised room for v's gradient when v wants one; undefined (skipped) otherwise.
template <class T, class S, class B>
tensor<T, S, B> norm_grad_buffer(const var<T, S, B>& v) {
  return v.requires_grad() ? tensor<T, S, B>(v.shape()) : tensor<T, S, B>{};
}
/// "No affine weight": a constant var with an undefined value.
template <class T, class S, class B>
using no_norm_weight = var<T, norm_weight_shape_t<S>, B>;
}  // namespace detail

/// (x - mean) / sqrt(var + eps) * gamma + beta over the last axis; gamma and beta
/// are vars or parameters of the last extent.
template <class T, class S, class SG, class SBeta, class B>
var<T, S, B> layer_norm(const var<T, S, B>& x, const var<T, SG, B>& gamma, const var<T, SBeta, B>& beta,
                        std::type_identity_t<T> eps = T(1e-5)) {
  auto out = detail::layer_norm_forward(x.value(), gamma.value(), beta.value(), eps);
  return record("layer_norm", std::move(out.y), [x, gamma, beta, stats = std::move(out.stats)](const auto& dy) {
    auto dx = detail::norm_grad_buffer(x);
    auto dgamma = detail::norm_grad_buffer(gamma);
    auto dbeta = detail::norm_grad_buffer(beta);
    detail::layer_norm_backward(x.value(), gamma.value(), stats, dy, dx, dgamma, dbeta);
    x.accumulate(dx);
    gamma.accumulate(dgamma);
    beta.accumulate(dbeta);
  }, x, gamma, beta);
}
/// Layer norm without affine weights.
template <class T, class S, class B>
var<T, S, B> layer_norm(const var<T, S, B>& x, std::type_identity_t<T> eps = T(1e-5)) {
  const detail::no_norm_weight<T, S, B> none;
  return layer_norm(x, none, none, eps);
}

/// x / sqrt(mean(x²) + eps) * gamma over the last axis; gamma is a var or parameter.
template <class T, class S, class SG, class B>
var<T, S, B> rms_norm(const var<T, S, B>& x, const var<T, SG, B>& gamma, std::type_identity_t<T> eps = T(1e-6)) {
  auto out = detail::rms_norm_forward(x.value(), gamma.value(), eps);
  return record("rms_norm", std::move(out.y), [x, gamma, stats = std::move(out.stats)](const auto& dy) {
    auto dx = detail::norm_grad_buffer(x);
    auto dgamma = detail::norm_grad_buffer(gamma);
    detail::rms_norm_backward(x.value(), gamma.value(), stats, dy, dx, dgamma);
    x.accumulate(dx);
    gamma.accumulate(dgamma);
  }, x, gamma);
}
/// RMS norm without a weight.
template <class T, class S, class B>
var<T, S, B> rms_norm(const var<T, S, B>& x, std::type_identity_t<T> eps = T(1e-6)) {
  return rms_norm(x, detail::no_norm_weight<T, S, B>{}, eps);
}

}  // namespace moekit
