// moekit/graph/gnn.hpp — gnn<Conv>: the full-batch node classifier Mowst uses
// as its strong expert (and as the GNN baselines):
//
//   L - 1 times: h = dropout(act(norm(conv_l(A, h))))     norm: batch norm, optional
//   logits = conv_L(A, h)                                  (n, classes)
//
// Conv is one of gcn_conv, sage_conv, gin_conv, gat_conv (with dyn sizes).
// Every layer gets the same conv options except the last, which gets
// options.last_layer() (for GAT: one head, no concatenation). A hidden GAT
// layer with H concatenated heads outputs hidden·H features; the next layer is
// built for that width (the reference code's hidden GAT layers were not).
//
//   using model = graph::gnn<graph::gcn_conv<>>;
//   model net(g, {.in = 1433, .hidden = 64, .classes = 7, .layers = 2, .dropout = 0.5});
//   auto adj = model::prepare(graph::make_csr(edges, {.symmetrize = true}));
//   auto logits = net(adj, t.input(features));
//
// Parameters: "convs.<l>.*", "norms.<l>.weight", "norms.<l>.bias".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../autograd/ops/activation.hpp"
#include "../core/error.hpp"
#include "../nn/batch_norm.hpp"
#include "../nn/dropout.hpp"
#include "../tensor/csr.hpp"

namespace moekit::graph {

enum class activation { relu, elu };

struct gnn_config {
  std::size_t in = 0, hidden = 0, classes = 0;
  std::size_t layers = 2;          // conv layers (>= 1)
  double dropout = 0.5;            // after each hidden layer's activation
  bool batch_norm = true;          // after each hidden conv
  activation act = activation::relu;
  std::uint64_t seed = 0;          // dropout stream
};

template <class Conv>
class gnn {
 public:
  using conv_type = Conv;
  using T = typename Conv::value_type;
  using B = typename Conv::backend_type;
  using options = typename Conv::options;
  using output_type = var<T, shape<dyn, dyn>, B>;

  gnn(rng& g, const gnn_config& c, const options& o = {}) : config_(c), dropout_(c.dropout, c.seed) {
    if (c.layers == 0) throw value_error("gnn: needs at least one layer");
    if (c.in == 0 || c.classes == 0 || (c.layers > 1 && c.hidden == 0))
      throw value_error("gnn: in, classes and (with more than one layer) hidden must be positive");
    std::size_t width = c.in;
    for (std::size_t l = 0; l < c.layers; ++l) {
      const bool last = l + 1 == c.layers;
      convs_.emplace_back(g, width, last ? c.classes : c.hidden, last ? o.last_layer() : o);
      width = convs_.back().out_features();
      if (!last && c.batch_norm) norms_.emplace_back(width);
    }
  }

  /// The adjacency the convolutions expect, from the raw graph (compute once).
  static csr<T, B> prepare(const csr<T, B>& a) { return Conv::prepare(a); }

  /// (n, in) -> (n, classes) logits over the prepared adjacency. x is a var,
  /// or CSR rows (sparse features, e.g. sparse_rows(dense)): the first layer's
  /// product with its weight is then an SpMM over the non-zeros.
  template <class X>
  output_type operator()(const csr<T, B>& adj, const X& x) {
    output_type h = convs_[0](adj, x);
    for (std::size_t l = 1; l < convs_.size(); ++l) {
      if (!norms_.empty()) h = norms_[l - 1](h);
      h = dropout_(config_.act == activation::elu ? elu(h) : relu(h));
      h = convs_[l](adj, h);
    }
    return h;
  }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept {
    dropout_.set_training(on);
    for (auto& n : norms_) n.set_training(on);
    for (auto& c : convs_)
      if constexpr (requires { c.set_training(on); }) c.set_training(on);
  }

  const gnn_config& config() const noexcept { return config_; }
  Conv& conv(std::size_t l) noexcept { return convs_[l]; }
  std::size_t layers() const noexcept { return convs_.size(); }

  template <class V>
  void parameters(V&& visit) {
    nn::layer_list<Conv> convs{&convs_};
    visit("convs", convs);
    nn::layer_list<nn::batch_norm1d<dyn, T, B>> norms{&norms_};
    if (!norms_.empty()) visit("norms", norms);
  }

 private:
  gnn_config config_;
  std::vector<Conv> convs_;
  std::vector<nn::batch_norm1d<dyn, T, B>> norms_;  // after each hidden conv
  nn::dropout dropout_;
};

}  // namespace moekit::graph
