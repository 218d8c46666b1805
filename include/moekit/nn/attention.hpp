// moekit/nn/attention.hpp — multi-head self-attention over x (batch, seq,
// d_model), as torch.nn.MultiheadAttention(batch_first=True) with q = k = v = x,
// written on the public attention ops (autograd/ops/heads.hpp, rope.hpp,
// attention.hpp; docs/attention.md):
//
//   q, k, v = q_proj(x), k_proj(x), v_proj(x)              (batch, seq, d_model)
//   split_heads                                            (batch·H, seq, d_head)
//   [rope on q and k]
//   scaled_dot_product_attention(q, k, v, mask)            (batch·H, seq, d_head)
//   out_proj(merge_heads(...))                             (batch, seq, d_model)
//
// Masks (moekit::attention_mask, also nn::attention_mask): causal (query t
// sees keys <= t) and/or key padding, per batch either a length (keys at
// positions >= length are padding) or a flag per key (nonzero = padding, as
// torch's key_padding_mask). Key lengths must lie in [0, seq]: host masks are
// checked (value_error); a device mask is not (that would need a sync), and
// there a length outside the range masks no key (negative ones read as huge).
// A query whose keys are all masked attends to
// nothing: its attention weights are 0 (not NaN), so its attention output is 0
// and the layer outputs out_proj's bias there; no gradient flows through it.
//
// Parameter names: "q_proj.weight", "q_proj.bias", ..., "out_proj.bias"
// (moekit stores linear weights (in, out), transposed against torch).
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>

#include "../autograd/ops/attention.hpp"
#include "../autograd/ops/attention_mask.hpp"
#include "../autograd/ops/heads.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/rope.hpp"
#include "linear.hpp"

namespace moekit::nn {

/// The mask type of attention ops (tensor/ops/attention_mask.hpp); the layer
/// uses causal, key_lengths (batch) and key_padding (batch, seq).
using moekit::attention_mask;

struct attention_options {
  bool causal = false;       // mask future keys in every call
  bool rope = false;         // rotate q and k by position (RoPE, rotate_half form); needs an even d_head
  double rope_base = 10000;  // RoPE's base
  bool bias = true;          // the four projections have biases
};

template <std::size_t D, std::size_t H, class T = float, backend B = cpu>
class multi_head_attention {
  static_assert(D == dyn || H == dyn || (H > 0 && D % H == 0),
                "multi_head_attention: d_model must be a multiple of the number of heads");

 public:
  /// Extent of one head: D / H, or dyn when either is dyn.
  static constexpr std::size_t head_extent = head_extent_v<D, H>;
  using projection = linear<D, D, T, B>;

  explicit multi_head_attention(rng& g, std::size_t d_model = D, std::size_t heads = H, attention_options o = {})
      : q_proj_(g, d_model, d_model, {.bias = o.bias}),
        k_proj_(g, d_model, d_model, {.bias = o.bias}),
        v_proj_(g, d_model, d_model, {.bias = o.bias}),
        out_proj_(g, d_model, d_model, {.bias = o.bias}),
        heads_(heads),
        options_(o) {
    const std::string dims = "d_model " + std::to_string(d_model) + ", " + std::to_string(heads) + " heads";
    if ((H != dyn && heads != H) || heads == 0 || d_model % heads != 0)
      throw value_error("multi_head_attention: " + dims + ": d_model must be a positive multiple of the heads" +
                        (H != dyn ? " (the type fixes " + std::to_string(H) + " heads)" : std::string()));
    if (o.rope && head_dim() % 2 != 0)
      throw value_error("multi_head_attention: " + dims + ": RoPE needs an even head dimension, got " +
                        std::to_string(head_dim()));
  }

  /// Self-attention of x (batch, seq, d_model) -> (batch, seq, d_model), masked
  /// by `mask` (and causally when the options say so).
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x, const attention_mask<B>& mask = {}) const {
    static_assert(S::rank() == 3, "multi_head_attention: x must have rank 3 (batch, seq, d_model)");
    static_assert(extents_match<S::static_extent(2), D>::value, "multi_head_attention: last extent of x != d_model");
    if (x.extent(2) != d_model())
      throw shape_error("multi_head_attention: x " + x.shape().str() + ": last extent differs from d_model " +
                        std::to_string(d_model()));
    check_mask(mask, x.extent(0), x.extent(1));
    auto q = split_heads<H>(q_proj_(x), heads_);  // (batch·H, seq, d_head)
    auto k = split_heads<H>(k_proj_(x), heads_);  // (batch·H, seq, d_head)
    auto v = split_heads<H>(v_proj_(x), heads_);  // (batch·H, seq, d_head)
    if (options_.rope) {
      q = rope(q, 0, options_.rope_base);
      k = rope(k, 0, options_.rope_base);
    }
    attention_mask<B> m = mask;  // lengths and flags per batch row: shared by its H heads
    m.causal = mask.causal || options_.causal;
    auto attended = scaled_dot_product_attention(q, k, v, m);  // (batch·H, seq, d_head)
    return reshape(out_proj_(merge_heads<H>(attended, heads_)), x.shape());
  }

  /// A device layer given a host mask: the mask is checked on the host, then copied to B.
  template <class S>
    requires(!std::is_same_v<B, cpu>)
  var<T, S, B> operator()(const var<T, S, B>& x, const attention_mask<cpu>& mask) const {
    if (x.extent(2) == d_model()) check_mask(mask, x.extent(0), x.extent(1));  // else operator() names the shape
    return (*this)(x, mask.template to<B>());
  }

  std::size_t d_model() const noexcept { return q_proj_.in_features(); }
  std::size_t heads() const noexcept { return heads_; }
  std::size_t head_dim() const noexcept { return d_model() / heads_; }
  const attention_options& options() const noexcept { return options_; }
  projection& q_proj() noexcept { return q_proj_; }
  projection& k_proj() noexcept { return k_proj_; }
  projection& v_proj() noexcept { return v_proj_; }
  projection& out_proj() noexcept { return out_proj_; }

  template <class V>
  void parameters(V&& visit) {
    visit("q_proj", q_proj_);
    visit("k_proj", k_proj_);
    visit("v_proj", v_proj_);
    visit("out_proj", out_proj_);
  }

 private:
  /// Checks the mask against x (batch, seq, d_model): its shapes, and, where it
  /// is on the host, its lengths. The layer takes no positions (self-attention
  /// over the whole sequence); attention over selected tokens uses the ops.
  template <class BM>
  void check_mask(const attention_mask<BM>& m, std::size_t batch, std::size_t seq) const {
    const std::string x_shape = "(" + std::to_string(batch) + ", " + std::to_string(seq) + ", " +
                                std::to_string(d_model()) + ")";
    if (m.key_lengths.defined()) {
      if (m.key_lengths.extent(0) != batch)
        throw shape_error("multi_head_attention: key_lengths " + m.key_lengths.shape().str() + " for x " + x_shape +
                          ": one length per batch row");
      if constexpr (BM::host_accessible)
        for (std::size_t b = 0; b < batch; ++b)
          if (m.key_lengths[b] < 0 || static_cast<std::size_t>(m.key_lengths[b]) > seq)
            throw value_error("multi_head_attention: key length " + std::to_string(m.key_lengths[b]) +
                              " of batch row " + std::to_string(b) + " is outside [0, " + std::to_string(seq) + "]");
    }
    if (m.key_padding.defined() && (m.key_padding.extent(0) != batch || m.key_padding.extent(1) != seq))
      throw shape_error("multi_head_attention: key_padding " + m.key_padding.shape().str() + " for x " + x_shape +
                        ": needs (batch, seq)");
    if (m.query_positions.defined() || m.key_positions.defined())
      throw value_error("multi_head_attention: the mask has positions; the layer attends over the whole "
                        "sequence (use scaled_dot_product_attention for attention at given positions)");
  }

  projection q_proj_, k_proj_, v_proj_, out_proj_;
  std::size_t heads_;
  attention_options options_;
};

}  // namespace moekit::nn
