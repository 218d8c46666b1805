// moekit/moe/expert_bank.hpp — expert specifications and their banks. A spec
// (ffn_expert, swiglu_expert) names the expert's shape; its bank<E, T, B>
// stacks E experts' weights along a leading expert axis and runs them on rows
// grouped by expert: one grouped GEMM per weight matrix, never a loop of
// per-token ops. Weights are stored (in, out) per expert, like nn::linear.
#pragma once

#include <cmath>
#include <cstddef>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/grouped.hpp"
#include "../autograd/parameter.hpp"
#include "../nn/init.hpp"
#include "../tensor/ops/fast_activation.hpp"

namespace moekit::moe {

/// Activation of an FFN expert.
enum class activation { gelu, relu, silu };

namespace detail {
/// An activation's forward and backward functors: the vectorisable forms
/// (fast_activation.hpp), since the activation runs over every expert row.
template <activation A>
struct activation_fn {
  static constexpr const char* name = "gelu";
  using forward = fn::gelu_fast;
  using backward = fn::gelu_fast_backward;
};
template <>
struct activation_fn<activation::silu> {
  static constexpr const char* name = "silu";
  using forward = fn::silu_fast;
  using backward = fn::silu_fast_backward;
};
template <>
struct activation_fn<activation::relu> {
  static constexpr const char* name = "relu";
  using forward = fn::relu;
  using backward = fn::relu_backward;
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

/// act(h + b) per group when the expert has biases (one fused pass), else act(h).
template <activation A, bool Bias, class H, class V, class B>
H bias_activate(const H& h, const V& b, const group_offsets<B>& offsets) {
  using F = activation_fn<A>;
  if constexpr (Bias) return grouped_bias_activation(h, b, offsets, typename F::forward{}, typename F::backward{});
  else return activate<A>(h);
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
    explicit bank(rng& g, std::size_t e = E, std::size_t d = D, std::size_t f = F)
        : w1_(detail::stacked_weight<shape<E, D, F>, T, B>(g, e, d, f)),
          w2_(detail::stacked_weight<shape<E, F, D>, T, B>(g, e, f, d)) {
      if constexpr (Bias) {
        b1_ = detail::stacked_bias<shape<E, F>, T, B>(g, e, d, f);
        b2_ = detail::stacked_bias<shape<E, D>, T, B>(g, e, f, d);
      }
    }

    /// rows (A, D) grouped by expert -> (A, D); offsets (E + 1) on B.
    template <class S>
    auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
      auto h = detail::bias_activate<Act, Bias>(grouped_matmul(rows, w1_, offsets), b1_, offsets);  // (A, F)
      auto y = grouped_matmul(h, w2_, offsets);                                                    // (A, D)
      if constexpr (Bias) y = add_grouped_rows(y, b2_, offsets);
      return y;
    }

    std::size_t experts() const noexcept { return w1_.extent(0); }

    template <class V>
    void parameters(V&& visit) {
      visit("w1", w1_);
      if constexpr (Bias) visit("b1", b1_);
      visit("w2", w2_);
      if constexpr (Bias) visit("b2", b2_);
    }

   private:
    parameter<T, shape<E, D, F>, B> w1_;  // (E, D, F)
    parameter<T, shape<E, F>, B> b1_;     // (E, F)
    parameter<T, shape<E, F, D>, B> w2_;  // (E, F, D)
    parameter<T, shape<E, D>, B> b2_;     // (E, D)
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
    explicit bank(rng& g, std::size_t e = E, std::size_t d = D, std::size_t f = F)
        : w_gate_(detail::stacked_weight<shape<E, D, F>, T, B>(g, e, d, f)),
          w_up_(detail::stacked_weight<shape<E, D, F>, T, B>(g, e, d, f)),
          w_down_(detail::stacked_weight<shape<E, F, D>, T, B>(g, e, f, d)) {}

    template <class S>
    auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
      auto gate = detail::activate<activation::silu>(grouped_matmul(rows, w_gate_, offsets));  // (A, F)
      auto up = grouped_matmul(rows, w_up_, offsets);                                          // (A, F)
      return grouped_matmul(gate * up, w_down_, offsets);                                      // (A, D)
    }

    std::size_t experts() const noexcept { return w_gate_.extent(0); }

    template <class V>
    void parameters(V&& visit) {
      visit("w_gate", w_gate_);
      visit("w_up", w_up_);
      visit("w_down", w_down_);
    }

   private:
    parameter<T, shape<E, D, F>, B> w_gate_;  // (E, D, F)
    parameter<T, shape<E, D, F>, B> w_up_;    // (E, D, F)
    parameter<T, shape<E, F, D>, B> w_down_;  // (E, F, D)
  };
};

}  // namespace moekit::moe
