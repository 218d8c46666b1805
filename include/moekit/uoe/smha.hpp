// moekit/uoe/smha.hpp — selective multi-head attention: the H heads of a
// multi-head attention are the experts, and each head attends only over the
// c tokens of each sample it selects (uoe::select_tokens, E = H):
//
//   sel     = router.select(x)                          c slots per (head, sample)
//   xs      = x[sel.token]                              (H·batch·c, d) grouped by head
//   q, k, v = grouped GEMMs with Wq, Wk, Wv (H, d, dh)  one per projection
//   [RoPE on q and k at the tokens' ORIGINAL positions]
//   a       = attention per (head, sample) row          (H·batch, c, dh)
//             causal on original positions, the sample's key padding gathered
//             for the kept keys, padding slots (causal mode) hidden
//   o       = grouped GEMM with Wo (H, dh, d)           (H·batch·c, d)
//   out     = Σ weight · o scattered to the tokens + bo (batch, seq, d)
//
// With every head on every token (top_k = H, capacity 1, faithful) this is
// multi-head attention exactly (uoe::decompose makes one from the other).
// A token no head kept gets bo only. Attention costs O(c²) per head and
// sample instead of O(seq²).
//
// Parameter names: "router.weight", "router.bias", "wq", "bq", "wk", "bk",
// "wv", "bv" ((H, d, dh), (H, dh)), "wo" (H, dh, d), "bo" (d).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../autograd/ops/attention.hpp"
#include "../autograd/ops/auxiliary_loss.hpp"
#include "../autograd/ops/combine.hpp"
#include "../autograd/ops/grouped.hpp"
#include "../autograd/ops/rope.hpp"
#include "../nn/attention.hpp"
#include "router.hpp"

namespace moekit::uoe {

struct smha_options {
  std::size_t d_model = 64, heads = 4;
  selection_options select{.top_k = 2};  // heads per token, capacity per head and sample
  bool causal = false;                   // mask keys after the query's original position
  bool rope = false;                     // RoPE on q and k at original positions (even d_head)
  double rope_base = 10000;
};

namespace fn {
/// (H·batch, width) key padding flags by position: row r = h·batch + b reads
/// sample b's flags (none: 0) for positions < seq; position seq, where
/// padding slots sit, is padding.
struct padding_of_row {
  const std::uint8_t* padding;  // (batch, seq) or null
  std::size_t batch, seq, width;
  MOEKIT_HOST_DEVICE std::uint8_t operator()(std::size_t i) const {
    const std::size_t s = i % width;
    if (s >= seq) return 1;
    return padding ? padding[(i / width % batch) * seq + s] : std::uint8_t(0);
  }
};
}  // namespace fn

template <class T = float, backend B = cpu>
class smha {
 public:
  smha(rng& g, const smha_options& o) : router_(g, o.d_model, o.heads, o.select), options_(o) {
    check(o);
    const std::size_t d = o.d_model, h = o.heads, dh = d / h;
    auto weight = [&](std::size_t in, std::size_t out, std::size_t fan_in) {
      return parameter<T, shape<dyn, dyn, dyn>, B>(
          nn::init_weight<T, B>(g, shape<dyn, dyn, dyn>{h, in, out}, fan_in, d, nn::init::pytorch_default));
    };
    auto bias = [&] {
      return parameter<T, shape<dyn, dyn>, B>(nn::init_bias<T, B>(g, shape<dyn, dyn>{h, dh}, d, nn::init::pytorch_default));
    };
    wq_ = weight(d, dh, d), bq_ = bias(), wk_ = weight(d, dh, d), bk_ = bias(), wv_ = weight(d, dh, d), bv_ = bias();
    wo_ = weight(dh, d, d);
    bo_ = parameter<T, shape<dyn>, B>(nn::init_bias<T, B>(g, shape<dyn>{d}, d, nn::init::pytorch_default));
  }

  /// x (batch, seq, d) -> (batch, seq, d); `mask` may carry key_padding
  /// (batch, seq) and causal (or'ed with the options').
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x, const attention_mask<B>& mask = {}) {
    static_assert(S::rank() == 3, "uoe::smha: x must be (batch, seq, d_model)");
    const std::size_t batch = x.extent(0), seq = x.extent(1), d = x.extent(2), h = heads(), dh = head_dim();
    if (d != options_.d_model)
      throw shape_error("uoe::smha: x " + x.shape().str() + ": last extent differs from d_model " +
                        std::to_string(options_.d_model));
    if (mask.key_lengths.defined() || mask.query_positions.defined() || mask.key_positions.defined())
      throw value_error("uoe::smha: the mask may hold key_padding (batch, seq) and causal only");
    if (mask.key_padding.defined() && (mask.key_padding.extent(0) != batch || mask.key_padding.extent(1) != seq))
      throw shape_error("uoe::smha: key_padding " + mask.key_padding.shape().str() + " for x " + x.shape().str() +
                        ": needs (batch, seq)");
    auto rows = reshape(x, shape<dyn, dyn>{batch * seq, d});                            // (T, d)
    last_ = router_.select(rows, batch, seq);
    const std::size_t c = last_.slots, r = h * batch, a = r * c;
    const auto offsets = arange<index_t, B>(h + 1, index_t{0}, static_cast<index_t>(batch * c));  // (H + 1)
    auto xs = gather_rows(rows, last_.token);                                           // (A, d) by head
    auto project = [&](const auto& w, const auto& b, bool rotate) {
      auto p = reshape(add_grouped_rows(grouped_matmul(xs, w, offsets), b, offsets), shape<dyn, dyn, dyn>{r, c, dh});
      return rotate && options_.rope ? rope(p, last_.position, options_.rope_base) : p;  // (H·batch, c, dh)
    };
    auto q = project(wq_, bq_, true), k = project(wk_, bk_, true), v = project(wv_, bv_, false);
    attention_mask<B> m;
    m.causal = mask.causal || options_.causal;
    m.query_positions = m.key_positions = last_.position;                              // (H·batch, c)
    if (mask.key_padding.defined() || last_.length.defined()) {  // the sample's flags, and padding slots at seq
      const std::size_t width = last_.length.defined() ? seq + 1 : seq;
      const std::uint8_t* flags = mask.key_padding.defined() ? mask.key_padding.data() : nullptr;
      m.key_padding = generate<std::uint8_t, B>(shape<dyn, dyn>{r, width}, fn::padding_of_row{flags, batch, seq, width});
    }
    auto att = reshape(scaled_dot_product_attention(q, k, v, m), shape<dyn, dyn>{a, dh});  // (A, dh)
    auto o = grouped_matmul(att, wo_, offsets);                                            // (A, d)
    auto out = add_rows(weighted_scatter_add_rows(o, last_.token, batch * seq, last_.weight), bo_);  // (T, d)
    return reshape(add_auxiliary_loss(out, last_.aux_loss), x.shape());                     // (batch, seq, d)
  }

  std::size_t heads() const noexcept { return options_.heads; }
  std::size_t head_dim() const noexcept { return options_.d_model / options_.heads; }
  const smha_options& options() const noexcept { return options_; }
  /// The last forward's selection (its weight lives on that tape).
  const selection<T, B>& last_selection() const noexcept { return last_; }
  router<T, B>& router_layer() noexcept { return router_; }
  auto& wq() noexcept { return wq_; }
  auto& bq() noexcept { return bq_; }
  auto& wk() noexcept { return wk_; }
  auto& bk() noexcept { return bk_; }
  auto& wv() noexcept { return wv_; }
  auto& bv() noexcept { return bv_; }
  auto& wo() noexcept { return wo_; }
  auto& bo() noexcept { return bo_; }

  template <class V>
  void parameters(V&& visit) {
    visit("router", router_);
    visit("wq", wq_), visit("bq", bq_), visit("wk", wk_), visit("bk", bk_), visit("wv", wv_), visit("bv", bv_);
    visit("wo", wo_), visit("bo", bo_);
  }

 private:
  static void check(const smha_options& o) {
    if (o.heads == 0 || o.d_model % o.heads != 0)
      throw value_error("uoe::smha: d_model " + std::to_string(o.d_model) + " must be a positive multiple of the " +
                        std::to_string(o.heads) + " heads");
    if (o.rope && (o.d_model / o.heads) % 2 != 0)
      throw value_error("uoe::smha: RoPE needs an even head dimension, got " + std::to_string(o.d_model / o.heads));
  }

  router<T, B> router_;
  smha_options options_;
  parameter<T, shape<dyn, dyn, dyn>, B> wq_, wk_, wv_;  // (H, d, dh)
  parameter<T, shape<dyn, dyn>, B> bq_, bk_, bv_;       // (H, dh)
  parameter<T, shape<dyn, dyn, dyn>, B> wo_;            // (H, dh, d)
  parameter<T, shape<dyn>, B> bo_;                      // (d), once per token
  selection<T, B> last_;
};

}  // namespace moekit::uoe
