// moekit/graph/gcn_conv.hpp — the graph convolution of Kipf & Welling (PyG
// GCNConv): H' = Â·(H·W) + b with Â = D^-1/2 (A + I) D^-1/2. The product with
// W comes first because it usually shrinks the rows (1433 -> 64 on Cora), so
// the SpMM moves fewer columns. Â is computed once by prepare() and passed to
// every call (PyG's cached=True).
//
//   auto adj = graph::gcn_conv<>::prepare(a);     // gcn_norm(a)
//   graph::gcn_conv<> conv(g, 1433, 64);
//   auto h = conv(adj, x);                        // (n, 1433) -> (n, 64)
//
// Parameters: "lin.weight" (in, out), "bias" (out). Weight Glorot-uniform,
// bias zero, as PyG.
#pragma once

#include <cstddef>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/sparse.hpp"
#include "../nn/linear.hpp"
#include "normalize.hpp"

namespace moekit::graph {

struct gcn_options {
  bool bias = true;
  /// Options of the last layer of a gnn model (the same for GCN).
  gcn_options last_layer() const { return *this; }
};

template <std::size_t In = dyn, std::size_t Out = dyn, class T = float, backend B = cpu>
class gcn_conv {
 public:
  using value_type = T;
  using backend_type = B;
  using options = gcn_options;

  gcn_conv(rng& g, std::size_t in = In, std::size_t out = Out, const options& o = {})
      : lin_(g, in, out, {.bias = false, .weight_init = nn::init::xavier_uniform}) {
    if (o.bias) bias_ = parameter<T, shape<Out>, B>(zeros<T, B>(shape<Out>::from_extents(std::array{out}, "gcn_conv")));
  }

  /// The adjacency this layer expects: gcn_norm(a).
  static csr<T, B> prepare(const csr<T, B>& a) { return gcn_norm(a); }

  /// (n, in) -> (n, out) over the normalised adjacency `adj` (n, n). x is a
  /// var, or CSR rows (sparse features: H·W is then an SpMM over the non-zeros).
  template <class X>
  auto operator()(const csr<T, B>& adj, const X& x) const {
    auto h = spmm(adj, lin_(x));  // (n, out)
    return bias_.value().defined() ? add_rows(h, bias_) : h;
  }

  std::size_t in_features() const noexcept { return lin_.in_features(); }
  std::size_t out_features() const noexcept { return lin_.out_features(); }

  template <class V>
  void parameters(V&& visit) {
    visit("lin", lin_);
    if (bias_.value().defined()) visit("bias", bias_);
  }

 private:
  nn::linear<In, Out, T, B> lin_;   // (in, out), no bias: the bias is added after aggregation
  parameter<T, shape<Out>, B> bias_;  // (out)
};

}  // namespace moekit::graph
