// moekit/mowst/mowst.hpp — Mowst, the mixture of a weak and a strong expert
// on graphs (Zeng et al., ICLR 2024; reference facebookresearch/mowst-gnn):
//
//   weak expert    z_weak   = mlp(x)                 (n, K) sees each node's own features only
//   strong expert  z_strong = gnn<Conv>(Â, x)        (n, K) sees the neighbourhood
//   gate           C        = confidence_gate(z_weak [, x])   (n) in (0, 1)
//
// and its two losses over the labelled nodes (rows already gathered):
//
//   mowst_loss       mean_i C_i·CE(z_weak_i, y_i) + (1 − C_i)·CE(z_strong_i, y_i)
//                    (the expected loss of the sampled rule "weak if q < C")
//   mowst_star_loss  CE(C·z_weak + (1 − C)·z_strong, y): the reference mixes
//                    raw logits (train_test_engine.py, --method mowst_star)
//
// Training loops are in training.hpp, the inference rules in inference.hpp.
//
//   using model = mowst::mixture<graph::gcn_conv<>>;
//   auto in = mowst::make_inputs<graph::gcn_conv<>>(io::load_graph(dir));
//   model m(g, {.hidden = 64}, {.hidden = 64}, {.hidden = 64}, in);
//   tape t;
//   auto out = m(in, t);    // out.weak, out.strong, out.confidence
//
// Parameters: "weak.*", "strong.*", "gate.*".
#pragma once

#include <cstddef>
#include <string>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/index.hpp"
#include "../autograd/ops/loss.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../data/graph_dataset.hpp"
#include "../graph/gnn.hpp"
#include "confidence.hpp"
#include "mlp.hpp"

namespace moekit::mowst {

/// A node-classification graph in the form the mixture reads it.
template <class T = float, backend B = cpu>
struct graph_inputs {
  graph::csr<T, B> adj;                      // (n, n), prepared for the strong expert's convolution
  tensor<T, shape<dyn, dyn>, B> features;    // (n, F) dense: the strong expert's (and gate's) input
  graph::csr<T, B> sparse_features;          // the same (n, F) as CSR when sparse (else empty): the experts' input
  tensor<index_t, shape<dyn>, B> labels;     // (n), -1 for unlabelled nodes
  tensor<index_t, shape<dyn>, B> train, val, test;  // node ids
  std::size_t classes = 0;

  std::size_t nodes() const noexcept { return features.extent(0); }
  std::size_t num_features() const noexcept { return features.extent(1); }
};

struct input_options {
  bool normalize_features = true;  // divide each feature row by its sum (PyG NormalizeFeatures, Kipf & Welling)
  double sparse_density = 0.1;     // keep a CSR copy of the features when at most this share is non-zero
};

/// The inputs for a mixture whose strong expert uses Conv: the adjacency
/// symmetrised and prepared (Conv::prepare), the features optionally
/// row-normalised, and their CSR form when they are sparse (bag-of-words
/// features are; a CSBM's Gaussian ones are not, and stay dense only).
template <class Conv>
graph_inputs<typename Conv::value_type> make_inputs(const graph::dataset& d, const input_options& o = {}) {
  using T = typename Conv::value_type;
  graph_inputs<T> in;
  in.adj = Conv::prepare(graph::make_csr<T>(d.edges, {.symmetrize = true}));
  in.features = tensor<T, shape<dyn, dyn>>(shape<dyn, dyn>{d.nodes(), d.num_features()});
  for (std::size_t i = 0; i < d.nodes(); ++i) {
    double sum = 0;
    for (std::size_t j = 0; j < d.num_features(); ++j) sum += static_cast<double>(d.features(i, j));
    const double scale = o.normalize_features && sum != 0 ? 1.0 / sum : 1.0;
    for (std::size_t j = 0; j < d.num_features(); ++j)
      in.features(i, j) = static_cast<T>(static_cast<double>(d.features(i, j)) * scale);
  }
  std::size_t nonzeros = 0;
  for (std::size_t k = 0; k < in.features.size(); ++k) nonzeros += in.features.data()[k] != T(0);
  if (static_cast<double>(nonzeros) <= o.sparse_density * static_cast<double>(in.features.size()))
    in.sparse_features = sparse_rows(in.features);
  in.labels = d.labels;
  in.train = d.train;
  in.val = d.val;
  in.test = d.test;
  in.classes = d.classes;
  return in;
}

/// The weak expert's logits for every node: from the CSR features when there
/// are some (the same values, cheaper), else from the dense ones.
template <class T, class B>
var<T, shape<dyn, dyn>, B> weak_logits(mlp<T, B>& weak, const graph_inputs<T, B>& in, tape& t) {
  if (in.sparse_features.rows() != 0) return weak(in.sparse_features);
  return weak(t.input(in.features));
}

/// The strong expert's logits for every node: its first layer reads the CSR
/// features when there are some (the same values, cheaper), else the dense ones.
template <class Conv, class T, class B>
var<T, shape<dyn, dyn>, B> strong_logits(graph::gnn<Conv>& strong, const graph_inputs<T, B>& in, tape& t) {
  if (in.sparse_features.rows() != 0) return strong(in.adj, in.sparse_features);
  return strong(in.adj, t.input(in.features));
}

/// The three outputs of a mixture over all n nodes.
template <class T, class B = cpu>
struct mixture_outputs {
  var<T, shape<dyn, dyn>, B> weak;        // (n, K) logits of the weak expert
  var<T, shape<dyn, dyn>, B> strong;      // (n, K) logits of the strong expert
  var<T, shape<dyn>, B> confidence;       // (n) C, the confidence in the weak expert
};

template <class Conv>
class mixture {
 public:
  using conv_type = Conv;
  using T = typename Conv::value_type;
  using B = typename Conv::backend_type;
  using value_type = T;
  using weak_type = mlp<T, B>;
  using strong_type = graph::gnn<Conv>;
  using gate_type = confidence_gate<T, B>;
  using conv_options = typename Conv::options;

  /// Experts and gate from their configurations; the input width, the class
  /// count and (for a gate on node features) the feature count are taken
  /// from `in`, so those fields of the configs may be left 0.
  mixture(rng& g, mlp_config weak, graph::gnn_config strong, gate_config gate, const graph_inputs<T, B>& in,
          const conv_options& o = {})
      : weak_(g, with_io(weak, in)), strong_(g, with_io(strong, in), o), gate_(g, with_io(gate, in)), options_(o) {}

  /// All three outputs over every node of `in`.
  mixture_outputs<T, B> operator()(const graph_inputs<T, B>& in, tape& t) {
    auto z_weak = weak_logits(weak_, in, t);
    auto c = gate_on(z_weak, in, t);
    return {z_weak, strong_logits(strong_, in, t), c};
  }
  /// The gate's confidence for weak logits over every node of `in`.
  var<T, shape<dyn>, B> gate_on(const var<T, shape<dyn, dyn>, B>& z_weak, const graph_inputs<T, B>& in, tape& t) {
    const gate_config& c = gate_.config();
    if (c.features == 0) return gate_(z_weak);
    // The hyper-network reads x through a linear layer: the CSR rows serve; [D, x] needs x dense.
    if (c.kind == gate_kind::hyper && in.sparse_features.rows() != 0) return gate_(z_weak, in.sparse_features);
    return gate_(z_weak, t.input(in.features));
  }

  weak_type& weak() noexcept { return weak_; }
  strong_type& strong() noexcept { return strong_; }
  gate_type& gate() noexcept { return gate_; }
  const conv_options& options() const noexcept { return options_; }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept {
    weak_.set_training(on);
    strong_.set_training(on);
    gate_.set_training(on);
  }

  template <class V>
  void parameters(V&& visit) {
    visit("weak", weak_);
    visit("strong", strong_);
    visit("gate", gate_);
  }

 private:
  static mlp_config with_io(mlp_config c, const graph_inputs<T, B>& in) {
    c.in = in.num_features();
    c.out = in.classes;
    return c;
  }
  static graph::gnn_config with_io(graph::gnn_config c, const graph_inputs<T, B>& in) {
    c.in = in.num_features();
    c.classes = in.classes;
    return c;
  }
  static gate_config with_io(gate_config c, const graph_inputs<T, B>& in) {
    c.classes = in.classes;
    if (c.features != 0 || c.kind == gate_kind::hyper) c.features = in.num_features();
    return c;
  }

  weak_type weak_;
  strong_type strong_;
  gate_type gate_;
  conv_options options_;
};

namespace detail {
template <class T, class SW, class SS, class SC, class SY, class B>
void check_mixture_rows(const char* op, const var<T, SW, B>& weak, const var<T, SS, B>& strong,
                        const var<T, SC, B>& confidence, const tensor<index_t, SY, B>& labels) {
  static_assert(SW::rank() == 2 && SS::rank() == 2 && SC::rank() == 1, "mowst: logits (n, K) and confidence (n)");
  if (weak.shape().extents() != strong.shape().extents() || confidence.extent(0) != weak.extent(0) ||
      labels.size() != weak.extent(0))
    throw shape_error(std::string(op) + ": weak logits " + weak.shape().str() + ", strong logits " +
                      strong.shape().str() + ", confidence " + confidence.shape().str() + " and labels " +
                      labels.shape().str() + " must agree in rows (and classes)");
}
}  // namespace detail

/// Mowst's loss over m labelled rows: mean_i C_i·CE(z_weak_i, y_i) +
/// (1 − C_i)·CE(z_strong_i, y_i). weak, strong (m, K), confidence (m), labels (m).
/// Gradients reach both logits and C; training.hpp decides which are
/// constants in each turn.
template <class T, class SW, class SS, class SC, class SY, class B>
var<T, scalar_shape, B> mowst_loss(const var<T, SW, B>& weak, const var<T, SS, B>& strong,
                                   const var<T, SC, B>& confidence, const tensor<index_t, SY, B>& labels) {
  detail::check_mixture_rows("mowst_loss", weak, strong, confidence, labels);
  auto c = detail::as_vector(confidence);                                   // (m)
  auto nll_weak = detail::as_vector(cross_entropy<reduction::none>(weak, labels));    // (m)
  auto nll_strong = detail::as_vector(cross_entropy<reduction::none>(strong, labels));  // (m)
  return mean(c * nll_weak + (T(1) - c) * nll_strong);
}

/// Mowst*'s loss: CE(C·z_weak + (1 − C)·z_strong, y), mean over the rows.
template <class T, class SW, class SS, class SC, class SY, class B>
var<T, scalar_shape, B> mowst_star_loss(const var<T, SW, B>& weak, const var<T, SS, B>& strong,
                                        const var<T, SC, B>& confidence, const tensor<index_t, SY, B>& labels) {
  detail::check_mixture_rows("mowst_star_loss", weak, strong, confidence, labels);
  auto c = detail::as_vector(confidence);  // (m)
  return cross_entropy(mul_cols(weak, c) + mul_cols(strong, T(1) - c), labels);
}

}  // namespace moekit::mowst
