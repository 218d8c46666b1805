// moekit/moe/expert_bank.hpp — expert specifications and their banks. A spec
// (ffn_expert, swiglu_expert) names the expert's shape; its bank<E, T, B>
// stacks E experts' weights along a leading expert axis and runs them on rows
// grouped by expert: one grouped GEMM per weight matrix, never a loop of
// per-token ops. Weights are stored (in, out) per expert, like nn::linear.
//
// A bank serves E router slots with G weight sets (G = E unless shared):
// share(slot_map) merges the slots mapped to one set into it (their mean;
// share(slot_map, slot_weights) their weighted mean, MC-SMoE's
// frequency-weighted merge), after which the bank holds G sets, reports G
// in its parameter count, runs each set once on the rows of all its slots
// and accumulates their gradients into it, and saves its map with its
// weights. The weight matrices are reachable by name (w1(), w2(), ...), and
// hidden_weights(visit) lists each with the axis of its hidden units (what a
// neuron permutation reorders).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../tensor/ops/cast.hpp"
#include "../autograd/ops/grouped.hpp"
#include "../autograd/parameter.hpp"
#include "../nn/init.hpp"
#include "../tensor/ops/fast_activation.hpp"
#include "../tensor/ops/index.hpp"
#include "slot_map.hpp"

namespace moekit::moe {

/// Activation of an FFN expert.
enum class activation { gelu, relu, silu };

namespace detail {
/// An activation's forward and backward functors: the vectorisable forms
/// (fast_activation.hpp), since the activation runs over every expert row.
template <activation A>
struct activation_fn {
  static constexpr const char* name = "gelu";
  using forward = moekit::fn::gelu_fast;
  using backward = moekit::fn::gelu_fast_backward;
};
template <>
struct activation_fn<activation::silu> {
  static constexpr const char* name = "silu";
  using forward = moekit::fn::silu_fast;
  using backward = moekit::fn::silu_fast_backward;
};
template <>
struct activation_fn<activation::relu> {
  static constexpr const char* name = "relu";
  using forward = moekit::fn::relu;
  using backward = moekit::fn::relu_backward;
};

template <activation A, class V>
V activate(const V& x) {
  using F = activation_fn<A>;
  return moekit::detail::unary_from_input(F::name, x, typename F::forward{}, typename F::backward{});
}
template <class V>
V activate(activation a, const V& x) {
  switch (a) {
    case activation::relu: return activate<activation::relu>(x);
    case activation::silu: return activate<activation::silu>(x);
    case activation::gelu: break;
  }
  return activate<activation::gelu>(x);
}

/// act(h + b) per group when the expert has biases (one fused pass), else
/// act(h): for an h that is not one grouped GEMM (a low-rank product, say).
template <activation A, bool Bias, class H, class V, class B>
H bias_activate(const H& h, const V& b, const group_offsets<B>& offsets) {
  using F = activation_fn<A>;
  if constexpr (Bias) return grouped_bias_activation(h, b, offsets, typename F::forward{}, typename F::backward{});
  else return activate<A>(h);
}

/// act(x·W1_g + b1_g)·W2_g per group (without biases act(x·W1_g)·W2_g): one
/// op whose backward applies the activation's derivative in the output pass
/// of the GEMM that gives the hidden gradient.
template <activation A, bool Bias, class X, class W1, class V, class W2, class B>
auto ffn(const X& x, const W1& w1, const V& b1, const W2& w2, const group_offsets<B>& offsets) {
  using F = activation_fn<A>;
  if constexpr (Bias) return grouped_ffn(x, w1, b1, w2, offsets, typename F::forward{}, typename F::backward{});
  else return grouped_ffn(x, w1, w2, offsets, typename F::forward{}, typename F::backward{});
}

/// Regroups every stacked parameter of `bank` (leading axis: weight set) from
/// the sets of `current` to those of `next` (both over the same slots): new
/// set g is the weighted mean Σ_{s→g} w_s·W_{current(s)} / Σ_{s→g} w_s over
/// the slots s that `next` maps to g, one weight per slot (finite, >= 0;
/// value_error otherwise). A set whose slots' weights sum to 0 takes their
/// plain mean (as if all its weights were equal). Equal weights: the mean.
template <class Bank, class B>
void share_weight_sets(Bank& bank, slot_map<B>& current, const slot_map<B>& next, const std::vector<double>& weights) {
  if (next.slots() != current.slots())
    throw value_error("expert bank: share: the map has " + std::to_string(next.slots()) + " slots, the bank " +
                      std::to_string(current.slots()));
  if (weights.size() != next.slots())
    throw value_error("expert bank: share: " + std::to_string(weights.size()) + " slot weights for " +
                      std::to_string(next.slots()) + " slots");
  for (std::size_t s = 0; s < weights.size(); ++s)
    if (!std::isfinite(weights[s]) || weights[s] < 0)
      throw value_error("expert bank: share: slot " + std::to_string(s) + " has weight " + std::to_string(weights[s]) +
                        " (weights must be finite and >= 0)");
  const auto to = next.host();
  std::vector<std::size_t> members(next.weight_sets(), 0);
  std::vector<double> total(next.weight_sets(), 0.0);
  for (std::size_t s = 0; s < to.size(); ++s) {
    ++members[static_cast<std::size_t>(to[s])];
    total[static_cast<std::size_t>(to[s])] += weights[s];
  }
  auto scale_host = tensor<double, shape<dyn>, cpu>(shape<dyn>{to.size()});
  for (std::size_t s = 0; s < to.size(); ++s) {
    const auto g = static_cast<std::size_t>(to[s]);
    scale_host[s] = total[g] > 0 ? weights[s] / total[g] : 1.0 / static_cast<double>(members[g]);
  }
  bank.parameters([&](std::string_view, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    using T = typename P::value_type;
    auto ext = p.shape().extents();
    const std::size_t inner = p.size() / ext[0];
    auto per_slot = gather_rows(p.value().reshape(shape<dyn, dyn>{ext[0], inner}), current.map());  // (E, inner)
    auto scale = moekit::detail::to_backend<B>(cast<T>(scale_host));                                 // (E)
    auto merged = scatter_add_rows(per_slot, next.map(), next.weight_sets(), scale);                 // (G, inner)
    ext[0] = next.weight_sets();
    p = P(merged.reshape(P::shape_type::from_extents(ext, "expert bank")));
  });
  current = next;
}

/// Stacked (E, in, out) weights drawn like nn::linear's PyTorch default.
template <class S, class T, class B>
parameter<T, S, B> stacked_weight(rng& g, std::size_t e, std::size_t in, std::size_t out) {
  auto s = S::from_extents(std::array{e, in, out}, "expert_bank");
  return parameter<T, S, B>(nn::init_weight<T, B>(g, s, in, out, nn::init::pytorch_default));
}
template <class S, class T, class B>
parameter<T, S, B> stacked_bias(rng& g, std::size_t e, std::size_t in, std::size_t out) {
  auto s = S::from_extents(std::array{e, out}, "expert_bank");
  return parameter<T, S, B>(nn::init_bias<T, B>(g, s, in, nn::init::pytorch_default));
}
}  // namespace detail

/// x -> act(x·W1 + b1)·W2 + b2, per expert. D, F may be dyn (sizes at construction).
template <std::size_t D, std::size_t F, activation Act = activation::gelu, bool Bias = true>
struct ffn_expert {
  static constexpr std::size_t d_model = D, d_ff = F;
  static constexpr activation act = Act;
  static constexpr std::size_t matrices = 2;

  template <std::size_t E, class T, backend B>
  class bank {
   public:
    /// Axes of the hidden units in w1 (G, D, F), b1 (G, F) and w2 (G, F, D).
    static constexpr std::size_t w1_hidden_axis = 2, b1_hidden_axis = 1, w2_hidden_axis = 1;
    static constexpr activation act = Act;  // what activation matching recomputes

    explicit bank(rng& g, std::size_t e = E, std::size_t d = D, std::size_t f = F)
        : w1_(detail::stacked_weight<shape<dyn, D, F>, T, B>(g, e, d, f)),
          w2_(detail::stacked_weight<shape<dyn, F, D>, T, B>(g, e, f, d)),
          slots_(e) {
      if constexpr (Bias) {
        b1_ = detail::stacked_bias<shape<dyn, F>, T, B>(g, e, d, f);
        b2_ = detail::stacked_bias<shape<dyn, D>, T, B>(g, e, f, d);
      }
    }

    /// rows (A, D) grouped by weight set -> (A, D); offsets (G + 1) on B.
    template <class S>
    auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
      auto y = detail::ffn<Act, Bias>(rows, w1_, b1_, w2_, offsets);  // (A, D): act(rows·W1 + b1)·W2
      if constexpr (Bias) y = add_grouped_rows(y, b2_, offsets);
      return y;
    }

    std::size_t experts() const noexcept { return slots_.slots(); }         // E, router slots
    std::size_t weight_sets() const noexcept { return w1_.extent(0); }     // G
    const slot_map<B>& slots() const noexcept { return slots_; }
    /// Serves the slots through `m`: slots mapped to one set share its weights
    /// (their mean; with `slot_weights`, one per slot, their weighted mean).
    void share(const slot_map<B>& m) { share(m, std::vector<double>(m.slots(), 1.0)); }
    void share(const slot_map<B>& m, const std::vector<double>& slot_weights) {
      detail::share_weight_sets(*this, slots_, m, slot_weights);
    }

    auto& w1() noexcept { return w1_; }  // (G, D, F)
    auto& b1() noexcept { return b1_; }  // (G, F), unset without biases
    auto& w2() noexcept { return w2_; }  // (G, F, D)
    auto& b2() noexcept { return b2_; }  // (G, D), unset without biases

    /// visit(name, parameter, hidden axis) for every matrix with hidden units.
    template <class V>
    void hidden_weights(V&& visit) {
      visit("w1", w1_, w1_hidden_axis);
      if constexpr (Bias) visit("b1", b1_, b1_hidden_axis);
      visit("w2", w2_, w2_hidden_axis);
    }

    template <class V>
    void parameters(V&& visit) {
      visit("w1", w1_);
      if constexpr (Bias) visit("b1", b1_);
      visit("w2", w2_);
      if constexpr (Bias) visit("b2", b2_);
    }
    template <class V>
    void buffers(V&& visit) {
      if (!slots_.identity()) visit("slot_map", slots_.map());
    }

   private:
    parameter<T, shape<dyn, D, F>, B> w1_;  // (G, D, F)
    parameter<T, shape<dyn, F>, B> b1_;     // (G, F)
    parameter<T, shape<dyn, F, D>, B> w2_;  // (G, F, D)
    parameter<T, shape<dyn, D>, B> b2_;     // (G, D)
    slot_map<B> slots_;                     // (E) slot -> weight set
  };
};

/// x -> (silu(x·Wg) ⊙ x·Wu)·Wd per expert (LLaMA/Mixtral-style, no biases).
template <std::size_t D, std::size_t F>
struct swiglu_expert {
  static constexpr std::size_t d_model = D, d_ff = F;
  static constexpr std::size_t matrices = 3;

  template <std::size_t E, class T, backend B>
  class bank {
   public:
    /// Axes of the hidden units in w_gate, w_up (G, D, F) and w_down (G, F, D).
    static constexpr std::size_t w_gate_hidden_axis = 2, w_up_hidden_axis = 2, w_down_hidden_axis = 1;

    explicit bank(rng& g, std::size_t e = E, std::size_t d = D, std::size_t f = F)
        : w_gate_(detail::stacked_weight<shape<dyn, D, F>, T, B>(g, e, d, f)),
          w_up_(detail::stacked_weight<shape<dyn, D, F>, T, B>(g, e, d, f)),
          w_down_(detail::stacked_weight<shape<dyn, F, D>, T, B>(g, e, f, d)),
          slots_(e) {}

    template <class S>
    auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
      auto gate = detail::activate<activation::silu>(grouped_matmul(rows, w_gate_, offsets));  // (A, F)
      auto up = grouped_matmul(rows, w_up_, offsets);                                          // (A, F)
      return grouped_matmul(gate * up, w_down_, offsets);                                      // (A, D)
    }

    std::size_t experts() const noexcept { return slots_.slots(); }          // E, router slots
    std::size_t weight_sets() const noexcept { return w_gate_.extent(0); }  // G
    const slot_map<B>& slots() const noexcept { return slots_; }
    /// Serves the slots through `m`: slots mapped to one set share its weights
    /// (their mean; with `slot_weights`, one per slot, their weighted mean).
    void share(const slot_map<B>& m) { share(m, std::vector<double>(m.slots(), 1.0)); }
    void share(const slot_map<B>& m, const std::vector<double>& slot_weights) {
      detail::share_weight_sets(*this, slots_, m, slot_weights);
    }

    auto& w_gate() noexcept { return w_gate_; }  // (G, D, F)
    auto& w_up() noexcept { return w_up_; }      // (G, D, F)
    auto& w_down() noexcept { return w_down_; }  // (G, F, D)

    /// visit(name, parameter, hidden axis) for every matrix.
    template <class V>
    void hidden_weights(V&& visit) {
      visit("w_gate", w_gate_, w_gate_hidden_axis);
      visit("w_up", w_up_, w_up_hidden_axis);
      visit("w_down", w_down_, w_down_hidden_axis);
    }

    template <class V>
    void parameters(V&& visit) {
      visit("w_gate", w_gate_);
      visit("w_up", w_up_);
      visit("w_down", w_down_);
    }
    template <class V>
    void buffers(V&& visit) {
      if (!slots_.identity()) visit("slot_map", slots_.map());
    }

   private:
    parameter<T, shape<dyn, D, F>, B> w_gate_;  // (G, D, F)
    parameter<T, shape<dyn, D, F>, B> w_up_;    // (G, D, F)
    parameter<T, shape<dyn, F, D>, B> w_down_;  // (G, F, D)
    slot_map<B> slots_;                         // (E) slot -> weight set
  };
};

}  // namespace moekit::moe
