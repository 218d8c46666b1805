// examples/common/mowst_link.hpp — one seed of link prediction with Mowst
// (mowst/link.hpp) for examples/mowst.cpp's `--task link`: the graph's
// undirected edges split 85 / 5 / 10 % (train / val / test) by the seed, an
// MLP and a GNN<Conv> trained alone as edge scorers (BCE, fresh negatives each
// epoch, early stopping on validation AUC), then the Mowst mixture started
// from them (alternating turns). Reports validation and test ROC-AUC of all
// three, the gate's mean C on the test pairs, and the wall time.
//
//   examples::link_run_options o;            // hidden 64, dropout 0.5, AdamW lr 0.01, patience 50
//   auto r = examples::run_link_seed<graph::gcn_conv<>>(io::load_graph(dir), o, seed);
//   r.mlp.test_auc, r.gnn.test_auc, r.mowst.test_auc, r.mean_confidence, r.seconds
//
// Everything random (split, negatives, initialisation, dropout) depends on the
// seed only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include <moekit/graph/gnn.hpp>
#include <moekit/mowst/link.hpp>

namespace moekit::examples {

struct link_run_options {
  double val_fraction = 0.05, test_fraction = 0.10;  // of the undirected edges
  std::size_t hidden = 64;          // hidden width of both encoders
  std::size_t dim = 0;              // embedding width (0: hidden)
  std::size_t layers = 2;           // of both encoders
  double dropout = 0.5;             // of both encoders
  bool batch_norm = false;          // in both encoders
  mowst::edge_score score = mowst::edge_score::hadamard_mlp;
  std::size_t scorer_layers = 2;    // of the Hadamard MLP (hidden = dim)
  std::size_t gate_hidden = 0, gate_layers = 2;  // 0: hidden
  double gate_dropout = 0.0;
  bool normalize_features = true;
  mowst::train_options train = defaults();

  static mowst::train_options defaults() {
    mowst::train_options t;
    t.lr = 0.01;
    t.lr_gate = 0.01;
    t.weight_decay = 5e-4;
    t.max_epochs = 1000;
    t.patience = 50;
    t.big_patience = 3;
    t.max_big_epochs = 20;
    t.pretraining = mowst::pretrain::both;  // the mixture starts from both trained baselines
    return t;
  }
};

struct link_run_result {
  mowst::link_scores mlp, gnn, mowst;  // val / test ROC-AUC
  double mean_confidence = 0;          // Mowst's mean C over the test pairs
  std::size_t epochs = 0, big_epochs = 0;
  std::size_t train_edges = 0, val_edges = 0, test_edges = 0;
  double seconds = 0;                  // split, inputs and all training
};

/// One seed: split, inputs over the training edges, the three models.
template <class Conv>
link_run_result run_link_seed(const graph::dataset& d, const link_run_options& o, std::uint64_t seed,
                              const typename Conv::options& conv = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto in = mowst::make_link_inputs<Conv>(
      d, mowst::split_edges(d.edges, {.val_fraction = o.val_fraction, .test_fraction = o.test_fraction, .seed = seed}),
      {.normalize_features = o.normalize_features});
  const std::size_t dim = o.dim ? o.dim : o.hidden;
  rng g(seed);
  const auto r = mowst::train_link<Conv>(
      g, in,
      mowst::mlp_config{.hidden = o.hidden, .out = dim, .layers = o.layers, .dropout = o.dropout,
                        .batch_norm = o.batch_norm, .seed = seed * 4 + 1},
      graph::gnn_config{.hidden = o.hidden, .classes = dim, .layers = o.layers, .dropout = o.dropout,
                        .batch_norm = o.batch_norm, .seed = seed * 4 + 2},
      mowst::gate_config{.hidden = o.gate_hidden ? o.gate_hidden : o.hidden, .layers = o.gate_layers,
                         .dropout = o.gate_dropout, .batch_norm = false, .seed = seed * 4 + 3},
      mowst::scorer_config{.kind = o.score, .layers = o.scorer_layers, .seed = seed * 4 + 4}, o.train, conv);
  link_run_result out;
  out.mlp = r.mlp;
  out.gnn = r.gnn;
  out.mowst = r.mowst;
  out.mean_confidence = r.mean_confidence;
  out.epochs = r.epochs;
  out.big_epochs = r.big_epochs;
  out.train_edges = in.split.train.size();
  out.val_edges = in.split.val.size();
  out.test_edges = in.split.test.size();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace moekit::examples
