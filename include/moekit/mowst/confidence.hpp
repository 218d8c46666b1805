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
// ---- The hyper-network gate (gate_kind::hyper; the reference's `hypermlp`) ----
//
// Each node gets its own tiny gate 2 -> h -> 1 on D, generated from its own
// features x by a hypernetwork (h = gate_config::hidden, F = features):
//
//   P    = hyper(x)                               (n, 4h + 1)   mlp.hpp skeleton, F -> hyper_hidden -> 4h + 1
//   P    = [W1 | b1 | w2 | b2]                    W1 (n, 2, h) stored as (n, 2h), row 0 (the var
//                                                 coefficients) first; b1 (n, h); w2 (n, h); b2 (n)
//   a_i  = D_i · W1_i + b1_i                      (n, h)   D_i (2) times W1_i (2, h)
//   a_i  = relu(a_i)                              (n, h)   only with hyper_relu (the default)
//   C_i  = sigmoid(a_i · w2_i + b2_i)             (n)
//
// x may be a dense var (n, F) or a CSR matrix graph::csr<T, B> of sparse
// feature rows (mowst::sparse_rows): the hypernetwork's first layer then runs
// as an SpMM, with the same values and gradients. The hypernetwork uses the
// gate's dropout, batch_norm and seed; its depth and width are hyper_layers
// and hyper_hidden. The logits reach C only through D, as for the MLP gate.
//
// Differences from the reference (facebookresearch/mowst-gnn, `--original_data
// hypermlp`):
//  - one hypernetwork with a shared trunk and 4h + 1 outputs, where the
//    reference runs four separate MLPs (for W1, b1, w2, b2) over x: one pass
//    over the 1433-wide (Cora) features instead of four, and one first-layer
//    weight (F x hyper_hidden) instead of four; the generated parts differ
//    only in their output columns.
//  - hyper_relu = true puts a ReLU between the two generated layers; the
//    reference has none, so its per-node gate is affine in D (hyper_relu =
//    false reproduces that).
//  - one softmax of the weak logits, in training and at test (as above).
//  - initialisation: the last hypernetwork layer's columns that produce w2
//    and b2 start at zero (weights and biases), so every node's logit starts
//    at exactly 0 and C at 0.5, whatever the scale of x (raw bag-of-words
//    rows sum to tens; a product of two generated layers would otherwise
//    start at a random, possibly saturating, logit). The gradient of w2 is
//    a_i ≠ 0, so w2 leaves zero on the first step and W1, b1 learn from then
//    on (as with zero-initialised output layers elsewhere). This is our
//    choice, not taken from the reference.
//
//   mowst::confidence_gate<> hg(g, {.classes = 7, .features = 1433, .hidden = 64,
//                                   .kind = mowst::gate_kind::hyper});
//   auto c3 = hg(weak_logits, in.sparse_features);  // or t.input(in.features)
//
// Parameters: "mlp.*" for gate_kind::mlp, "hyper.*" for gate_kind::hyper
// (see mlp.hpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/constant.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../autograd/ops/softmax.hpp"
#include "../autograd/parameter_tree.hpp"
#include "../tensor/csr.hpp"
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

/// Which network maps D (and x) to the confidence logit.
enum class gate_kind {
  mlp,    // C = sigmoid(mlp(D or [D, x])): the reference's GateMLP
  hyper,  // C = sigmoid(per-node 2 -> h -> 1 gate on D, generated from x): `hypermlp`
};

struct gate_config {
  std::size_t classes = 0;         // K of the weak expert's logits
  std::size_t features = 0;        // node features F: appended to D (mlp), the hypernetwork's input (hyper)
  std::size_t hidden = 0, layers = 2;  // mlp: the gate MLP's width and depth; hyper: h, the generated gate's width
  double dropout = 0.5;
  bool batch_norm = true;
  bool detach_dispersion = true;   // the reference: no gradient from C into the weak expert
  std::uint64_t seed = 0;          // dropout stream
  gate_kind kind = gate_kind::mlp;
  std::size_t hyper_hidden = 64, hyper_layers = 2;  // the hypernetwork's width and depth (hyper only)
  bool hyper_relu = true;          // ReLU between the generated layers (false: the reference's affine gate)
};

template <class T = float, backend B = cpu>
class confidence_gate {
 public:
  using value_type = T;
  using output_type = var<T, shape<dyn>, B>;
  using mlp_type = mlp<T, B>;

  confidence_gate(rng& g, const gate_config& c) : config_(c) {
    if (c.classes < 2) throw value_error("confidence_gate: needs at least 2 classes");
    if (c.kind == gate_kind::mlp) {
      mlp_.emplace(g, mlp_config{.in = 2 + c.features, .hidden = c.hidden, .out = 1, .layers = c.layers,
                                 .dropout = c.dropout, .batch_norm = c.batch_norm, .seed = c.seed});
      return;
    }
    if (c.features == 0)
      throw value_error("confidence_gate: the hyper gate needs features > 0 (the hypernetwork's input)");
    if (c.hidden == 0) throw value_error("confidence_gate: the hyper gate needs hidden > 0 (the generated gate's width)");
    hyper_.emplace(g, mlp_config{.in = c.features, .hidden = c.hyper_hidden, .out = 4 * c.hidden + 1,
                                 .layers = c.hyper_layers, .dropout = c.dropout, .batch_norm = c.batch_norm,
                                 .seed = c.seed});
    zero_output_layer();
  }

  /// C from the weak expert's logits (n, K) alone: (n). Needs features == 0
  /// (and kind mlp).
  template <class S>
  output_type operator()(const var<T, S, B>& weak_logits) {
    if (hyper_) throw value_error("confidence_gate: the hyper gate needs the node features; pass them with the logits");
    if (config_.features != 0)
      throw value_error("confidence_gate: built for " + std::to_string(config_.features) +
                        " node features; pass them with the logits");
    return confidence(mlp_->operator()(features_of(weak_logits)));
  }
  /// C from the logits (n, K) and the node features x (n, features): (n).
  /// With kind mlp and features == 0, x is ignored.
  template <class S, class SX>
  output_type operator()(const var<T, S, B>& weak_logits, const var<T, SX, B>& x) {
    static_assert(SX::rank() == 2, "confidence_gate: node features must be (n, features)");
    if (!hyper_ && config_.features == 0) return (*this)(weak_logits);
    check_features(weak_logits.extent(0), x.extent(0), x.extent(1), weak_logits.shape().str(), x.shape().str());
    const var<T, shape<dyn, dyn>, B> xs = reshape(x, shape<dyn, dyn>{x.extent(0), x.extent(1)});  // (n, F)
    if (hyper_) return hyper_confidence(features_of(weak_logits), (*hyper_)(xs));
    return confidence(mlp_->operator()(concat<1>(features_of(weak_logits), xs)));
  }
  /// The same with x as CSR rows (n, features) (mowst::sparse_rows): the
  /// hypernetwork's first layer runs as an SpMM. Kind mlp with features > 0
  /// concatenates [D, x] and so needs x dense: a value_error here (the
  /// caller has the dense features; densifying per call would hide the cost);
  /// kind mlp with features == 0 ignores x.
  template <class S>
  output_type operator()(const var<T, S, B>& weak_logits, const graph::csr<T, B>& x) {
    if (!hyper_ && config_.features == 0) return (*this)(weak_logits);
    if (!hyper_)
      throw value_error("confidence_gate: the mlp gate concatenates [D, x] and needs dense node features, not " +
                        x.str() + "; pass them as a var, or use gate_kind::hyper");
    check_features(weak_logits.extent(0), x.rows(), x.cols(), weak_logits.shape().str(), x.str());
    return hyper_confidence(features_of(weak_logits), (*hyper_)(x));
  }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept {
    if (mlp_) mlp_->set_training(on);
    if (hyper_) hyper_->set_training(on);
  }
  const gate_config& config() const noexcept { return config_; }
  /// The hypernetwork, x (n, F) -> [W1 | b1 | w2 | b2] (n, 4h + 1); null for kind mlp.
  mlp_type* hypernetwork() noexcept { return hyper_ ? &*hyper_ : nullptr; }
  const mlp_type* hypernetwork() const noexcept { return hyper_ ? &*hyper_ : nullptr; }
  /// The gate MLP, D or [D, x] -> logit (n, 1); null for kind hyper.
  mlp_type* gate_mlp() noexcept { return mlp_ ? &*mlp_ : nullptr; }
  const mlp_type* gate_mlp() const noexcept { return mlp_ ? &*mlp_ : nullptr; }

  template <class V>
  void parameters(V&& visit) {
    if (hyper_) visit("hyper", *hyper_);
    else visit("mlp", *mlp_);
  }

 private:
  template <class S>
  var<T, shape<dyn, dyn>, B> features_of(const var<T, S, B>& logits) const {
    if (logits.extent(1) != config_.classes)
      throw shape_error("confidence_gate: logits " + logits.shape().str() + " for " +
                        std::to_string(config_.classes) + " classes");
    return dispersion(config_.detach_dispersion ? detach(logits) : logits);
  }
  void check_features(std::size_t n, std::size_t rows, std::size_t cols, const std::string& logits,
                      const std::string& x) const {
    if (cols != config_.features || rows != n)
      throw shape_error("confidence_gate: node features " + x + " for logits " + logits + " and " +
                        std::to_string(config_.features) + " features");
  }
  static output_type confidence(const var<T, shape<dyn, dyn>, B>& g) {  // (n, 1) -> (n)
    return reshape(sigmoid(g), shape<dyn>{g.extent(0)});
  }

  /// C from D (n, 2) and the hypernetwork's output P = [W1 | b1 | w2 | b2] (n, 4h + 1).
  output_type hyper_confidence(const var<T, shape<dyn, dyn>, B>& d, const var<T, shape<dyn, dyn>, B>& p) const {
    const std::size_t n = d.extent(0), h = config_.hidden;
    auto parts = split<1>(p, {h, h, h, h, std::size_t{1}});  // W1 row 0, W1 row 1, b1, w2: (n, h); b2: (n, 1)
    auto ds = split<1>(d, {std::size_t{1}, std::size_t{1}});  // var, ent: (n, 1) each
    const auto d_var = reshape(ds[0], shape<dyn>{n});         // (n)
    const auto d_ent = reshape(ds[1], shape<dyn>{n});         // (n)
    auto a = mul_cols(parts[0], d_var) + mul_cols(parts[1], d_ent) + parts[2];  // (n, h): D_i·W1_i + b1_i
    if (config_.hyper_relu) a = relu(a);                                        // (n, h)
    const auto logit = sum<1>(a * parts[3]) + reshape(parts[4], shape<dyn>{n});  // (n): a_i·w2_i + b2_i
    return sigmoid(logit);                                                        // (n)
  }

  /// Zeroes the columns of the hypernetwork's last layer (weight (in, 4h + 1)
  /// and bias (4h + 1)) that produce w2 and b2, in place and on any backend:
  /// p += p ⊙ (−mask), exact. C then starts at 0.5 (see the header).
  void zero_output_layer() {
    const std::size_t h = config_.hidden, out = 4 * h + 1;
    tensor<T, shape<dyn>, cpu> host(shape<dyn>{out});                // (4h + 1): −1 on the w2, b2 columns
    for (std::size_t j = 0; j < out; ++j) host[j] = j >= 3 * h ? T(-1) : T(0);
    const auto minus_mask = host.template to<B>();                   // (4h + 1)
    const std::string last = "linears." + std::to_string(hyper_->layers() - 1) + ".";
    visit_parameters(*hyper_, [&](const std::string& name, auto& prm) {
      auto& v = prm.value();
      if constexpr (std::remove_cvref_t<decltype(v)>::shape_type::rank() == 2) {
        if (name == last + "weight") add_into(v, mul_rows(v, minus_mask));  // (in, 4h + 1)
      } else {
        if (name == last + "bias") add_into(v, v * minus_mask);             // (4h + 1)
      }
    });
  }

  gate_config config_;
  std::optional<mlp_type> mlp_;    // kind mlp
  std::optional<mlp_type> hyper_;  // kind hyper
};

}  // namespace moekit::mowst
