// moekit/nn/norm.hpp — normalisation layers over the last axis: layer_norm
// (γ = 1, β = 0 at start, like torch.nn.LayerNorm) and rms_norm (γ = 1).
// batch_norm1d lives in batch_norm.hpp.
#pragma once

#include <string>

#include "../autograd/ops/norm.hpp"
#include "../autograd/parameter.hpp"
#include "../tensor/ops/creation.hpp"

namespace moekit::nn {

template <std::size_t D, class T = float, backend B = cpu>
class layer_norm {
 public:
  explicit layer_norm(std::size_t d = D, T eps = T(1e-5), bool affine = true) : eps_(eps) {
    if (affine) {
      gamma_ = parameter<T, shape<D>, B>(ones<T, B>(make(d)));
      beta_ = parameter<T, shape<D>, B>(zeros<T, B>(make(d)));
    }
  }

  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) const {
    return affine() ? moekit::layer_norm(x, gamma_, beta_, eps_) : moekit::layer_norm(x, eps_);
  }

  bool affine() const noexcept { return gamma_.value().defined(); }

  template <class V>
  void parameters(V&& visit) {
    if (affine()) visit("weight", gamma_), visit("bias", beta_);
  }

 private:
  static shape<D> make(std::size_t d) { return shape<D>::from_extents(std::array{d}, "layer_norm"); }
  parameter<T, shape<D>, B> gamma_;  // (D), "weight" as in PyTorch
  parameter<T, shape<D>, B> beta_;   // (D), "bias"
  T eps_;
};

template <std::size_t D, class T = float, backend B = cpu>
class rms_norm {
 public:
  explicit rms_norm(std::size_t d = D, T eps = T(1e-6))
      : gamma_(ones<T, B>(shape<D>::from_extents(std::array{d}, "rms_norm"))), eps_(eps) {}

  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) const {
    return moekit::rms_norm(x, gamma_, eps_);
  }

  template <class V>
  void parameters(V&& visit) {
    visit("weight", gamma_);
  }

 private:
  parameter<T, shape<D>, B> gamma_;  // (D)
  T eps_;
};

}  // namespace moekit::nn
