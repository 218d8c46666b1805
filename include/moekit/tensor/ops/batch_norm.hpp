// moekit/tensor/ops/batch_norm.hpp — batch normalisation of (N, D) inputs per
// feature (column), as torch.nn.functional.batch_norm: in training the batch
// statistics normalise (biased variance) and the running statistics move
// towards them with the unbiased variance; otherwise the running statistics
// normalise. An undefined gamma/beta means "no affine weight".
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>

#include "../../backend/functors.hpp"
#include "../tensor.hpp"

namespace moekit {

namespace fn {
/// running ← (1 − momentum)·running + momentum·unbias·batch.
template <class T>
struct momentum_update {
  T momentum, unbias;
  MOEKIT_HOST_DEVICE T operator()(T running, T batch) const {
    return (T(1) - momentum) * running + momentum * unbias * batch;
  }
};
}  // namespace fn

namespace detail {

/// What batch norm's backward reads: per-feature mean and 1/√(var + eps), (D).
template <class T, class B>
struct batch_norm_stats {
  tensor<T, shape<dyn>, B> mean, rstd;
  bool batch = true;  // statistics of this batch (they depend on x) or running ones
};
template <class T, class S, class B>
struct batch_norm_output {
  tensor<T, S, B> y;  // (N, D)
  batch_norm_stats<T, B> stats;
};

/// Checks a per-feature tensor (weight or running statistic) against x (an undefined one passes).
template <class T, class SX, class SW, class B>
void check_feature_tensor(const char* name, const tensor<T, SX, B>& x, const tensor<T, SW, B>& w) {
  static_assert(ranks_match<SW::rank(), 1>::value, "batch_norm: weights and running statistics must have rank 1");
  static_assert(extents_match<SX::static_extent(1), SW::static_extent(0)>::value,
                "batch_norm: a weight or running statistic differs in length from the features of x");
  if (w.defined() && w.extent(0) != x.extent(1))
    shape_mismatch("batch_norm", x.shape().str(), (std::string(" with ") + name + " ").c_str(), w.shape().str(),
                   std::string(name) + " length " + std::to_string(w.extent(0)) + " differs from the " +
                       std::to_string(x.extent(1)) + " features");
}

/// The forward of batch_norm; also returns the statistics its backward needs.
template <class T, class S, class SG, class SBeta, class SR, class B>
batch_norm_output<T, S, B> batch_norm_forward(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma,
                                              const tensor<T, SBeta, B>& beta, const tensor<T, SR, B>& running_mean,
                                              const tensor<T, SR, B>& running_var, bool training, T momentum,
                                              T eps) {
  static_assert(S::rank() == 2, "batch_norm: x must have rank 2 (batch, features)");
  check_feature_tensor("gamma", x, gamma);
  check_feature_tensor("beta", x, beta);
  check_feature_tensor("running_mean", x, running_mean);
  check_feature_tensor("running_var", x, running_var);
  const std::size_t n = x.extent(0), d = x.extent(1);
  if (running_mean.defined() != running_var.defined())
    throw value_error("batch_norm: give both running_mean and running_var, or neither");
  if (!training && !running_mean.defined())
    throw value_error("batch_norm: evaluation mode needs running_mean and running_var");
  if (training && n < 2)
    throw value_error("batch_norm: training needs more than one value per feature, got x " + x.shape().str());

  const shape<dyn> features{d};
  batch_norm_output<T, S, B> out{tensor<T, S, B>(x.shape()), {{}, tensor<T, shape<dyn>, B>(features), training}};
  if (training) {
    out.stats.mean = tensor<T, shape<dyn>, B>(features);
    tensor<T, shape<dyn>, B> var(features);
    kernels<B>::batch_norm_stats(n, d, x.data(), out.stats.mean.data(), var.data());
    kernels<B>::batch_norm_forward(n, d, x.data(), out.stats.mean.data(), var.data(), gamma.data(), beta.data(), eps,
                                   out.y.data(), out.stats.rstd.data());
    if (running_mean.defined()) {
      const T unbias = static_cast<T>(n) / static_cast<T>(n - 1);  // torch updates with the unbiased variance
      kernels<B>::map(d, running_mean.data(), fn::momentum_update<T>{momentum, T(1)}, running_mean.data(),
                      out.stats.mean.data());
      kernels<B>::map(d, running_var.data(), fn::momentum_update<T>{momentum, unbias}, running_var.data(),
                      var.data());
    }
  } else {
    // A copy: a later training step updates the running statistics in place.
    out.stats.mean = running_mean.reshape(features).clone();
    kernels<B>::batch_norm_forward(n, d, x.data(), out.stats.mean.data(), running_var.data(), gamma.data(),
                                   beta.data(), eps, out.y.data(), out.stats.rstd.data());
  }
  return out;
}

/// Writes the gradients whose tensors are defined (dx, dgamma, dbeta); the others are skipped.
template <class T, class S, class SG, class SBeta, class B>
void batch_norm_backward(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma, const batch_norm_stats<T, B>& stats,
                         const tensor<T, S, B>& dy, const tensor<T, S, B>& dx, const tensor<T, SG, B>& dgamma,
                         const tensor<T, SBeta, B>& dbeta) {
  kernels<B>::batch_norm_backward(x.extent(0), x.extent(1), x.data(), stats.mean.data(), stats.rstd.data(),
                                  gamma.data(), dy.data(), stats.batch, dx.data(), dgamma.data(), dbeta.data());
}

}  // namespace detail

/// Batch norm of x (N, D) per feature: (x − mean)/√(var + eps)·gamma + beta.
/// training: batch mean and biased variance normalise, and running_mean/var
/// (if defined) become (1 − momentum)·running + momentum·batch statistic, with
/// the unbiased variance, in place. Otherwise running_mean/var normalise.
template <class T, class S, class SG, class SBeta, class SR, class B>
tensor<T, S, B> batch_norm(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma, const tensor<T, SBeta, B>& beta,
                           const tensor<T, SR, B>& running_mean, const tensor<T, SR, B>& running_var, bool training,
                           std::type_identity_t<T> momentum = T(0.1), std::type_identity_t<T> eps = T(1e-5)) {
  return detail::batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps).y;
}

}  // namespace moekit
