// moekit/uoe/block.hpp — the UoE transformer block: selective multi-head
// attention and an FFN (a UoME, or any FFN moe::transformer_block takes),
// pre-norm:
//
//   h = x + SMHA(LayerNorm(x))       (batch, seq, d)
//   y = h + FFN(LayerNorm(h))        (batch, seq, d)
//
// Parameter names: "norm1.*", "attention.*" (uoe::smha's), "norm2.*", "moe.*"
// (the FFN's, named as in moe::transformer_block).
//
//   rng g(0);
//   uoe::block<uoe::uome<>> blk(g, {.d_model = 64, .heads = 4, .causal = true, .rope = true},
//                               uoe::uome<>(g, {.d_model = 64, .d_ff = 256, .experts = 4}));
//   auto y = blk(x);   // x (batch, seq, 64) -> (batch, seq, 64)
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "../moe/transformer_block.hpp"
#include "../nn/norm.hpp"
#include "smha.hpp"

namespace moekit::uoe {

template <class Ffn, class T = float, backend B = cpu>
class block {
 public:
  block(rng& g, const smha_options& attention, Ffn ffn)
      : norm1_(attention.d_model), attention_(g, attention), norm2_(attention.d_model), ffn_(std::move(ffn)) {}

  /// x (batch, seq, d) -> (batch, seq, d); mask: key_padding and/or causal.
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x, const attention_mask<B>& mask = {}) {
    static_assert(S::rank() == 3, "uoe::block: x must have rank 3 (batch, seq, d_model)");
    auto h = x + attention_(norm1_(x), mask);          // (batch, seq, d)
    return h + moe::apply_ffn(ffn_, norm2_(h));        // (batch, seq, d)
  }

  smha<T, B>& attention() noexcept { return attention_; }
  Ffn& moe() noexcept { return ffn_; }
  void train(bool on = true) { ffn_.train(on); }

  template <class V>
  void parameters(V&& visit) {
    visit("norm1", norm1_);
    visit("attention", attention_);
    visit("norm2", norm2_);
    visit("moe", ffn_);
  }

 private:
  nn::layer_norm<dyn, T, B> norm1_;
  smha<T, B> attention_;
  nn::layer_norm<dyn, T, B> norm2_;
  Ffn ffn_;
};

}  // namespace moekit::uoe
