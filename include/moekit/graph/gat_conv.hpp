// moekit/graph/gat_conv.hpp — graph attention (Veličković et al.; PyG GATConv)
// with H heads of F channels each:
//
//   z = h·W                                          (n, H·F)
//   e_ij = LeakyReLU_0.2(a_srcᵀ z_j + a_dstᵀ z_i)    per head, one per edge j -> i
//   α_ij = softmax over i's incoming edges j (its self-loop included) of e_ij
//   h'_i = Σ_j α_ij z_j                              heads concatenated (n, H·F) or averaged (n, F)
//
// The per-node scores a·z are computed once (n, H) and gathered to the edges;
// the softmax is a segment softmax over each row of the adjacency, and the
// weighted sum an SpMM with the (nnz, H) attention weights as values.
// Gradients reach W, a_src, a_dst and the input through all of them. Attention
// dropout (optional) drops edges of the softmax in training mode.
//
// Parameters: "lin.weight" (in, H·F), "att_src" (H·F), "att_dst" (H·F),
// "bias" (H·F when concatenating, else F). Glorot-uniform weights, bias zero.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/index.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../autograd/ops/sparse.hpp"
#include "../nn/dropout.hpp"
#include "../nn/linear.hpp"
#include "normalize.hpp"

namespace moekit::graph {

struct gat_options {
  std::size_t heads = 1;
  bool concat = true;               // concatenate the heads (else average them)
  double negative_slope = 0.2;      // of the LeakyReLU on the scores
  double attention_dropout = 0.0;   // probability of dropping an attention weight in training
  bool bias = true;
  std::uint64_t seed = 0;           // of the attention dropout stream
  /// Mowst's (and GAT's) output layer: one head, no concatenation.
  gat_options last_layer() const {
    gat_options o = *this;
    o.heads = 1;
    o.concat = false;
    return o;
  }
};

template <std::size_t In = dyn, std::size_t Out = dyn, class T = float, backend B = cpu>
class gat_conv {
 public:
  using value_type = T;
  using backend_type = B;
  using options = gat_options;
  using output_type = var<T, shape<dyn, dyn>, B>;

  /// `out` channels per head.
  gat_conv(rng& g, std::size_t in = In, std::size_t out = Out, const options& o = {})
      : heads_(o.heads), channels_(out), concat_(o.concat), slope_(static_cast<T>(o.negative_slope)),
        lin_(g, in, o.heads * out, {.bias = false, .weight_init = nn::init::xavier_uniform}),
        att_src_(attention_init(g, o.heads, out)), att_dst_(attention_init(g, o.heads, out)),
        attention_dropout_(o.attention_dropout, o.seed) {
    if (o.heads == 0 || out == 0) throw value_error("gat_conv: heads and channels must be positive");
    if (o.bias) bias_ = parameter<T, shape<dyn>, B>(zeros<T, B>(shape<dyn>{out_features()}));
  }

  /// The adjacency this layer expects: a with exactly one self-loop per node
  /// (PyG removes existing loops and adds them back) and no values.
  static csr<T, B> prepare(const csr<T, B>& a) {
    const csr<T, B> looped = add_self_loops(remove_self_loops(a));
    return csr<T, B>(looped.structure(), {});
  }

  /// (n, in) -> (n, H·F) or (n, F) over the adjacency `adj` (n, n). x is a
  /// var, or CSR rows (sparse features: h·W is then an SpMM over the non-zeros).
  template <class X>
  output_type operator()(const csr<T, B>& adj, const X& x) {
    const std::size_t n = adj.rows(), hf = heads_ * channels_;
    auto z = reshape(lin_(x), shape<dyn, dyn>{n, hf});                                          // (n, H·F)
    auto scores = [&](const auto& att) {                                                        // (n, H)
      return sum<2>(reshape(mul_rows(z, att), shape<dyn, dyn, dyn>{n, heads_, channels_}));
    };
    auto e = gather_rows(scores(att_src_), adj.col()) + gather_rows(scores(att_dst_), adj.row());  // (nnz, H)
    auto alpha = attention_dropout_(segment_softmax(adj, leaky_relu(e, slope_)));              // (nnz, H)
    output_type h = spmm(adj, alpha, z);                                                        // (n, H·F)
    if (!concat_ && heads_ > 1) h = mean<1>(reshape(h, shape<dyn, dyn, dyn>{n, heads_, channels_}));  // (n, F)
    else if (!concat_) h = reshape(h, shape<dyn, dyn>{n, channels_});
    return bias_.value().defined() ? add_rows(h, bias_) : h;
  }

  std::size_t in_features() const noexcept { return lin_.in_features(); }
  std::size_t out_features() const noexcept { return concat_ ? heads_ * channels_ : channels_; }
  std::size_t heads() const noexcept { return heads_; }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept { attention_dropout_.set_training(on); }

  template <class V>
  void parameters(V&& visit) {
    visit("lin", lin_);
    visit("att_src", att_src_);
    visit("att_dst", att_dst_);
    if (bias_.value().defined()) visit("bias", bias_);
  }

 private:
  /// Glorot-uniform over the (H, F) attention vector, as PyG.
  static parameter<T, shape<dyn>, B> attention_init(rng& g, std::size_t heads, std::size_t out) {
    const T bound = static_cast<T>(std::sqrt(6.0 / static_cast<double>(heads + out)));
    return parameter<T, shape<dyn>, B>(uniform<T, B>(g, shape<dyn>{heads * out}, -bound, bound));
  }

  std::size_t heads_, channels_;
  bool concat_;
  T slope_;
  nn::linear<In, dyn, T, B> lin_;         // (in, H·F), no bias
  parameter<T, shape<dyn>, B> att_src_;   // (H·F): a_src of head h at [h·F, (h + 1)·F)
  parameter<T, shape<dyn>, B> att_dst_;   // (H·F)
  parameter<T, shape<dyn>, B> bias_;      // (H·F) or (F)
  nn::dropout attention_dropout_;
};

}  // namespace moekit::graph
