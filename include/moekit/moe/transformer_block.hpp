// moekit/moe/transformer_block.hpp — a pre-norm transformer block whose FFN
// is a Mixture-of-Experts layer:
//
//   h = x + attention(LayerNorm(x))          (batch, seq, d)
//   y = h + MoE(LayerNorm(h))                the MoE on the (batch·seq, d) rows,
//                                            or on (batch, seq, d) if it routes by sequence
//
// or, with ffn_wiring::direct, y = FFN(h): the FFN normalises and adds any
// residual itself (coe::layer in the reference's convention normalises once
// and, without its outer residual, does not add h back); "norm2" is then not
// a parameter.
//
// Parameter names: "norm1.*", "attention.q_proj.weight", ..., "norm2.*",
// "moe.router.weight", "moe.experts.w1", ...
//
//   rng g(0);
//   moe::transformer_block<moe::token_choice_moe<>> blk(g, 64, 4, moe::make_gshard(g, {.d_model = 64, .d_ff = 256}));
//   auto y = blk(x);   // x (batch, seq, 64) -> (batch, seq, 64)
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/layout.hpp"
#include "../nn/attention.hpp"
#include "../nn/norm.hpp"

namespace moekit::moe {

/// How a transformer_block wires its FFN.
enum class ffn_wiring {
  pre_norm,  // y = h + FFN(LayerNorm(h))
  direct,    // y = FFN(h): the FFN owns its norm and residual
};

/// ffn(h) for h (batch, seq, d): an FFN that routes by sequence (declares
/// takes_sequences, e.g. uoe::uome) gets h itself, any other the
/// (batch·seq, d) rows, its output reshaped back.
template <class Ffn, class T, class S, class B>
var<T, S, B> apply_ffn(Ffn& ffn, const var<T, S, B>& h) {
  if constexpr (requires { Ffn::takes_sequences; }) {
    return ffn(h);
  } else {
    auto rows = reshape(h, shape<dyn, dyn>{h.extent(0) * h.extent(1), h.extent(2)});  // (batch·seq, d)
    return reshape(ffn(rows), h.shape());
  }
}

template <class Moe, class T = float, backend B = cpu>
class transformer_block {
 public:
  transformer_block(rng& g, std::size_t d_model, std::size_t heads, Moe moe, nn::attention_options o = {},
                    ffn_wiring w = ffn_wiring::pre_norm)
      : norm1_(d_model), attention_(g, d_model, heads, o), norm2_(d_model), moe_(std::move(moe)), wiring_(w) {}

  /// x (batch, seq, d) -> (batch, seq, d).
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x, const nn::attention_mask<B>& mask = {}) {
    static_assert(S::rank() == 3, "moe::transformer_block: x must have rank 3 (batch, seq, d_model)");
    const std::size_t d = attention_.d_model();
    if (x.extent(2) != d)
      throw shape_error("moe::transformer_block: x " + x.shape().str() + ": last extent differs from d_model " +
                        std::to_string(d));
    auto h = x + attention_(norm1_(x), mask);                                         // (batch, seq, d)
    return wiring_ == ffn_wiring::direct ? apply_ffn(moe_, h) : h + apply_ffn(moe_, norm2_(h));  // (batch, seq, d)
  }

  nn::multi_head_attention<dyn, dyn, T, B>& attention() noexcept { return attention_; }
  Moe& moe() noexcept { return moe_; }
  void train(bool on = true) { moe_.train(on); }

  template <class V>
  void parameters(V&& visit) {
    visit("norm1", norm1_);
    visit("attention", attention_);
    if (wiring_ == ffn_wiring::pre_norm) visit("norm2", norm2_);
    visit("moe", moe_);
  }

 private:
  nn::layer_norm<dyn, T, B> norm1_;
  nn::multi_head_attention<dyn, dyn, T, B> attention_;
  nn::layer_norm<dyn, T, B> norm2_;
  Moe moe_;
  ffn_wiring wiring_;
};

}  // namespace moekit::moe
