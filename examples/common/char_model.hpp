// examples/common/char_model.hpp — the decoder-only character language model
// of char_lm, and the windows it trains on:
//
//   ids (batch, seq) -> embedding (batch, seq, d)
//     -> N × moe::transformer_block (pre-norm: h += attn(LN(h)); h += FFN(LN(h)),
//        or h = FFN(h) for an FFN that owns its norm and residual),
//        causal multi-head attention with RoPE, FFN = dense or a baseline MoE
//     -> LayerNorm -> linear head (untied) -> logits (batch·seq, vocabulary)
//
// The FFN slot takes a moe::layer (the baselines of moe/baselines.hpp), a
// uoe::uome, or dense_ffn below, which gives the dense d → ff → d GELU FFN the
// interface moe::transformer_block expects (train()); its parameters keep the
// block's "moe." prefix: "blocks.0.moe.fc1.weight".
//
// The block is moe::transformer_block (multi-head attention; the default) or,
// with Block = uoe::block<Ffn> (char_uoe_transformer<Ffn>), the UoE block:
// selective multi-head attention (uoe/smha.hpp: each head keeps c tokens of
// each sample, selected as config.smha_select says, causal on the original
// positions, RoPE at the original positions) and the same pre-norm wiring.
// Parameter names of the default block are unchanged ("blocks.0.attention.q_proj.weight").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <moekit.hpp>
#include <moekit/mlp/block.hpp>
#include <moekit/moe/transformer_block.hpp>
#include <moekit/nn/embedding.hpp>
#include <moekit/uoe.hpp>

namespace moekit::examples {

/// The dense FFN d → ff → d (GELU, biases) as a transformer_block FFN.
template <class T = float, backend B = cpu>
class dense_ffn {
 public:
  dense_ffn(rng& g, std::size_t d, std::size_t ff) : ff_(g, d, ff) {}
  template <class S>
  auto operator()(const var<T, S, B>& x) {
    return ff_(x);
  }
  void train(bool = true) noexcept {}
  template <class V>
  void parameters(V&& visit) {
    ff_.parameters(visit);
  }

 private:
  mlp::feed_forward<dyn, dyn, T, B> ff_;
};

struct char_model_config {
  std::size_t vocabulary = 0, d_model = 128, layers = 4, heads = 4;
  double rope_base = 10000;
  moe::ffn_wiring wiring = moe::ffn_wiring::pre_norm;  // direct: the FFN owns its norm and residual (coe::layer)
  // uoe::block only: the heads' token selection (top_k heads per token, capacity per head and sample, mode)
  uoe::selection_options smha_select{.top_k = 2, .capacity = 0.5};
};

template <class Block>
inline constexpr bool is_uoe_block = false;
template <class Ffn, class T, backend B>
inline constexpr bool is_uoe_block<uoe::block<Ffn, T, B>> = true;

template <class Ffn, class T = float, backend B = cpu, class Block = moe::transformer_block<Ffn, T, B>>
class char_transformer {
 public:
  using block_type = Block;
  static constexpr bool selective_attention = is_uoe_block<Block>;

  /// make(g, layer index) builds one block's FFN.
  template <class MakeFfn>
  char_transformer(rng& g, const char_model_config& c, MakeFfn&& make)
      : config_(c), embed_(g, c.vocabulary, c.d_model), norm_(c.d_model), head_(g, c.d_model, c.vocabulary) {
    blocks_.reserve(c.layers);
    for (std::size_t i = 0; i < c.layers; ++i) {
      if constexpr (selective_attention) {
        if (c.wiring != moe::ffn_wiring::pre_norm)
          throw value_error("char_transformer: the UoE block is pre-norm only (no direct FFN wiring)");
        blocks_.emplace_back(g, smha_options_of(c), make(g, i));
      } else {
        blocks_.emplace_back(g, c.d_model, c.heads, make(g, i),
                             nn::attention_options{.causal = true, .rope = true, .rope_base = c.rope_base}, c.wiring);
      }
    }
  }

  /// The selective attention of a UoE block under config c.
  static uoe::smha_options smha_options_of(const char_model_config& c) {
    return {.d_model = c.d_model, .heads = c.heads, .select = c.smha_select, .causal = true, .rope = true,
            .rope_base = c.rope_base};
  }

  /// ids (batch, seq) on the host -> logits (batch·seq, vocabulary).
  var<T, shape<dyn, dyn>, B> operator()(const tensor<index_t, shape<dyn, dyn>>& ids) {
    const std::size_t batch = ids.extent(0), seq = ids.extent(1);
    auto h = embed_(ids.template to<B>());  // (batch, seq, d)
    for (auto& blk : blocks_) h = blk(h);    // (batch, seq, d)
    auto rows = reshape(norm_(h), shape<dyn, dyn>{batch * seq, config_.d_model});
    return head_(rows);  // (batch·seq, vocabulary)
  }

  std::size_t layers() const noexcept { return blocks_.size(); }
  Ffn& ffn(std::size_t i) noexcept { return blocks_[i].moe(); }
  const char_model_config& config() const noexcept { return config_; }
  void train(bool on = true) {
    for (auto& blk : blocks_) blk.train(on);
  }

  template <class V>
  void parameters(V&& visit) {
    visit("embed", embed_);
    nn::layer_list<block_type> blocks{&blocks_};
    visit("blocks", blocks);
    visit("norm", norm_);
    visit("head", head_);
  }

  /// Forward FLOPs per token outside the FFNs (2 per multiply-add): the four
  /// attention projections, q·kᵀ and weights·v over all seq keys (the causal
  /// mask hides half, but they are computed), and the head. Selective
  /// attention: its router, and the projections and scores of the kept slots
  /// only (uoe::cost_of(smha_options, seq)).
  static std::size_t non_ffn_flops(const char_model_config& c, std::size_t seq) noexcept {
    const std::size_t d = c.d_model;
    if constexpr (selective_attention) {
      const auto a = uoe::cost_of(smha_options_of(c), seq);
      return c.layers * (a.expert_flops + a.router_flops) + 2 * d * c.vocabulary;
    } else {
      return c.layers * (2 * 4 * d * d + 2 * 2 * seq * d) + 2 * d * c.vocabulary;
    }
  }

 private:
  char_model_config config_;
  nn::embedding<dyn, dyn, T, B> embed_;
  std::vector<block_type> blocks_;
  nn::layer_norm<dyn, T, B> norm_;
  nn::linear<dyn, dyn, T, B> head_;
};

/// The character model with UoE blocks (selective multi-head attention + Ffn).
template <class Ffn, class T = float, backend B = cpu>
using char_uoe_transformer = char_transformer<Ffn, T, B, uoe::block<Ffn, T, B>>;

/// Inputs and next-character targets of `starts.size()` windows of `seq`
/// characters of `tokens`: inputs (batch, seq) = tokens[s, s + seq), targets
/// (batch·seq) = tokens[s + 1, s + seq + 1).
struct char_batch {
  tensor<index_t, shape<dyn, dyn>> inputs;  // (batch, seq)
  tensor<index_t, shape<dyn>> targets;      // (batch·seq)
};

inline char_batch make_char_batch(const tensor<index_t, shape<dyn>>& tokens, const std::vector<std::size_t>& starts,
                                  std::size_t seq) {
  char_batch b{tensor<index_t, shape<dyn, dyn>>(shape<dyn, dyn>{starts.size(), seq}),
               tensor<index_t, shape<dyn>>(shape<dyn>{starts.size() * seq})};
  for (std::size_t i = 0; i < starts.size(); ++i) {
    if (starts[i] + seq + 1 > tokens.size()) throw value_error("make_char_batch: window past the end of the text");
    for (std::size_t j = 0; j < seq; ++j) {
      b.inputs.data()[i * seq + j] = tokens[starts[i] + j];
      b.targets.data()[i * seq + j] = tokens[starts[i] + j + 1];
    }
  }
  return b;
}

/// `batch` random window starts in [0, n − seq − 1], drawn from g.
inline std::vector<std::size_t> random_starts(rng& g, std::size_t n, std::size_t seq, std::size_t batch) {
  const std::size_t range = n - seq;  // starts 0 .. n − seq − 1
  std::vector<std::size_t> s(batch);
  for (auto& x : s) {
    const std::uint64_t r = (static_cast<std::uint64_t>(g.next_u32()) << 32) | g.next_u32();
    x = static_cast<std::size_t>(r % range);
  }
  return s;
}

}  // namespace moekit::examples
