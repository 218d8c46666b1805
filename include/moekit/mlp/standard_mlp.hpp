// moekit/mlp/standard_mlp.hpp — the S-MLP baseline of "Scaling MLPs"
// (models/networks.py StandardMLP): no residuals, no bottleneck.
//
//   h = stem(x)                                  Linear(in → w)
//   B times: h = fc(GELU(LayerNorm(h)))           Linear(w → w)
//   logits = head(h)                             Linear(w → classes)
//
// Parameters: "stem.*", "blocks.<i>.norm.*", "blocks.<i>.fc.*", "head.*".
// The config's expansion is not used.
#pragma once

#include <cstddef>

#include "../autograd/ops/activation.hpp"
#include "../nn/linear.hpp"
#include "../nn/norm.hpp"
#include "../nn/sequential.hpp"
#include "block.hpp"
#include "config.hpp"

namespace moekit::mlp {

/// fc(GELU(LayerNorm(x))): one S-MLP block, (N, W) -> (N, W).
template <std::size_t W, class T = float, backend B = cpu>
class standard_block {
 public:
  standard_block(rng& g, std::size_t w = W) : norm_(w), fc_(g, w, w) {}

  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) const {
    return fc_(mlp::gelu(norm_(x)));
  }

  template <class V>
  void parameters(V&& visit) {
    visit("norm", norm_);
    visit("fc", fc_);
  }

 private:
  nn::layer_norm<W, T, B> norm_;
  nn::linear<W, W, T, B> fc_;
};

template <config C = runtime_config, class T = float, backend B = cpu>
class standard_mlp {
 public:
  static constexpr config static_config = C;
  using block_type = standard_block<C.width, T, B>;
  using input_type = var<T, shape<dyn, C.in>, B>;  // (N, in)

  /// Builds the model with `sizes` for the fields C leaves dyn (C's own by default).
  explicit standard_mlp(rng& g, const config& sizes = C)
      : sizes_(detail::resolve("standard_mlp", C, sizes)),
        stem_(g, sizes_.in, sizes_.width),
        blocks_([&](std::size_t) { return block_type(g, sizes_.width); }, sizes_.blocks),
        head_(g, sizes_.width, sizes_.classes) {}

  /// (N, in) -> (N, classes) logits.
  template <class S>
  auto operator()(const var<T, S, B>& x) {
    return head_(blocks_(stem_(x)));
  }

  const config& sizes() const noexcept { return sizes_; }

  /// Parameters of a model of these sizes.
  static constexpr std::size_t parameter_count(const config& c) noexcept {
    const std::size_t w = c.width;
    return (c.in + 1) * w + c.blocks * (2 * w + (w + 1) * w) + (w + 1) * c.classes;
  }

  template <class V>
  void parameters(V&& visit) {
    visit("stem", stem_);
    visit("blocks", blocks_);
    visit("head", head_);
  }

 private:
  config sizes_;
  nn::linear<C.in, C.width, T, B> stem_;
  nn::repeat<C.blocks, block_type> blocks_;
  nn::linear<C.width, C.classes, T, B> head_;
};

}  // namespace moekit::mlp
