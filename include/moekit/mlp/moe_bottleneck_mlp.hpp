// moekit/mlp/moe_bottleneck_mlp.hpp — the bottleneck MLP with every block's
// FFN replaced by a Mixture-of-Experts layer (a moe::layer, e.g. one of
// moe/baselines.hpp), the rest as bottleneck_mlp:
//
//   h = stem(x)                          Linear(in → w)
//   B times: h = h + MoE(LayerNorm(h))   pre-norm residual; the MoE maps (N, w) -> (N, w)
//   logits = head(h)                     Linear(w → classes)
//
// The MoE of each block comes from make(g, w, e·w): the dense FFN width it
// stands in for is the config's expansion times the width, so a baseline built
// from it has the dense model's active expert weights. Parameter names:
// "stem.*", "blocks.<i>.norm.*", "blocks.<i>.moe.router.weight",
// "blocks.<i>.moe.experts.w1", ..., "head.*".
//
//   rng g(0);
//   mlp::moe_bottleneck_mlp<moe::token_choice_moe<>> m(g, {.in = 784, .width = 128, .blocks = 2, .classes = 10},
//       [](rng& g, std::size_t d, std::size_t ff) { return moe::make_switch(g, {.d_model = d, .d_ff = ff}); });
#pragma once

#include <cstddef>
#include <utility>

#include "../nn/linear.hpp"
#include "../nn/norm.hpp"
#include "../nn/sequential.hpp"
#include "config.hpp"

namespace moekit::mlp {

/// x + moe(LayerNorm(x)) over rows of width d; parameters "norm.*", "moe.*".
template <class Moe, class T = float, backend B = cpu>
class moe_block {
 public:
  moe_block(std::size_t d, Moe moe) : norm_(d), moe_(std::move(moe)) {}

  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) {
    return x + moe_(norm_(x));  // (N, d)
  }

  Moe& moe() noexcept { return moe_; }

  template <class V>
  void parameters(V&& visit) {
    visit("norm", norm_);
    visit("moe", moe_);
  }

 private:
  nn::layer_norm<dyn, T, B> norm_;
  Moe moe_;
};

/// Sizes at run time (config fields as bottleneck_mlp's; expansion 4 when dyn).
template <class Moe, class T = float, backend B = cpu>
class moe_bottleneck_mlp {
 public:
  using block_type = moe_block<Moe, T, B>;

  /// make(g, width, expansion · width) builds one block's MoE.
  template <class Make>
  moe_bottleneck_mlp(rng& g, const config& sizes, Make&& make)
      : sizes_(detail::resolve("moe_bottleneck_mlp", runtime_config, sizes)),
        stem_(g, sizes_.in, sizes_.width),
        blocks_([&](std::size_t) { return block_type(sizes_.width, make(g, sizes_.width, sizes_.expansion * sizes_.width)); },
                sizes_.blocks),
        head_(g, sizes_.width, sizes_.classes) {}

  /// (N, in) -> (N, classes) logits.
  template <class S>
  auto operator()(const var<T, S, B>& x) {
    return head_(blocks_(stem_(x)));
  }

  const config& sizes() const noexcept { return sizes_; }
  std::size_t blocks() const noexcept { return blocks_.size(); }
  /// Block i's MoE layer (its last_routing() after a forward).
  Moe& moe(std::size_t i) noexcept { return blocks_[i].moe(); }
  /// Training mode of every router (noise and jitter off when false).
  void train(bool on = true) {
    for (std::size_t i = 0; i < blocks(); ++i) moe(i).train(on);
  }

  /// Parameters given one MoE's count: stem, B blocks of (norm, MoE), head.
  static constexpr std::size_t parameter_count(const config& c, std::size_t moe_params) noexcept {
    return (c.in + 1) * c.width + c.blocks * (2 * c.width + moe_params) + (c.width + 1) * c.classes;
  }

  template <class V>
  void parameters(V&& visit) {
    visit("stem", stem_);
    visit("blocks", blocks_);
    visit("head", head_);
  }

 private:
  config sizes_;
  nn::linear<dyn, dyn, T, B> stem_;
  nn::repeat<dyn, block_type> blocks_;
  nn::linear<dyn, dyn, T, B> head_;
};

}  // namespace moekit::mlp
