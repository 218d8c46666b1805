// moekit/nn/batch_norm.hpp — batch_norm1d over (N, D) inputs, exactly as
// torch.nn.BatchNorm1d: in training mode the batch statistics normalise
// (biased variance) and running_mean/running_var move towards them with
// momentum 0.1 using the unbiased variance; in eval mode the running
// statistics normalise. Layers start in training mode.
//
// Running statistics are buffers, not parameters: optimizers must not touch
// them, so parameters() lists only "weight" and "bias". buffers(visit) lists
// "running_mean" and "running_var" (torch's num_batches_tracked is not kept);
// visit_buffers(model, f) walks a whole model for them, so a checkpoint saves
// parameters and buffers under their dotted paths as PyTorch does
// ("0.running_mean").
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "../autograd/ops/batch_norm.hpp"
#include "../autograd/parameter.hpp"
#include "../tensor/ops/creation.hpp"
#include "layer.hpp"

namespace moekit::nn {

template <std::size_t D, class T = float, backend B = cpu>
class batch_norm1d {
 public:
  explicit batch_norm1d(std::size_t d = D, T eps = T(1e-5), T momentum = T(0.1), bool affine = true)
      : running_mean_(zeros<T, B>(make(d))), running_var_(ones<T, B>(make(d))), eps_(eps), momentum_(momentum) {
    if (affine) {
      gamma_ = parameter<T, shape<D>, B>(ones<T, B>(make(d)));
      beta_ = parameter<T, shape<D>, B>(zeros<T, B>(make(d)));
    }
  }

  /// (N, D) -> (N, D); in training mode also updates the running statistics.
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) {
    return moekit::batch_norm(x, gamma_, beta_, running_mean_, running_var_, training_, momentum_, eps_);
  }

  void train() noexcept { training_ = true; }
  void eval() noexcept { training_ = false; }
  void set_training(bool on) noexcept { training_ = on; }
  bool training() const noexcept { return training_; }
  bool affine() const noexcept { return gamma_.value().defined(); }

  parameter<T, shape<D>, B>& weight() noexcept { return gamma_; }
  parameter<T, shape<D>, B>& bias() noexcept { return beta_; }
  const tensor<T, shape<D>, B>& running_mean() const noexcept { return running_mean_; }
  const tensor<T, shape<D>, B>& running_var() const noexcept { return running_var_; }

  template <class V>
  void parameters(V&& visit) {
    if (affine()) visit("weight", gamma_), visit("bias", beta_);
  }
  /// The running statistics (loaders write into them in place).
  template <class V>
  void buffers(V&& visit) {
    visit("running_mean", running_mean_);
    visit("running_var", running_var_);
  }

 private:
  static shape<D> make(std::size_t d) { return shape<D>::from_extents(std::array{d}, "batch_norm1d"); }

  parameter<T, shape<D>, B> gamma_;        // (D), "weight" as in PyTorch; undefined without affine
  parameter<T, shape<D>, B> beta_;         // (D), "bias"
  tensor<T, shape<D>, B> running_mean_;    // (D), starts at 0
  tensor<T, shape<D>, B> running_var_;     // (D), starts at 1
  T eps_, momentum_;
  bool training_ = true;
};

}  // namespace moekit::nn
