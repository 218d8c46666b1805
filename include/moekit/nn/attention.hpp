// moekit/nn/attention.hpp — multi-head self-attention over x (batch, seq,
// d_model), as torch.nn.MultiheadAttention(batch_first=True) with q = k = v = x:
//
//   q, k, v = q_proj(x), k_proj(x), v_proj(x)              (batch, seq, d_model)
//   split heads                                            (batch·H, seq, d_head)
//   [RoPE on q and k]    scores = q·kᵀ/√d_head [+ mask]    (batch·H, seq, seq)
//   out_proj(merge heads(softmax(scores)·v))               (batch, seq, d_model)
//
// Masks are an additive constant (0 or −inf) on the scores: causal (query t
// sees keys ≤ t) and/or key padding, per batch either a length (keys at
// positions ≥ length are padding) or a flag per key (nonzero = padding, as
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

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/matmul.hpp"
#include "../autograd/ops/rope.hpp"
#include "../autograd/ops/softmax.hpp"
#include "../core/host_device.hpp"
#include "linear.hpp"

namespace moekit::nn {

/// Which keys the queries of one call may not attend to. Undefined tensors mean "none".
/// Build it on the host and pass it as is (a device layer checks and copies
/// it), or move it with to<B>() once and reuse it.
template <backend B = cpu>
struct attention_mask {
  bool causal = false;                                     // query t sees keys 0..t only
  tensor<index_t, shape<dyn>, B> key_lengths{};            // (batch): keys at positions >= length are padding
  tensor<std::uint8_t, shape<dyn, dyn>, B> key_padding{};  // (batch, seq): nonzero = padding

  /// The same mask on backend B2 (undefined tensors stay undefined).
  template <backend B2>
  attention_mask<B2> to() const {
    attention_mask<B2> out{causal, {}, {}};
    if (key_lengths.defined()) out.key_lengths = moekit::detail::to_backend<B2>(key_lengths);
    if (key_padding.defined()) out.key_padding = moekit::detail::to_backend<B2>(key_padding);
    return out;
  }
};

struct attention_options {
  bool causal = false;       // mask future keys in every call
  bool rope = false;         // rotate q and k by position (RoPE, rotate_half form); needs an even d_head
  double rope_base = 10000;  // RoPE's base
  bool bias = true;          // the four projections have biases
};

}  // namespace moekit::nn

namespace moekit::fn {
/// Which (batch, query, key) entries a mask hides, for self-attention over
/// `seq` positions with `heads` heads sharing one batch's mask.
struct attention_mask_rule {
  std::size_t heads, seq;
  bool causal;
  const index_t* lengths;       // (batch) or null
  const std::uint8_t* padding;  // (batch, seq) or null

  MOEKIT_HOST_DEVICE bool masked(std::size_t b, std::size_t q, std::size_t k) const {
    return (causal && k > q) || (lengths && k >= static_cast<std::size_t>(lengths[b])) ||
           (padding && padding[b * seq + k] != 0);
  }
  /// Whether query q of batch b may attend to no key at all (stops at its first visible key).
  MOEKIT_HOST_DEVICE bool row_empty(std::size_t b, std::size_t q) const {
    for (std::size_t k = 0; k < seq; ++k)
      if (!masked(b, q, k)) return false;
    return true;
  }
};
/// The additive mask (batch·heads, seq, seq): 0 where visible, −inf where
/// masked, and 0 across a row that is masked entirely (its weights are zeroed
/// by attention_row_keep instead, so softmax never sees a row of −inf).
template <class T>
struct attention_additive_mask {
  attention_mask_rule rule;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t k = i % rule.seq, q = (i / rule.seq) % rule.seq, b = i / (rule.seq * rule.seq) / rule.heads;
    if (!rule.masked(b, q, k) || rule.row_empty(b, q)) return T(0);
    return -std::numeric_limits<T>::infinity();
  }
};
/// Per (batch·heads, seq) query: 1, or 0 where every key is masked.
template <class T>
struct attention_row_keep {
  attention_mask_rule rule;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    return rule.row_empty(i / rule.seq / rule.heads, i % rule.seq) ? T(0) : T(1);
  }
};
}  // namespace moekit::fn

namespace moekit::nn {

template <std::size_t D, std::size_t H, class T = float, backend B = cpu>
class multi_head_attention {
  static_assert(D == dyn || H == dyn || (H > 0 && D % H == 0),
                "multi_head_attention: d_model must be a multiple of the number of heads");

 public:
  /// Extent of one head: D / H, or dyn when either is dyn.
  static constexpr std::size_t head_extent = (D == dyn || H == dyn) ? dyn : D / H;
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
    const std::size_t batch = x.extent(0), seq = x.extent(1);
    auto q = split_heads(q_proj_(x), batch, seq);  // (batch·H, seq, d_head)
    auto k = split_heads(k_proj_(x), batch, seq);  // (batch·H, seq, d_head)
    auto v = split_heads(v_proj_(x), batch, seq);  // (batch·H, seq, d_head)
    if (options_.rope) {
      q = rope(q, 0, options_.rope_base);
      k = rope(k, 0, options_.rope_base);
    }
    // Scaling q instead of the scores gives the same scores for less work.
    q = q * static_cast<T>(1 / std::sqrt(static_cast<double>(head_dim())));
    auto scores = bmm<trans::b>(q, k);  // (batch·H, seq, seq)
    const fn::attention_mask_rule rule = mask_rule(mask, batch, seq);
    const bool padded = rule.lengths || rule.padding;
    if (rule.causal || padded)
      scores = scores + constant(generate<T>(scores.shape(), fn::attention_additive_mask<T>{rule}));
    auto weights = softmax(scores);  // (batch·H, seq, seq)
    if (padded)
      weights = mul_cols(weights, constant(generate<T>(shape<dyn, dyn>{batch * heads_, seq},
                                                       fn::attention_row_keep<T>{rule})));
    auto merged = merge_heads(bmm(weights, v), batch, seq);  // (batch, seq, d_model)
    return reshape(out_proj_(merged), x.shape());
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
  using heads_shape = shape<dyn, head_extent, dyn>;  // (batch·H, d_head, seq)

  template <class S2>
  static var<T, S2, B> constant(tensor<T, S2, B> t) {
    return var<T, S2, B>(std::move(t), nullptr, nullptr);
  }
  template <class T2, class S2, class F>
  static tensor<T2, S2, B> generate(const S2& s, F f) {
    tensor<T2, S2, B> out(s);
    kernels<B>::generate(out.size(), out.data(), f);
    return out;
  }

  /// (batch, seq, d_model) -> (batch·H, seq, d_head): head h of batch b is row block b·H + h.
  template <class S2>
  auto split_heads(const var<T, S2, B>& x, std::size_t batch, std::size_t seq) const {
    auto by_feature = transpose(x);  // (batch, d_model, seq)
    auto by_head = reshape(by_feature, heads_shape::from_extents(std::array{batch * heads_, head_dim(), seq},
                                                                 "multi_head_attention"));
    return transpose(by_head);  // (batch·H, seq, d_head)
  }
  /// The inverse of split_heads.
  template <class S2>
  auto merge_heads(const var<T, S2, B>& x, std::size_t batch, std::size_t seq) const {
    auto by_head = transpose(x);  // (batch·H, d_head, seq)
    auto by_feature = reshape(by_head, shape<dyn, D, dyn>::from_extents(std::array{batch, d_model(), seq},
                                                                        "multi_head_attention"));
    return transpose(by_feature);  // (batch, seq, d_model)
  }

  /// Checks the mask's shapes against x (batch, seq, d_model), and, where they
  /// are on the host, its lengths.
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
  }

  /// The call's mask as a rule the mask functors apply, after check_mask.
  fn::attention_mask_rule mask_rule(const attention_mask<B>& m, std::size_t batch, std::size_t seq) const {
    check_mask(m, batch, seq);
    return {heads_, seq, m.causal || options_.causal, m.key_lengths.defined() ? m.key_lengths.data() : nullptr,
            m.key_padding.defined() ? m.key_padding.data() : nullptr};
  }

  projection q_proj_, k_proj_, v_proj_, out_proj_;
  std::size_t heads_;
  attention_options options_;
};

}  // namespace moekit::nn
