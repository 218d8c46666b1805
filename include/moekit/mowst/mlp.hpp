// moekit/mowst/mlp.hpp — the MLP skeleton Mowst uses for its weak expert and
// for its gate (the reference's model1 and GateMLP):
//
//   L - 1 times: h = dropout(relu(norm(linear_l(h))))     norm: batch norm, optional
//   out = linear_L(h)                                      (n, out)
//
// the same layer order as graph::gnn, with linear layers in place of the
// convolutions, so the weak and the strong expert differ only in what they
// aggregate. Node features of citation graphs are sparse bag-of-words (1.3 %
// non-zero on Cora), so the first layer also accepts them as a CSR matrix and
// then runs as an SpMM: X·W with dW = Xᵀ·dY, the same values as the dense
// product at a fraction of its cost.
//
//   mowst::mlp<> net(g, {.in = 1433, .hidden = 64, .out = 7, .layers = 2});
//   auto logits = net(t.input(x));        // (n, 1433) dense
//   auto same = net(mowst::sparse_rows(x));  // the same logits from the CSR form
//
// Parameters: "linears.<l>.weight" (in, out), "linears.<l>.bias",
// "norms.<l>.weight", "norms.<l>.bias". Linear layers use PyTorch's default
// initialisation, as torch.nn.Linear in the reference.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/sparse.hpp"
#include "../core/error.hpp"
#include "../nn/batch_norm.hpp"
#include "../nn/dropout.hpp"
#include "../nn/linear.hpp"
#include "../tensor/csr.hpp"

namespace moekit::mowst {

struct mlp_config {
  std::size_t in = 0, hidden = 0, out = 0;
  std::size_t layers = 2;   // linear layers (>= 1)
  double dropout = 0.5;     // after each hidden layer's activation
  bool batch_norm = true;   // after each hidden linear layer
  std::uint64_t seed = 0;   // dropout stream
};

/// The non-zeros of a dense (n, d) matrix as a CSR matrix (n, d) whose row i
/// holds row i's non-zeros: the sparse input form of mlp.
template <class T, class S>
graph::csr<T> sparse_rows(const tensor<T, S>& x) {
  static_assert(S::rank() == 2, "sparse_rows: x must be (rows, cols)");
  const std::size_t n = x.extent(0), d = x.extent(1);
  std::vector<index_t> ptr(n + 1, 0), col;
  std::vector<T> val;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < d; ++j)
      if (const T v = x(i, j); v != T(0)) {
        col.push_back(static_cast<index_t>(j));
        val.push_back(v);
      }
    ptr[i + 1] = static_cast<index_t>(col.size());
  }
  tensor<T, shape<dyn>> values(shape<dyn>{val.size()});
  for (std::size_t k = 0; k < val.size(); ++k) values[k] = val[k];
  return graph::csr<T>(n, d, moekit::detail::index_tensor_of(ptr), moekit::detail::index_tensor_of(col),
                       std::move(values));
}

template <class T = float, backend B = cpu>
class mlp {
 public:
  using value_type = T;
  using output_type = var<T, shape<dyn, dyn>, B>;

  mlp(rng& g, const mlp_config& c) : config_(c), dropout_(c.dropout, c.seed) {
    if (c.layers == 0) throw value_error("mlp: needs at least one layer");
    if (c.in == 0 || c.out == 0 || (c.layers > 1 && c.hidden == 0))
      throw value_error("mlp: in, out and (with more than one layer) hidden must be positive");
    std::size_t width = c.in;
    for (std::size_t l = 0; l < c.layers; ++l) {
      const bool last = l + 1 == c.layers;
      linears_.emplace_back(g, width, last ? c.out : c.hidden);
      width = linears_.back().out_features();
      if (!last && c.batch_norm) norms_.emplace_back(width);
    }
  }

  /// (n, in) -> (n, out).
  template <class S>
  output_type operator()(const var<T, S, B>& x) {
    return rest(linears_[0](x));
  }
  /// The same for inputs given as a CSR matrix (n, in) (sparse_rows): the
  /// first layer is spmm(x, W) + b, the gradient of W is xᵀ·dY.
  output_type operator()(const graph::csr<T, B>& x) { return rest(linears_[0](x)); }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept {
    dropout_.set_training(on);
    for (auto& n : norms_) n.set_training(on);
  }

  const mlp_config& config() const noexcept { return config_; }
  std::size_t layers() const noexcept { return linears_.size(); }

  template <class V>
  void parameters(V&& visit) {
    nn::layer_list<nn::linear<dyn, dyn, T, B>> linears{&linears_};
    visit("linears", linears);
    nn::layer_list<nn::batch_norm1d<dyn, T, B>> norms{&norms_};
    if (!norms_.empty()) visit("norms", norms);
  }

 private:
  /// Everything after the first linear layer.
  output_type rest(output_type h) {
    for (std::size_t l = 1; l < linears_.size(); ++l) {
      if (!norms_.empty()) h = norms_[l - 1](h);
      h = linears_[l](dropout_(relu(h)));
    }
    return h;
  }

  mlp_config config_;
  std::vector<nn::linear<dyn, dyn, T, B>> linears_;
  std::vector<nn::batch_norm1d<dyn, T, B>> norms_;  // after each hidden linear layer
  nn::dropout dropout_;
};

}  // namespace moekit::mowst
