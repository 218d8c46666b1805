// moekit/mlp/bottleneck_mlp.hpp — the B-MLP of "Scaling MLPs" (models/networks.py):
//
//   h = stem(x)                                   Linear(in → w), no activation
//   B times: h = h + fc2(GELU(fc1(LayerNorm(h)))) pre-norm, fc1: w → e·w, fc2: e·w → w
//   logits = head(h)                              Linear(w → classes), no final norm
//
// Exact-erf GELU, biases everywhere, PyTorch's default init. Parameters are
// named as the reference's state_dict: "stem.weight", "blocks.3.norm.weight",
// "blocks.3.fc1.bias", "head.bias" (weights stored (in, out), i.e. transposed).
//
//   rng g(0);
//   mlp::bottleneck_mlp<mlp::config{.in = 784, .width = 256, .blocks = 4, .classes = 10, .expansion = 4}> m(g);
//   auto logits = m(t.input(x));   // x (N, 784) -> (N, 10)
#pragma once

#include <cstddef>

#include "../nn/linear.hpp"
#include "../nn/sequential.hpp"
#include "block.hpp"
#include "config.hpp"

namespace moekit::mlp {

template <config C = runtime_config, class T = float, backend B = cpu>
class bottleneck_mlp {
 public:
  static constexpr config static_config = C;
  static constexpr std::size_t hidden_extent = detail::times(C.width, C.expansion);

  using branch_type = pre_norm<C.width, feed_forward<C.width, hidden_extent, T, B>, T, B>;
  using block_type = nn::residual<branch_type>;
  using input_type = var<T, shape<dyn, C.in>, B>;  // (N, in)

  /// Builds the model with `sizes` for the fields C leaves dyn (C's own by default).
  explicit bottleneck_mlp(rng& g, const config& sizes = C)
      : sizes_(detail::resolve("bottleneck_mlp", C, sizes)),
        stem_(g, sizes_.in, sizes_.width),
        blocks_([&](std::size_t) { return make_block(g, sizes_); }, sizes_.blocks),
        head_(g, sizes_.width, sizes_.classes) {}

  /// (N, in) -> (N, classes) logits.
  template <class S>
  auto operator()(const var<T, S, B>& x) {
    return head_(blocks_(stem_(x)));
  }

  const config& sizes() const noexcept { return sizes_; }

  /// Parameters of a model of these sizes: stem, B blocks of (norm, fc1, fc2), head.
  static constexpr std::size_t parameter_count(const config& c) noexcept {
    const std::size_t w = c.width, h = expansion_of(c) * c.width;
    return (c.in + 1) * w + c.blocks * (2 * w + (w + 1) * h + (h + 1) * w) + (w + 1) * c.classes;
  }

  template <class V>
  void parameters(V&& visit) {
    visit("stem", stem_);
    visit("blocks", blocks_);
    visit("head", head_);
  }

 private:
  static block_type make_block(rng& g, const config& s) {
    return block_type(branch_type(s.width, feed_forward<C.width, hidden_extent, T, B>(g, s.width, s.expansion * s.width)));
  }

  config sizes_;
  nn::linear<C.in, C.width, T, B> stem_;
  nn::repeat<C.blocks, block_type> blocks_;
  nn::linear<C.width, C.classes, T, B> head_;
};

}  // namespace moekit::mlp
