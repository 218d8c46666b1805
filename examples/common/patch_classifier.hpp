// examples/common/patch_classifier.hpp — a small ViT-style classifier of
// square grey images (Fashion-MNIST: 28 × 28) cut into p × p patches, one
// token per patch, and its training loop (uoe's fashion task):
//
//   images (batch, side²) -> patches (batch, n, p²), n = (side / p)², raster order
//     -> linear p² -> d (with bias) + learned position embedding (n, d)
//     -> N pre-norm blocks (non-causal attention, no RoPE): moe::transformer_block
//        (multi-head attention + dense or MoE FFN) or uoe::block (SMHA + UoME)
//     -> LayerNorm -> mean over the n patches -> linear d -> classes
//   cross entropy; AdamW (decay on matrices only), linear warm-up + cosine
//   decay to min_lr_factor, gradient clipping, as char_training.hpp trains.
//
// Each step draws its images at random from the training set from its own
// random stream (seed, step); evaluation uses the first eval_images test
// images in batches of `batch` (a UoE's data selection normalises over the
// batch, so the evaluation batches are the training batches' size).
//
// Parameter names: "embed.weight", "embed.bias", "position", "blocks.0.*",
// "norm.*", "head.*".
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <moekit.hpp>
#include <moekit/optim.hpp>

#include "char_training.hpp"

namespace moekit::examples {

struct patch_model_config {
  std::size_t side = 28, patch = 4, classes = 10, d_model = 64, layers = 2;
  std::size_t tokens() const noexcept { return (side / patch) * (side / patch); }
  std::size_t patch_pixels() const noexcept { return patch * patch; }
};

/// Images (N, side²) in [0, 1] and their class ids (N), on the host.
struct image_set {
  tensor<float, shape<dyn, dyn>> images;
  tensor<index_t, shape<dyn>> labels;
  std::size_t size() const noexcept { return labels.size(); }
};

/// The patches (batch, n, p²) of images `which` of `set`, normalised with
/// Fashion-MNIST's pixel mean and standard deviation (0.286, 0.353), and their labels.
inline std::pair<tensor<float, shape<dyn, dyn, dyn>>, tensor<index_t, shape<dyn>>> patch_batch(
    const image_set& set, const std::vector<std::size_t>& which, const patch_model_config& c) {
  const std::size_t n = c.tokens(), pp = c.patch_pixels(), per_row = c.side / c.patch, side = c.side;
  tensor<float, shape<dyn, dyn, dyn>> x(shape<dyn, dyn, dyn>{which.size(), n, pp});
  tensor<index_t, shape<dyn>> y(shape<dyn>{which.size()});
  for (std::size_t b = 0; b < which.size(); ++b) {
    const float* img = set.images.data() + which[b] * side * side;
    y[b] = set.labels[which[b]];
    for (std::size_t t = 0; t < n; ++t) {
      const std::size_t r0 = t / per_row * c.patch, c0 = t % per_row * c.patch;
      for (std::size_t a = 0; a < c.patch; ++a)
        for (std::size_t k = 0; k < c.patch; ++k)
          x.data()[(b * n + t) * pp + a * c.patch + k] = (img[(r0 + a) * side + c0 + k] - 0.286f) / 0.353f;
    }
  }
  return {std::move(x), std::move(y)};
}

/// Forward FLOPs per image outside the blocks: the patch embedding (2·p²·d
/// per token) and the head (2·d·classes per image, after the pooling).
inline std::size_t patch_outer_flops_per_image(const patch_model_config& c) noexcept {
  return c.tokens() * 2 * c.patch_pixels() * c.d_model + 2 * c.d_model * c.classes;
}

template <class Block, class T = float, backend B = cpu>
class patch_classifier {
 public:
  /// make(g, layer index) builds one block.
  template <class MakeBlock>
  patch_classifier(rng& g, const patch_model_config& c, MakeBlock&& make)
      : config_(c),
        embed_(g, c.patch_pixels(), c.d_model),
        position_(normal<T, B>(g, shape<dyn>{c.tokens() * c.d_model}, T(0), T(0.02))),
        norm_(c.d_model),
        head_(g, c.d_model, c.classes) {
    if (c.patch == 0 || c.side % c.patch != 0)
      throw value_error("patch_classifier: patch " + std::to_string(c.patch) + " must divide the image side " +
                        std::to_string(c.side));
    blocks_.reserve(c.layers);
    for (std::size_t i = 0; i < c.layers; ++i) blocks_.push_back(make(g, i));
  }

  /// patches (batch, n, p²) on the host -> logits (batch, classes).
  var<T, shape<dyn, dyn>, B> operator()(const tensor<T, shape<dyn, dyn, dyn>>& patches) {
    const std::size_t batch = patches.extent(0), n = config_.tokens(), d = config_.d_model;
    auto x = constant(patches.reshape(shape<dyn, dyn>{batch * n, config_.patch_pixels()}).template to<B>());
    auto rows = reshape(embed_(x), shape<dyn, dyn>{batch, n * d});                      // (batch, n·d)
    auto h = reshape(add_rows(rows, position_), shape<dyn, dyn, dyn>{batch, n, d});      // (batch, n, d)
    for (auto& blk : blocks_) h = blk(h);                                                // (batch, n, d)
    return head_(mean<1>(norm_(h)));                                                     // (batch, classes)
  }

  std::size_t layers() const noexcept { return blocks_.size(); }
  Block& block(std::size_t i) noexcept { return blocks_[i]; }
  const patch_model_config& config() const noexcept { return config_; }
  void train(bool on = true) {
    for (auto& blk : blocks_) blk.train(on);
  }

  template <class V>
  void parameters(V&& visit) {
    visit("embed", embed_);
    visit("position", position_);
    nn::layer_list<Block> blocks{&blocks_};
    visit("blocks", blocks);
    visit("norm", norm_);
    visit("head", head_);
  }

 private:
  patch_model_config config_;
  nn::linear<dyn, dyn, T, B> embed_;
  parameter<T, shape<dyn>, B> position_;  // (n·d) learned, one d-vector per patch position
  std::vector<Block> blocks_;
  nn::layer_norm<dyn, T, B> norm_;
  nn::linear<dyn, dyn, T, B> head_;
};

struct classifier_options {
  int steps = 300, batch = 64, warmup = 30, eval_images = 2000;
  double lr = 3e-3, weight_decay = 0.1, min_lr_factor = 0.1, clip = 1.0;
};

/// Test loss and accuracy of `model` over the first o.eval_images of `test`.
template <class M>
std::pair<double, double> evaluate_classifier(M& model, const image_set& test, const classifier_options& o) {
  no_grad guard;
  model.train(false);
  const std::size_t n = std::min<std::size_t>(test.size(), static_cast<std::size_t>(o.eval_images));
  const auto batch = static_cast<std::size_t>(o.batch);
  double sum = 0;
  std::size_t correct = 0;
  for (std::size_t s = 0; s < n; s += batch) {
    std::vector<std::size_t> which;
    for (std::size_t i = s; i < std::min(n, s + batch); ++i) which.push_back(i);
    const auto [x, y] = patch_batch(test, which, model.config());
    tape t;
    auto logits = model(x);
    sum += static_cast<double>(cross_entropy(logits, y).value().template to<cpu>()[0]) *
           static_cast<double>(which.size());
    const auto best = argmax(logits.value()).template to<cpu>();
    for (std::size_t i = 0; i < which.size(); ++i) correct += best[i] == y[i];
  }
  model.train(true);
  return {sum / static_cast<double>(n), static_cast<double>(correct) / static_cast<double>(n)};
}

/// Trains `model` (seed `seed`) on `train_set` and evaluates it on `test`;
/// run_result's val_loss / val_accuracy are the test subset's, tokens are patches.
template <class M>
run_result train_classifier(const classifier_options& o, M& model, const std::string& name, int seed,
                            const image_set& train_set, const image_set& test) {
  auto opt = adamw_for(model, o.lr, o.weight_decay);
  const auto total = static_cast<std::size_t>(o.steps), batch = static_cast<std::size_t>(o.batch);
  const auto schedule = cosine_for(o);
  run_result r;
  std::vector<double> losses;
  const auto t0 = std::chrono::steady_clock::now();
  double last_report = -1;
  const std::size_t tokens = model.config().tokens();
  while (opt.steps() < total) {
    const std::size_t step = opt.steps();
    rng g(static_cast<std::uint64_t>(seed), (static_cast<std::uint64_t>(step) + 1) << 32);  // this step's own stream
    std::vector<std::size_t> which(batch);
    for (auto& w : which) w = static_cast<std::size_t>(((static_cast<std::uint64_t>(g.next_u32()) << 32) | g.next_u32()) %
                                                       train_set.size());
    const auto [x, y] = patch_batch(train_set, which, model.config());
    optim::set_lr_factor(opt, schedule(step));
    opt.zero_grad();
    tape t;
    auto loss = cross_entropy(model(x), y);
    t.backward(loss);
    if (o.clip > 0) optim::clip_grad_norm(opt, o.clip);
    opt.step();
    losses.push_back(static_cast<double>(loss.value()[0]));
    ++r.steps_run;
    const double elapsed = seconds_since(t0);
    if (elapsed - last_report >= 1.0 || opt.steps() == total) {
      last_report = elapsed;
      const std::size_t k = std::min<std::size_t>(losses.size(), 20);
      double recent = 0;
      for (std::size_t i = losses.size() - k; i < losses.size(); ++i) recent += losses[i] / static_cast<double>(k);
      std::fprintf(stderr, "\r%-14s seed %d  step %zu/%zu  loss %.4f  %.0f tokens/s  %.0f s   ", name.c_str(), seed,
                   opt.steps(), total, recent, static_cast<double>(r.steps_run * batch * tokens) / elapsed, elapsed);
    }
  }
  r.train_seconds = seconds_since(t0);
  std::fprintf(stderr, "\n");
  r.tokens_per_s = r.train_seconds > 0 ? static_cast<double>(r.steps_run * batch * tokens) / r.train_seconds : 0;
  const std::size_t k = std::min<std::size_t>(losses.size(), 50);
  for (std::size_t i = losses.size() - k; i < losses.size(); ++i) r.train_loss += losses[i] / static_cast<double>(k);
  const auto te = std::chrono::steady_clock::now();
  std::tie(r.val_loss, r.val_accuracy) = evaluate_classifier(model, test, o);
  r.eval_seconds = seconds_since(te);
  r.curve.push_back({opt.steps(), r.val_loss, r.val_accuracy, r.train_seconds});
  return r;
}

}  // namespace moekit::examples
