// moekit/graph/sage_conv.hpp — GraphSAGE with mean aggregation and a root
// weight (PyG SAGEConv, aggr="mean"):
//
//   h'_i = W_neigh · mean_{j -> i} h_j + W_root · h_i + b
//
// The mean is an SpMM with the row-normalised adjacency from prepare(). Since
// mean(H)·W = mean(H·W), the layer multiplies by W_neigh before aggregating
// when that shrinks the rows, and after otherwise: the SpMM then always moves
// min(in, out) columns. A node without in-neighbours aggregates zero.
//
// Parameters: "lin_neigh.weight" (in, out), "lin_root.weight" (in, out),
// "bias" (out). Weights as torch.nn.Linear, bias zero.
#pragma once

#include <cstddef>
#include <optional>
#include <type_traits>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/sparse.hpp"
#include "../nn/linear.hpp"
#include "normalize.hpp"

namespace moekit::graph {

struct sage_options {
  bool bias = true;
  bool root_weight = true;  // add W_root · h_i
  sage_options last_layer() const { return *this; }
};

template <std::size_t In = dyn, std::size_t Out = dyn, class T = float, backend B = cpu>
class sage_conv {
 public:
  using value_type = T;
  using backend_type = B;
  using options = sage_options;

  sage_conv(rng& g, std::size_t in = In, std::size_t out = Out, const options& o = {})
      : lin_neigh_(g, in, out, {.bias = false}) {
    if (o.root_weight) lin_root_.emplace(g, in, out, nn::linear_options{.bias = false});
    if (o.bias) bias_ = parameter<T, shape<Out>, B>(zeros<T, B>(shape<Out>::from_extents(std::array{out}, "sage_conv")));
  }

  /// The adjacency this layer expects: mean_norm(a).
  static csr<T, B> prepare(const csr<T, B>& a) { return mean_norm(a); }

  /// (n, in) -> (n, out) over the mean adjacency `adj` (n, n). x is a var, or
  /// CSR rows (sparse features: both products with x are then SpMMs, and the
  /// mean is taken after W_neigh).
  template <class X>
  auto operator()(const csr<T, B>& adj, const X& x) const {
    var<T, shape<dyn, Out>, B> h = neighbours(adj, x);  // (n, out)
    // reshape: x's row count may be a static extent, h's is dyn; the sum takes h's type.
    if (lin_root_) h = h + reshape((*lin_root_)(x), h.shape());
    return bias_.value().defined() ? add_rows(h, bias_) : h;
  }

  std::size_t in_features() const noexcept { return lin_neigh_.in_features(); }
  std::size_t out_features() const noexcept { return lin_neigh_.out_features(); }

  template <class V>
  void parameters(V&& visit) {
    visit("lin_neigh", lin_neigh_);
    if (lin_root_) visit("lin_root", *lin_root_);
    if (bias_.value().defined()) visit("bias", bias_);
  }

 private:
  /// W_neigh · mean_{j -> i} x_j, multiplying first when that shrinks the rows. (n, out)
  template <class X>
  auto neighbours(const csr<T, B>& adj, const X& x) const -> var<T, shape<dyn, Out>, B> {
    if constexpr (std::is_same_v<X, csr<T, B>>) return spmm(adj, lin_neigh_(x));
    else if (out_features() < in_features()) return spmm(adj, lin_neigh_(x));
    else return lin_neigh_(spmm(adj, x));
  }

  nn::linear<In, Out, T, B> lin_neigh_;               // (in, out)
  std::optional<nn::linear<In, Out, T, B>> lin_root_;  // (in, out), absent without root weight
  parameter<T, shape<Out>, B> bias_;                  // (out)
};

}  // namespace moekit::graph
