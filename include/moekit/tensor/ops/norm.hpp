// moekit/tensor/ops/norm.hpp — layer norm and RMS norm over the last axis of a
// tensor of any rank, with optional affine weights gamma (and beta) of the last
// extent. An undefined weight tensor means "no weight".
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>

#include "../tensor.hpp"

namespace moekit {

/// gamma/beta must be as long as the last extent of x; named so a failing
/// static_assert shows both numbers: `norm_weight_matches<512, 256>`.
template <std::size_t Features, std::size_t Length>
struct norm_weight_matches : std::bool_constant<Features == dyn || Length == dyn || Features == Length> {};

/// The shape of gamma and beta for inputs of shape S: (last extent).
template <class S>
using norm_weight_shape_t = shape<last_extent_v<S>>;

namespace detail {

/// What a norm's backward reads: one value per row of x's matrix view, (rows).
/// `mean` stays undefined for rms_norm.
template <class T, class B>
struct norm_stats {
  tensor<T, shape<dyn>, B> mean, rstd;
};
template <class T, class S, class B>
struct norm_output {
  tensor<T, S, B> y;  // same shape as x
  norm_stats<T, B> stats;
};

/// Checks an affine weight of a norm against x (an undefined weight passes).
template <class T, class SX, class SW, class B>
void check_norm_weight(const char* op, const char* name, const tensor<T, SX, B>& x, const tensor<T, SW, B>& w) {
  static_assert(SX::rank() >= 1, "layer_norm, rms_norm: x needs rank >= 1 (they normalise over the last axis)");
  static_assert(ranks_match<SW::rank(), 1>::value, "layer_norm, rms_norm: gamma and beta must have rank 1");
  static_assert(norm_weight_matches<last_extent_v<SX>, SW::static_extent(0)>::value,
                "layer_norm, rms_norm: gamma/beta length differs from the last extent of x");
  const std::size_t features = x.extent(SX::rank() - 1);
  if (w.defined() && w.extent(0) != features)
    shape_mismatch(op, x.shape().str(), (std::string(" with ") + name + " ").c_str(), w.shape().str(),
                   std::string(name) + " length " + std::to_string(w.extent(0)) + " differs from the last extent " +
                       std::to_string(features));
}

template <class T, class B>
tensor<T, shape<dyn>, B> row_stat(std::size_t rows) {
  return tensor<T, shape<dyn>, B>(shape<dyn>{rows});
}

template <class T, class S, class SG, class SBeta, class B>
norm_output<T, S, B> layer_norm_forward(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma,
                                        const tensor<T, SBeta, B>& beta, T eps) {
  check_norm_weight("layer_norm", "gamma", x, gamma);
  check_norm_weight("layer_norm", "beta", x, beta);
  const auto [rows, cols] = as_matrix(x.shape());
  norm_output<T, S, B> out{tensor<T, S, B>(x.shape()), {row_stat<T, B>(rows), row_stat<T, B>(rows)}};
  kernels<B>::layer_norm_rows(rows, cols, x.data(), gamma.data(), beta.data(), eps, out.y.data(),
                              out.stats.mean.data(), out.stats.rstd.data());
  return out;
}
/// Writes the gradients whose tensors are defined (dx, dgamma, dbeta); the others are skipped.
template <class T, class S, class SG, class SBeta, class B>
void layer_norm_backward(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma, const norm_stats<T, B>& stats,
                         const tensor<T, S, B>& dy, const tensor<T, S, B>& dx, const tensor<T, SG, B>& dgamma,
                         const tensor<T, SBeta, B>& dbeta) {
  const auto [rows, cols] = as_matrix(x.shape());
  kernels<B>::layer_norm_rows_backward(rows, cols, x.data(), gamma.data(), stats.mean.data(), stats.rstd.data(),
                                       dy.data(), dx.data(), dgamma.data(), dbeta.data());
}

template <class T, class S, class SG, class B>
norm_output<T, S, B> rms_norm_forward(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma, T eps) {
  check_norm_weight("rms_norm", "gamma", x, gamma);
  const auto [rows, cols] = as_matrix(x.shape());
  norm_output<T, S, B> out{tensor<T, S, B>(x.shape()), {{}, row_stat<T, B>(rows)}};
  kernels<B>::rms_norm_rows(rows, cols, x.data(), gamma.data(), eps, out.y.data(), out.stats.rstd.data());
  return out;
}
/// Writes the gradients whose tensors are defined (dx, dgamma).
template <class T, class S, class SG, class B>
void rms_norm_backward(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma, const norm_stats<T, B>& stats,
                       const tensor<T, S, B>& dy, const tensor<T, S, B>& dx, const tensor<T, SG, B>& dgamma) {
  const auto [rows, cols] = as_matrix(x.shape());
  kernels<B>::rms_norm_rows_backward(rows, cols, x.data(), gamma.data(), stats.rstd.data(), dy.data(), dx.data(),
                                     dgamma.data());
}

}  // namespace detail

/// (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance, as torch).
template <class T, class S, class SG, class SBeta, class B>
tensor<T, S, B> layer_norm(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma, const tensor<T, SBeta, B>& beta,
                           std::type_identity_t<T> eps = T(1e-5)) {
  return detail::layer_norm_forward(x, gamma, beta, eps).y;
}
/// Layer norm without affine weights.
template <class T, class S, class B>
tensor<T, S, B> layer_norm(const tensor<T, S, B>& x, std::type_identity_t<T> eps = T(1e-5)) {
  const tensor<T, norm_weight_shape_t<S>, B> none;
  return layer_norm(x, none, none, eps);
}

/// x / sqrt(mean(x²) + eps) * gamma over the last axis.
template <class T, class S, class SG, class B>
tensor<T, S, B> rms_norm(const tensor<T, S, B>& x, const tensor<T, SG, B>& gamma,
                         std::type_identity_t<T> eps = T(1e-6)) {
  return detail::rms_norm_forward(x, gamma, eps).y;
}
/// RMS norm without a weight.
template <class T, class S, class B>
tensor<T, S, B> rms_norm(const tensor<T, S, B>& x, std::type_identity_t<T> eps = T(1e-6)) {
  return rms_norm(x, tensor<T, norm_weight_shape_t<S>, B>{}, eps);
}

}  // namespace moekit
