// moekit/mlp/mlp_mixer.hpp — MLP-Mixer (Tolstikhin et al. 2021) for images
// stored as rows of height·width·channels values (channels last):
//
//   patches  = patchify(x)                     (N·S, p·p·C): S = (H/p)·(W/p) non-overlapping p×p patches
//   h        = embed(patches)                  (N·S, hidden)
//   L times: h = h + token-mixing(LN(h))       an MLP across the S patches, per channel
//            h = h + channel-mixing(LN(h))     an MLP across the channels, per patch
//   logits   = head(mean over patches(LN(h)))  (N, classes)
//
// Token mixing works on the transposed view: (N·S, hidden) → (N, S, hidden)
// → (N, hidden, S) → (N·hidden, S), through Linear(S → token_mlp) → GELU →
// Linear(token_mlp → S), and back. Sizes are run-time values (mixer_config).
//
// Parameters: "embed.*", "blocks.<i>.token.{norm,fc1,fc2}.*",
// "blocks.<i>.channel.{norm,fc1,fc2}.*", "norm.*", "head.*".
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

#include "../autograd/ops/index.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../nn/linear.hpp"
#include "../nn/norm.hpp"
#include "../nn/sequential.hpp"
#include "../tensor/ops/creation.hpp"
#include "block.hpp"

namespace moekit::mlp {

struct mixer_config {
  std::size_t height = 28, width = 28, channels = 1;  // the input images
  std::size_t patch = 4;         // p: patches are p×p; p must divide height and width
  std::size_t hidden = 128;      // channels of each patch token
  std::size_t blocks = 4;        // L
  std::size_t token_mlp = 0;     // hidden units of token mixing; 0: hidden / 2 (the paper's ratio)
  std::size_t channel_mlp = 0;   // hidden units of channel mixing; 0: 4·hidden
  std::size_t classes = 10;

  std::size_t patches() const noexcept { return (height / patch) * (width / patch); }
  std::size_t patch_size() const noexcept { return patch * patch * channels; }
  std::size_t tokens_hidden() const noexcept { return token_mlp ? token_mlp : std::max<std::size_t>(1, hidden / 2); }
  std::size_t channels_hidden() const noexcept { return channel_mlp ? channel_mlp : 4 * hidden; }
};

namespace detail {

inline void check_mixer_config(const mixer_config& c) {
  const auto bad = [](const std::string& what) { throw value_error("mlp_mixer: " + what); };
  if (!c.height || !c.width || !c.channels || !c.patch || !c.hidden || !c.blocks || !c.classes)
    bad("every size must be >= 1");
  if (c.height % c.patch || c.width % c.patch)
    bad("patch " + std::to_string(c.patch) + " does not divide the " + std::to_string(c.height) + "x" +
        std::to_string(c.width) + " image");
}

/// Row indices that gather the pixels (rows of C values) of n images of
/// height×width into patch order: image, patch (row-major over the patch
/// grid), then pixel within the patch (row-major).
inline tensor<index_t, shape<dyn>> patch_order(std::size_t n, std::size_t height, std::size_t width, std::size_t p) {
  tensor<index_t, shape<dyn>> idx(shape<dyn>{n * height * width});
  std::size_t k = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t pr = 0; pr < height / p; ++pr)
      for (std::size_t pc = 0; pc < width / p; ++pc)
        for (std::size_t r = 0; r < p; ++r)
          for (std::size_t c = 0; c < p; ++c)
            idx[k++] = static_cast<index_t>((i * height + pr * p + r) * width + pc * p + c);
  return idx;
}

}  // namespace detail

/// Images (N, H·W·C) -> patches (N·S, p·p·C), S = (H/p)(W/p), in patch order
/// (image-major, then the patch grid row by row). A gather of pixel rows, so
/// the gradient scatters back. shape_error when a row is not an H×W×C image.
template <class T, class S, class B>
var<T, shape<dyn, dyn>, B> patchify(const var<T, S, B>& images, std::size_t height, std::size_t width,
                                    std::size_t channels, std::size_t p) {
  static_assert(S::rank() == 2, "patchify: images must be (N, height * width * channels)");
  if (images.extent(1) != height * width * channels)
    throw shape_error("patchify: rows of " + images.shape().str() + " are not " + std::to_string(height) + "x" +
                      std::to_string(width) + "x" + std::to_string(channels) + " images");
  if (p == 0 || height % p || width % p)
    throw value_error("patchify: patch " + std::to_string(p) + " does not divide " + std::to_string(height) + "x" +
                      std::to_string(width));
  const std::size_t n = images.extent(0);
  auto pixels = reshape(images, shape<dyn, dyn>{n * height * width, channels});         // (N·H·W, C)
  const auto order = detail::patch_order(n, height, width, p).template to<B>();  // built on the host, moved to B
  auto gathered = moekit::detail::gather_rows("patchify", pixels, order);          // (N·H·W, C)
  return reshape(gathered, shape<dyn, dyn>{n * (height / p) * (width / p), p * p * channels});  // (N·S, p·p·C)
}

/// Token mixing: x (N·S, hidden) -> LN -> (N·hidden, S) -> MLP over S -> back to (N·S, hidden).
template <class T = float, backend B = cpu>
class token_mixing {
 public:
  token_mixing(rng& g, std::size_t patches, std::size_t hidden, std::size_t mlp_hidden)
      : patches_(patches), norm_(hidden), mlp_(g, patches, mlp_hidden) {}

  var<T, shape<dyn, dyn>, B> operator()(const var<T, shape<dyn, dyn>, B>& x) const {
    const std::size_t s = patches_, c = x.extent(1), n = x.extent(0) / s;
    auto tokens = reshape(norm_(x), shape<dyn, dyn, dyn>{n, s, c});              // (N, S, hidden)
    auto by_channel = reshape(transpose(tokens), shape<dyn, dyn>{n * c, s});      // (N·hidden, S)
    auto mixed = reshape(mlp_(by_channel), shape<dyn, dyn, dyn>{n, c, s});        // (N, hidden, S)
    return reshape(transpose(mixed), shape<dyn, dyn>{n * s, c});                  // (N·S, hidden)
  }

  template <class V>
  void parameters(V&& visit) {
    visit("norm", norm_);
    mlp_.parameters(visit);
  }

 private:
  std::size_t patches_;
  nn::layer_norm<dyn, T, B> norm_;
  feed_forward<dyn, dyn, T, B> mlp_;
};

/// One mixer block: token mixing, then channel mixing, each pre-norm and residual.
template <class T = float, backend B = cpu>
class mixer_block {
 public:
  mixer_block(rng& g, const mixer_config& c)
      : token_(token_mixing<T, B>(g, c.patches(), c.hidden, c.tokens_hidden())),
        channel_(channel_type(c.hidden, feed_forward<dyn, dyn, T, B>(g, c.hidden, c.channels_hidden()))) {}

  var<T, shape<dyn, dyn>, B> operator()(const var<T, shape<dyn, dyn>, B>& x) { return channel_(token_(x)); }

  template <class V>
  void parameters(V&& visit) {
    visit("token", token_);
    visit("channel", channel_);
  }

 private:
  using channel_type = pre_norm<dyn, feed_forward<dyn, dyn, T, B>, T, B>;
  nn::residual<token_mixing<T, B>> token_;
  nn::residual<channel_type> channel_;
};

template <class T = float, backend B = cpu>
class mlp_mixer {
 public:
  using input_type = var<T, shape<dyn, dyn>, B>;  // (N, H·W·C)

  mlp_mixer(rng& g, const mixer_config& c)
      : c_((detail::check_mixer_config(c), c)),
        embed_(g, c.patch_size(), c.hidden),
        blocks_([&](std::size_t) { return mixer_block<T, B>(g, c_); }, c.blocks),
        norm_(c.hidden),
        head_(g, c.hidden, c.classes) {}

  /// (N, H·W·C) -> (N, classes) logits.
  template <class S>
  var<T, shape<dyn, dyn>, B> operator()(const var<T, S, B>& images) {
    const std::size_t n = images.extent(0), s = c_.patches();
    auto h = embed_(patchify(images, c_.height, c_.width, c_.channels, c_.patch));  // (N·S, hidden)
    h = norm_(blocks_(h));                                                           // (N·S, hidden)
    auto pooled = mean<1>(reshape(h, shape<dyn, dyn, dyn>{n, s, c_.hidden}));      // (N, hidden)
    return head_(pooled);                                                            // (N, classes)
  }

  const mixer_config& sizes() const noexcept { return c_; }

  /// Parameters of a mixer of config c.
  static std::size_t parameter_count(const mixer_config& c) noexcept {
    const std::size_t s = c.patches(), d = c.hidden, ds = c.tokens_hidden(), dc = c.channels_hidden();
    const std::size_t token = 2 * d + (s + 1) * ds + (ds + 1) * s, channel = 2 * d + (d + 1) * dc + (dc + 1) * d;
    return (c.patch_size() + 1) * d + c.blocks * (token + channel) + 2 * d + (d + 1) * c.classes;
  }

  template <class V>
  void parameters(V&& visit) {
    visit("embed", embed_);
    visit("blocks", blocks_);
    visit("norm", norm_);
    visit("head", head_);
  }

 private:
  mixer_config c_;
  nn::linear<dyn, dyn, T, B> embed_;
  nn::repeat<dyn, mixer_block<T, B>> blocks_;
  nn::layer_norm<dyn, T, B> norm_;
  nn::linear<dyn, dyn, T, B> head_;
};

}  // namespace moekit::mlp
