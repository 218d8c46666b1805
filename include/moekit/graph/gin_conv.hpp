// moekit/graph/gin_conv.hpp — the graph isomorphism network layer of Xu et
// al. (PyG GINConv):
//
//   h'_i = MLP((1 + ε) · h_i + Σ_{j -> i} h_j)
//
// The sum is an SpMM with the plain adjacency (prepare() returns it as it is).
// ε is fixed (Mowst's setting: 0, not trained) or a learned scalar. The MLP
// has `mlp_layers` linear layers in -> out -> ... -> out with batch norm
// (optional) and ReLU between them, none after the last.
//
// Parameters: "eps" (1, only when trained), "mlp.<l>.weight", "mlp.<l>.bias",
// "norm.<l>.weight", "norm.<l>.bias" (l < mlp_layers - 1, with batch norm).
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/matmul.hpp"
#include "../autograd/ops/sparse.hpp"
#include "../nn/batch_norm.hpp"
#include "../nn/linear.hpp"
#include "normalize.hpp"

namespace moekit::graph {

struct gin_options {
  double eps = 0.0;
  bool train_eps = false;      // learn ε (starting at `eps`)
  std::size_t mlp_layers = 2;  // linear layers of the MLP (>= 1)
  bool mlp_batch_norm = true;  // batch norm after each hidden linear layer of the MLP
  gin_options last_layer() const { return *this; }
};

template <std::size_t In = dyn, std::size_t Out = dyn, class T = float, backend B = cpu>
class gin_conv {
 public:
  using value_type = T;
  using backend_type = B;
  using options = gin_options;

  gin_conv(rng& g, std::size_t in = In, std::size_t out = Out, const options& o = {})
      : eps_(static_cast<T>(o.eps)), first_(g, in, out) {
    if (o.mlp_layers == 0) throw value_error("gin_conv: the MLP needs at least one layer");
    if (o.train_eps) eps_param_ = parameter<T, shape<1>, B>(full<T, B>(shape<1>{}, static_cast<T>(o.eps)));
    for (std::size_t l = 1; l < o.mlp_layers; ++l) {
      if (o.mlp_batch_norm) norms_.emplace_back(out);
      rest_.emplace_back(g, out, out);
    }
  }

  /// The adjacency this layer expects: a itself (sum aggregation).
  static csr<T, B> prepare(const csr<T, B>& a) { return sum_norm(a); }

  /// (n, in) -> (n, out) over the adjacency `adj` (n, n). x is a var, or CSR
  /// rows (sparse features): the first linear layer then runs first, as
  /// (A + (1 + ε)I)·(x·W) + b, and x·W is an SpMM over the non-zeros.
  template <class X>
  auto operator()(const csr<T, B>& adj, const X& x) {
    auto h = first_layer(adj, x);  // (n, out)
    for (std::size_t l = 0; l < rest_.size(); ++l) {
      if (!norms_.empty()) h = norms_[l](h);
      h = rest_[l](relu(h));
    }
    return h;
  }

  std::size_t in_features() const noexcept { return first_.in_features(); }
  std::size_t out_features() const noexcept { return first_.out_features(); }
  /// The current ε.
  T eps() const noexcept { return eps_param_.value().defined() ? eps_param_.value()[0] : eps_; }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept {
    for (auto& n : norms_) n.set_training(on);
  }

  template <class V>
  void parameters(V&& visit) {
    if (eps_param_.value().defined()) visit("eps", eps_param_);
    mlp_list mlp{this};
    visit("mlp", mlp);
    norm_list norm{this};
    if (!norms_.empty()) visit("norm", norm);
  }

 private:
  /// The first linear layer of the MLP applied to (1 + ε)·x_i + Σ_j x_j. (n, out)
  template <class X>
  auto first_layer(const csr<T, B>& adj, const X& x) {
    if constexpr (std::is_same_v<X, csr<T, B>>) {
      auto xw = spmm(x, first_.weight());      // (n, out)
      auto h = spmm(adj, xw) + self_term(xw);  // (n, out)
      return first_.has_bias() ? add_rows(h, first_.bias()) : h;
    } else {
      return first_(spmm(adj, x) + self_term(x));  // (n, out)
    }
  }

  /// (1 + ε)·x. A learned ε is a (1) parameter; x·(1 + ε) is then a
  /// (n·in, 1) x (1, 1) product, the one op that broadcasts a var scalar.
  template <class S>
  auto self_term(const var<T, S, B>& x) const {
    if (!eps_param_.value().defined()) return x * (T(1) + eps_);
    const shape<dyn, 1> column{x.size()};
    auto scaled = matmul(reshape(x, column), reshape(eps_param_ + T(1), shape<1, 1>{}));  // (n·in, 1)
    return reshape(scaled, x.shape());
  }

  // The MLP's linear layers as one list ("mlp.0", "mlp.1", ...) for parameters(),
  // made on the fly there (a stored back-pointer would dangle after a move).
  struct mlp_list {
    gin_conv* self;
    template <class V>
    void parameters(V&& visit) {
      visit("0", self->first_);
      for (std::size_t l = 0; l < self->rest_.size(); ++l) visit(std::to_string(l + 1), self->rest_[l]);
    }
  };
  struct norm_list {
    gin_conv* self;
    template <class V>
    void parameters(V&& visit) {
      for (std::size_t l = 0; l < self->norms_.size(); ++l) visit(std::to_string(l), self->norms_[l]);
    }
  };

  T eps_;
  parameter<T, shape<1>, B> eps_param_;                 // (1), undefined when ε is fixed
  nn::linear<In, Out, T, B> first_;                      // (in, out)
  std::vector<nn::linear<Out, Out, T, B>> rest_;         // (out, out) each
  std::vector<nn::batch_norm1d<Out, T, B>> norms_;       // before each of rest_'s ReLUs
};

}  // namespace moekit::graph
