// moekit/mowst/confidence.hpp — Mowst's confidence in the weak expert
// (reference: train_test_engine.py compute_confidence):
//
//   p   = softmax(z_weak)                         (n, K)
//   var = Var_k(p) / Var(one-hot_K)               biased variance; 1 for one-hot, 0 for uniform
//   ent = 1 − H(p) / log K                        1 for one-hot, 0 for uniform
//   D   = [var, ent]                              (n, 2): the dispersion features
//   C   = sigmoid(gate_mlp(D  or  [D, x]))        (n): confidence, in (0, 1)
//
// The gate is the MLP skeleton of mlp.hpp with one output. dispersion() takes
// the weak expert's *logits* and applies the one softmax itself, in training
// and at test time alike (the reference applies it a second time at test
// time, to probabilities: not copied). H is computed as −Σ p·log_softmax(z),
// which stays finite for a one-hot p (0·log 0 never appears).
//
// Gradients: the reference computes D under no_grad, so only the gate learns
// from C (gate_config::detach_dispersion = true, the default). With false,
// the gradient of C also reaches the weak expert's logits through D.
//
//   mowst::confidence_gate<> gate(g, {.classes = 7, .hidden = 64, .layers = 2});
//   auto c = gate(weak_logits);            // (n) in (0, 1)
//   auto c2 = gate2(weak_logits, t.input(x));  // with .features = x's width
//
// Parameters: "mlp.*" (see mlp.hpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/constant.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../autograd/ops/softmax.hpp"
#include "mlp.hpp"

namespace moekit::mowst {

namespace detail {
/// (n) -> (n, 1).
/// A rank-1 var as shape<dyn> (a reshape only when its shape type differs).
template <class T, class S, class B>
var<T, shape<dyn>, B> as_vector(const var<T, S, B>& x) {
  if constexpr (std::is_same_v<S, shape<dyn>>) return x;
  else return reshape(x, shape<dyn>{x.extent(0)});
}
template <class T, class S, class B>
var<T, shape<dyn, dyn>, B> as_column(const var<T, S, B>& x) {
  return reshape(x, shape<dyn, dyn>{x.extent(0), 1});
}
}  // namespace detail

/// Normalised variance of softmax(logits) per row: Var_k(p) (biased) divided
/// by (K − 1)/K², the variance of a one-hot row. (n, K) -> (n).
template <class T, class S, class B>
var<T, shape<dyn>, B> normalized_variance(const var<T, S, B>& logits) {
  static_assert(S::rank() == 2, "normalized_variance: logits must be (n, classes)");
  const std::size_t k = logits.extent(1);
  if (k < 2) throw shape_error("normalized_variance: logits " + logits.shape().str() + " need at least 2 classes");
  auto p = softmax(logits);                       // (n, K)
  auto centred = sub_cols(p, mean<1>(p));         // (n, K)
  auto v = mean<1>(centred * centred);            // (n)
  const T kk = static_cast<T>(k);
  return detail::as_vector(v * (kk * kk / (kk - T(1))));
}

/// 1 − H(softmax(logits)) / log K per row: (n, K) -> (n).
template <class T, class S, class B>
var<T, shape<dyn>, B> negative_entropy(const var<T, S, B>& logits) {
  static_assert(S::rank() == 2, "negative_entropy: logits must be (n, classes)");
  const std::size_t k = logits.extent(1);
  if (k < 2) throw shape_error("negative_entropy: logits " + logits.shape().str() + " need at least 2 classes");
  auto h = -sum<1>(softmax(logits) * log_softmax(logits));  // (n), in [0, log K]
  return detail::as_vector(T(1) - h * (T(1) / static_cast<T>(std::log(static_cast<double>(k)))));
}

/// The dispersion features D = [normalized_variance, negative_entropy] of
/// the weak expert's logits: (n, K) -> (n, 2).
template <class T, class S, class B>
var<T, shape<dyn, dyn>, B> dispersion(const var<T, S, B>& logits) {
  static_assert(S::rank() == 2, "dispersion: logits must be (n, classes)");
  if (logits.extent(1) < 2) throw shape_error("dispersion: logits " + logits.shape().str() + " need at least 2 classes");
  return concat<1>(detail::as_column(normalized_variance(logits)), detail::as_column(negative_entropy(logits)));
}

struct gate_config {
  std::size_t classes = 0;         // K of the weak expert's logits
  std::size_t features = 0;        // node features appended to D (0: the gate sees D only)
  std::size_t hidden = 0, layers = 2;
  double dropout = 0.5;
  bool batch_norm = true;
  bool detach_dispersion = true;   // the reference: no gradient from C into the weak expert
  std::uint64_t seed = 0;          // dropout stream
};

template <class T = float, backend B = cpu>
class confidence_gate {
 public:
  using value_type = T;
  using output_type = var<T, shape<dyn>, B>;

  confidence_gate(rng& g, const gate_config& c)
      : config_(c),
        mlp_(g, {.in = 2 + c.features, .hidden = c.hidden, .out = 1, .layers = c.layers, .dropout = c.dropout,
                 .batch_norm = c.batch_norm, .seed = c.seed}) {
    if (c.classes < 2) throw value_error("confidence_gate: needs at least 2 classes");
  }

  /// C from the weak expert's logits (n, K) alone: (n). Needs features == 0.
  template <class S>
  output_type operator()(const var<T, S, B>& weak_logits) {
    if (config_.features != 0)
      throw value_error("confidence_gate: built for " + std::to_string(config_.features) +
                        " node features; pass them with the logits");
    return confidence(mlp_(features_of(weak_logits)));
  }
  /// C from the logits (n, K) and the node features x (n, features): (n).
  template <class S, class SX>
  output_type operator()(const var<T, S, B>& weak_logits, const var<T, SX, B>& x) {
    if (config_.features == 0) return (*this)(weak_logits);
    if (x.extent(1) != config_.features || x.extent(0) != weak_logits.extent(0))
      throw shape_error("confidence_gate: node features " + x.shape().str() + " for logits " +
                        weak_logits.shape().str() + " and " + std::to_string(config_.features) + " features");
    const var<T, shape<dyn, dyn>, B> xs = reshape(x, shape<dyn, dyn>{x.extent(0), x.extent(1)});
    return confidence(mlp_(concat<1>(features_of(weak_logits), xs)));
  }

  void train() noexcept { mlp_.train(); }
  void eval() noexcept { mlp_.eval(); }
  void set_training(bool on) noexcept { mlp_.set_training(on); }
  const gate_config& config() const noexcept { return config_; }

  template <class V>
  void parameters(V&& visit) {
    visit("mlp", mlp_);
  }

 private:
  template <class S>
  var<T, shape<dyn, dyn>, B> features_of(const var<T, S, B>& logits) const {
    if (logits.extent(1) != config_.classes)
      throw shape_error("confidence_gate: logits " + logits.shape().str() + " for " +
                        std::to_string(config_.classes) + " classes");
    return dispersion(config_.detach_dispersion ? detach(logits) : logits);
  }
  static output_type confidence(const var<T, shape<dyn, dyn>, B>& g) {  // (n, 1) -> (n)
    return reshape(sigmoid(g), shape<dyn>{g.extent(0)});
  }

  gate_config config_;
  mlp<T, B> mlp_;
};

}  // namespace moekit::mowst
