// moekit/autograd/ops/batch_norm.hpp — differentiable batch norm of (N, D)
// inputs. The forward saves the per-feature mean and rstd; the backward is one
// fused kernel: in training dx = (γ·rstd/N)·(N·dy − Σdy − x̂·Σ(dy·x̂)), with
// fixed running statistics dx = γ·rstd·dy. Gradients flow to x, gamma and beta.
#pragma once

#include "../../tensor/ops/batch_norm.hpp"
#include "../tape.hpp"
#include "norm.hpp"

namespace moekit {

/// batch_norm (tensor/ops/batch_norm.hpp) on vars: gamma and beta are vars or
/// parameters of D elements (or undefined constants: no affine weight);
/// running_mean/var are plain tensors, updated in place when training.
template <class T, class S, class SG, class SBeta, class SR, class B>
var<T, S, B> batch_norm(const var<T, S, B>& x, const var<T, SG, B>& gamma, const var<T, SBeta, B>& beta,
                        const tensor<T, SR, B>& running_mean, const tensor<T, SR, B>& running_var, bool training,
                        std::type_identity_t<T> momentum = T(0.1), std::type_identity_t<T> eps = T(1e-5)) {
  auto out = detail::batch_norm_forward(x.value(), gamma.value(), beta.value(), running_mean, running_var, training,
                                        momentum, eps);
  return record("batch_norm", std::move(out.y), [x, gamma, beta, stats = std::move(out.stats)](const auto& dy) {
    auto dx = detail::norm_grad_buffer(x);
    auto dgamma = detail::norm_grad_buffer(gamma);
    auto dbeta = detail::norm_grad_buffer(beta);
    detail::batch_norm_backward(x.value(), gamma.value(), stats, dy, dx, dgamma, dbeta);
    x.accumulate(dx);
    gamma.accumulate(dgamma);
    beta.accumulate(dbeta);
  }, x, gamma, beta);
}

/// Training-mode batch norm with batch statistics only (no running statistics).
template <class T, class S, class SG, class SBeta, class B>
var<T, S, B> batch_norm(const var<T, S, B>& x, const var<T, SG, B>& gamma, const var<T, SBeta, B>& beta,
                        std::type_identity_t<T> eps = T(1e-5)) {
  const tensor<T, shape<S::static_extent(1)>, B> none;
  return batch_norm(x, gamma, beta, none, none, true, T(0), eps);
}

}  // namespace moekit
