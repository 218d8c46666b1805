// mowst — "Mixture of Weak & Strong Experts on Graphs" (Zeng et al., ICLR
// 2024) on Cora or CiteSeer: an MLP (weak expert) and a GNN (strong expert)
// mixed by a gate on the MLP's confidence, against each expert alone.
//
//   build/bin/mowst --model gcn                       # the GCN baseline, 10 seeds
//   build/bin/mowst --model mowst --strong gcn        # Mowst-GCN
//   build/bin/mowst --model mowst-star --strong sage  # Mowst*-SAGE
//   build/bin/mowst --data ../shared/data/citeseer --model mlp --seeds 3
//
// Every seed trains from scratch (initialisation, dropout and the inference
// draws depend only on it). Baselines stop early on validation accuracy; Mowst
// runs alternating turns with early stopping (patience, big-patience); Mowst*
// trains jointly and stops on validation loss. Test accuracy: argmax for the
// baselines, the sampled rule averaged over --draws draws for Mowst (its exact
// expectation is printed too), the C-mixed probabilities for Mowst*.
//
// For Mowst, one draw of the rule is also run the compute-saving way: the GNN
// only on the test nodes routed to it, on their receptive field
// (mowst/inference.hpp); the table shows which fraction of the graph's nodes
// and edges that read, and its time against the full-graph GNN forward.
//
// Output: a progress line on stderr; a row per seed and a summary on stdout,
// whose last line is one JSON object.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include <moekit.hpp>
#include <moekit/graph.hpp>
#include <moekit/mowst/confidence.hpp>
#include <moekit/mowst/inference.hpp>
#include <moekit/mowst/mlp.hpp>
#include <moekit/mowst/mowst.hpp>
#include <moekit/mowst/training.hpp>

#include "common/flags.hpp"
#include "common/mowst_link.hpp"
#include "common/runtime_settings.hpp"

using namespace moekit;

namespace {

struct options {
#ifdef MOEKIT_SHARED_DATA_DIR
  std::string data = std::string(MOEKIT_SHARED_DATA_DIR).empty() ? "" : MOEKIT_SHARED_DATA_DIR "/cora";
#else
  std::string data;
#endif
  std::string task = "node", model = "mowst", strong = "gcn", pretrain = "gnn", optimizer = "adamw";
  int seeds = 10, seed = 0, threads = 2;
  int hidden = 64, layers = 2, gate_hidden = 0, gate_layers = 0, heads = 1;
  double lr = 0.01, lr_gate = 0.01, weight_decay = 5e-4, dropout = 0.5, dropout_gate = 0.5;
  int epochs = 20000, patience = 100, big_patience = 10, big_epochs = 20000, draws = 50;
  bool batch_norm = false, gate_features = false, detach_dispersion = true, normalize_features = true;
  bool frozen_train_mode = true;
  std::string gate = "mlp";
  int hyper_hidden = 64, hyper_layers = 2;
  bool hyper_relu = true;
  double min_accuracy = 0;
  // --data csbm: a generated contextual SBM graph (graph/csbm.hpp).
  double homophily = 0.5, signal = 1.5, degree = 8.0;
  int nodes = 2000, classes = 4, features = 32, graph_seed = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// One seed's figures.
struct seed_result {
  double val = 0, test = 0, test_expected = -1;  // expected: Mowst only
  double confidence = -1;                         // mean C on the test nodes (mixtures only)
  double gnn_fraction = 0;                        // of the test nodes the GNN answered
  double rows_fraction = 0, edges_fraction = 0;   // compute-saving run: share of the graph's nodes / entries read
  double full_ms = 0, subset_ms = 0;              // GNN forward: whole graph vs receptive field of the routed nodes
  double weak_ms = 0;                             // MLP and gate on every node (Mowst needs them first)
  std::size_t epochs = 0;
  double seconds = 0;
};

/// The progress line: at most about once a second.
class progress_line {
 public:
  progress_line(int seed, int seeds) : seed_(seed), seeds_(seeds) {}
  void operator()(const mowst::progress& p) {
    const double now = seconds_since(t0_);
    if (now - last_ < 1.0) return;
    last_ = now;
    std::fprintf(stderr, "\rseed %d/%d  %-15s big %2zu  epoch %5zu  val %.2f%%  best %.2f%%  %.0fs   ", seed_, seeds_,
                 p.phase, p.big_epoch, p.epoch, 100 * p.val, 100 * p.best, now);
  }

 private:
  int seed_, seeds_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  double last_ = -1;
};

mowst::train_options train_options_of(const options& o) {
  mowst::train_options t;
  t.lr = o.lr;
  t.lr_gate = o.lr_gate;
  t.weight_decay = o.weight_decay;
  t.decoupled_decay = o.optimizer == "adamw";
  t.max_epochs = static_cast<std::size_t>(o.epochs);
  t.patience = static_cast<std::size_t>(o.patience);
  t.big_patience = static_cast<std::size_t>(o.big_patience);
  t.max_big_epochs = static_cast<std::size_t>(o.big_epochs);
  t.pretrain_dropout = o.dropout;
  t.frozen_train_mode = o.frozen_train_mode;
  t.pretraining = o.pretrain == "none"  ? mowst::pretrain::none
                  : o.pretrain == "mlp" ? mowst::pretrain::weak
                  : o.pretrain == "gnn" ? mowst::pretrain::strong
                                        : mowst::pretrain::both;
  return t;
}

template <class Conv>
typename Conv::options conv_options_of(const options& o) {
  typename Conv::options c{};
  if constexpr (std::is_same_v<Conv, graph::gat_conv<>>) c.heads = static_cast<std::size_t>(o.heads);
  if constexpr (std::is_same_v<Conv, graph::gin_conv<>>) {
    c.mlp_layers = static_cast<std::size_t>(o.layers);  // the reference: each GIN MLP has L layers
    c.mlp_batch_norm = o.batch_norm;
  }
  return c;
}

template <class Conv>
graph::gnn_config gnn_config_of(const options& o, double dropout, std::uint64_t seed) {
  return {.hidden = static_cast<std::size_t>(o.hidden), .layers = static_cast<std::size_t>(o.layers),
          .dropout = dropout, .batch_norm = o.batch_norm,
          .act = std::is_same_v<Conv, graph::gat_conv<>> ? graph::activation::elu : graph::activation::relu,
          .seed = seed};
}

mowst::mlp_config mlp_config_of(const options& o, double dropout, std::uint64_t seed) {
  return {.hidden = static_cast<std::size_t>(o.hidden), .layers = static_cast<std::size_t>(o.layers),
          .dropout = dropout, .batch_norm = o.batch_norm, .seed = seed};
}

template <class T>
double accuracy(const tensor<index_t, shape<dyn>>& pred, const mowst::graph_inputs<T>& in) {
  std::size_t right = 0;
  for (std::size_t k = 0; k < in.test.size(); ++k) {
    const auto i = static_cast<std::size_t>(in.test[k]);
    right += pred[i] == in.labels[i];
  }
  return static_cast<double>(right) / static_cast<double>(in.test.size());
}

template <class T, class S>
tensor<index_t, shape<dyn>> predictions(const tensor<T, S>& logits) {
  auto p = argmax(logits);
  return p.reshape(shape<dyn>{p.size()});
}

/// Best of a few runs of f, in milliseconds.
template <class F>
double time_ms(F f) {
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, 1000 * seconds_since(t0));
  }
  return best;
}

/// A baseline: one expert alone.
template <class Net, class Forward, class T>
seed_result run_expert(Net& net, Forward forward, const mowst::graph_inputs<T>& in, mowst::train_options t,
                       double gnn_fraction) {
  seed_result r;
  const auto trained = mowst::train_expert(net, forward, in, t);
  r.val = trained.val_accuracy;
  r.epochs = trained.epochs;
  no_grad off;
  tape tp;
  r.test = accuracy(predictions(forward(tp).value()), in);
  r.gnn_fraction = gnn_fraction;
  return r;
}

/// Mowst or Mowst* with strong expert Conv.
template <class Conv, class T>
seed_result run_mixture(const options& o, const mowst::graph_inputs<T>& in, mowst::train_options t,
                        std::uint64_t seed) {
  rng g(seed);
  const std::size_t gate_hidden = static_cast<std::size_t>(o.gate_hidden ? o.gate_hidden : o.hidden);
  const std::size_t gate_layers = static_cast<std::size_t>(o.gate_layers ? o.gate_layers : o.layers);
  mowst::mixture<Conv> m(g, mlp_config_of(o, o.dropout_gate, seed * 3 + 1),
                         gnn_config_of<Conv>(o, o.dropout_gate, seed * 3 + 2),
                         {.features = o.gate_features ? in.num_features() : 0, .hidden = gate_hidden,
                          .layers = gate_layers, .dropout = o.dropout_gate, .batch_norm = o.batch_norm,
                          .detach_dispersion = o.detach_dispersion, .seed = seed * 3 + 3,
                          .kind = o.gate == "hyper" ? mowst::gate_kind::hyper : mowst::gate_kind::mlp,
                          .hyper_hidden = static_cast<std::size_t>(o.hyper_hidden),
                          .hyper_layers = static_cast<std::size_t>(o.hyper_layers), .hyper_relu = o.hyper_relu},
                         in, conv_options_of<Conv>(o));
  const bool star = o.model == "mowst-star";
  const auto trained = star ? mowst::train_mowst_star(m, in, t) : mowst::train_mowst(m, in, t);
  seed_result r;
  r.val = trained.val_accuracy;
  r.epochs = trained.epochs;

  no_grad off;
  tape tp;
  m.eval();
  const auto out = m(in, tp);
  const auto c = out.confidence.value();
  const auto weak_pred = predictions(out.weak.value()), strong_pred = predictions(out.strong.value());
  if (star) {
    r.test = accuracy(mowst::mixed_prediction(out.weak.value(), out.strong.value(), c), in);
    r.gnn_fraction = 1;  // the mixed prediction needs the GNN on every node
    r.confidence = mowst::expected_accuracy(weak_pred, strong_pred, c, in.labels, in.test).mean_confidence;
    return r;
  }
  rng draws(seed, std::uint64_t{1} << 40);  // the inference draws: their own stream of the seed
  const auto sampled = mowst::sampled_accuracy(weak_pred, strong_pred, c, in.labels, in.test,
                                               static_cast<std::size_t>(o.draws), draws);
  r.test = sampled.accuracy;
  r.test_expected = mowst::expected_accuracy(weak_pred, strong_pred, c, in.labels, in.test).accuracy;
  r.gnn_fraction = sampled.gnn_fraction;
  r.confidence = sampled.mean_confidence;

  // One draw the compute-saving way: the GNN only where q >= C, on the receptive field.
  const auto routed = mowst::route_sampled(c, in.test, draws);
  mowst::receptive_field<T> field;
  const bool sparse = in.sparse_features.rows() != 0;
  auto on_field = [&](mowst::receptive_field<T>* f) {
    return sparse ? mowst::strong_logits_on(m.strong(), in.adj, in.sparse_features, routed, f)
                  : mowst::strong_logits_on(m.strong(), in.adj, in.features, routed, f);
  };
  const auto part = on_field(&field);
  const auto part_pred = predictions(part);
  for (std::size_t k = 0; k < routed.size(); ++k)
    if (part_pred[k] != strong_pred[static_cast<std::size_t>(routed[k])])
      throw value_error("the receptive-field forward disagrees with the full one at node " +
                        std::to_string(routed[k]));
  r.rows_fraction = static_cast<double>(field.nodes.size()) / static_cast<double>(in.nodes());
  r.edges_fraction = static_cast<double>(field.edges()) / static_cast<double>(in.adj.nnz());
  r.full_ms = time_ms([&] {
    tape t2;
    (void)mowst::strong_logits(m.strong(), in, t2);
  });
  r.subset_ms = time_ms([&] { (void)on_field(nullptr); });
  r.weak_ms = time_ms([&] {
    tape t2;
    (void)m.gate_on(mowst::weak_logits(m.weak(), in, t2), in, t2);
  });
  return r;
}

/// Runs every seed with strong expert Conv (baselines: the GNN itself, or the MLP).
template <class Conv>
std::vector<seed_result> run_seeds(const options& o, const graph::dataset& d) {
  const auto in = mowst::make_inputs<Conv>(d, {.normalize_features = o.normalize_features});
  std::vector<seed_result> results;
  for (int s = 0; s < o.seeds; ++s) {
    const auto seed = static_cast<std::uint64_t>(o.seed + s);
    auto t = train_options_of(o);
    progress_line line(s + 1, o.seeds);
    t.on_progress = [&](const mowst::progress& p) { line(p); };
    const auto t0 = std::chrono::steady_clock::now();
    seed_result r;
    if (o.model == "mlp") {
      rng g(seed);
      mowst::mlp<float> net(g, [&] {
        auto c = mlp_config_of(o, o.dropout, seed * 3 + 1);
        c.in = in.num_features();
        c.out = in.classes;
        return c;
      }());
      r = run_expert(net, [&](tape& tp) { return mowst::weak_logits(net, in, tp); }, in, t, 0.0);
    } else if (o.model == "mowst" || o.model == "mowst-star") {
      r = run_mixture<Conv>(o, in, t, seed);
    } else {
      rng g(seed);
      auto c = gnn_config_of<Conv>(o, o.dropout, seed * 3 + 2);
      c.in = in.num_features();
      c.classes = in.classes;
      graph::gnn<Conv> net(g, c, conv_options_of<Conv>(o));
      r = run_expert(net, [&](tape& tp) { return mowst::strong_logits(net, in, tp); }, in, t, 1.0);
    }
    r.seconds = seconds_since(t0);
    std::fprintf(stderr, "\r%100s\r", "");
    std::printf("%4llu %8.2f%% %8.2f%% %10s %8s %9.3f %8zu %8.1f\n", static_cast<unsigned long long>(seed),
                100 * r.val, 100 * r.test,
                r.test_expected >= 0 ? (std::to_string(100 * r.test_expected).substr(0, 5) + "%").c_str() : "-",
                r.confidence >= 0 ? std::to_string(r.confidence).substr(0, 5).c_str() : "-", r.gnn_fraction,
                r.epochs, r.seconds);
    std::fflush(stdout);
    results.push_back(r);
  }
  return results;
}

struct stats {
  double mean = 0, std = 0;
};
template <class F>
stats over(const std::vector<seed_result>& rs, F f) {
  stats s;
  for (const auto& r : rs) s.mean += f(r) / static_cast<double>(rs.size());
  for (const auto& r : rs) s.std += (f(r) - s.mean) * (f(r) - s.mean) / static_cast<double>(rs.size());
  s.std = std::sqrt(s.std);  // population std over seeds (numpy's default)
  return s;
}


std::string json_number(double v, bool defined = true) {
  if (!defined) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

/// --task link: every seed splits the edges, trains the MLP and the GNN as
/// edge scorers, then the Mowst mixture from them (examples/common/mowst_link.hpp).
template <class Conv>
int run_link(const options& o, const graph::dataset& d, double homophily) {
  examples::link_run_options lo;
  lo.hidden = static_cast<std::size_t>(o.hidden);
  lo.layers = static_cast<std::size_t>(o.layers);
  lo.dropout = o.dropout;
  lo.batch_norm = o.batch_norm;
  lo.normalize_features = o.normalize_features;
  lo.train.lr = o.lr;
  lo.train.lr_gate = o.lr_gate;
  lo.train.weight_decay = o.weight_decay;
  lo.train.decoupled_decay = o.optimizer == "adamw";
  lo.train.patience = static_cast<std::size_t>(o.patience);
  lo.train.big_patience = static_cast<std::size_t>(o.big_patience);
  std::printf("mowst --task link: MLP, %s and Mowst-%s on %s (%zu nodes, %zu edges listed), %d seeds, %d threads\n",
              o.strong.c_str(), o.strong.c_str(), d.name.c_str(), d.nodes(), d.edges.size(), o.seeds, o.threads);
  std::printf("%4s %8s %8s %8s %8s %8s %8s %8s %8s\n", "seed", "MLP val", "MLP test", "GNN val", "GNN test", "Mowst val",
              "Mowst tst", "mean C", "seconds");
  std::fflush(stdout);
  std::vector<examples::link_run_result> rs;
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < o.seeds; ++s) {
    const auto seed = static_cast<std::uint64_t>(o.seed + s);
    std::fprintf(stderr, "\rseed %d/%d  link prediction  %.0fs   ", s + 1, o.seeds, seconds_since(t0));
    const auto r = examples::run_link_seed<Conv>(d, lo, seed, conv_options_of<Conv>(o));
    std::fprintf(stderr, "\r%60s\r", "");
    std::printf("%4llu %8.4f %8.4f %8.4f %8.4f %9.4f %9.4f %8.4f %8.1f\n", static_cast<unsigned long long>(seed),
                r.mlp.val_auc, r.mlp.test_auc, r.gnn.val_auc, r.gnn.test_auc, r.mowst.val_auc, r.mowst.test_auc,
                r.mean_confidence, r.seconds);
    std::fflush(stdout);
    rs.push_back(r);
  }
  auto mean_std = [&](auto f) {
    double m = 0, v = 0;
    for (const auto& r : rs) m += f(r) / static_cast<double>(rs.size());
    for (const auto& r : rs) v += (f(r) - m) * (f(r) - m) / static_cast<double>(rs.size());
    return std::pair{m, std::sqrt(v)};
  };
  auto list = [&](auto f) {
    std::string out = "[";
    for (const auto& r : rs) out += (out.size() > 1 ? ", " : "") + json_number(f(r));
    return out + "]";
  };
  const auto mlp = mean_std([](const auto& r) { return r.mlp.test_auc; });
  const auto gnn = mean_std([](const auto& r) { return r.gnn.test_auc; });
  const auto mix = mean_std([](const auto& r) { return r.mowst.test_auc; });
  const auto c = mean_std([](const auto& r) { return r.mean_confidence; });
  const double seconds = seconds_since(t0);
  std::printf("\n%-26s %s, %zu / %zu / %zu train / val / test edges (seed %d)\n", "dataset", d.name.c_str(),
              rs.front().train_edges, rs.front().val_edges, rs.front().test_edges, o.seed);
  std::printf("%-26s %.4f +- %.4f\n%-26s %.4f +- %.4f\n%-26s %.4f +- %.4f\n%-26s %.4f\n%-26s %.1f\n",
              "test ROC-AUC, MLP", mlp.first, mlp.second, ("test ROC-AUC, " + o.strong).c_str(), gnn.first, gnn.second,
              ("test ROC-AUC, Mowst-" + o.strong).c_str(), mix.first, mix.second, "mean C (test pairs)", c.first,
              "seconds", seconds);
  std::printf("{\"example\": \"mowst\", \"task\": \"link\", \"strong\": \"%s\", \"dataset\": \"%s\", \"seeds\": %d, "
              "\"mlp_test_auc\": %s, \"gnn_test_auc\": %s, \"mowst_test_auc\": %s, \"mlp_auc_mean\": %.4f, "
              "\"gnn_auc_mean\": %.4f, \"mowst_auc_mean\": %.4f, \"mowst_auc_std\": %.4f, \"mean_confidence\": %.4g, "
              "\"homophily\": %.4f, \"threads\": %d, \"seconds\": %.1f}\n",
              o.strong.c_str(), d.name.c_str(), o.seeds, list([](const auto& r) { return r.mlp.test_auc; }).c_str(),
              list([](const auto& r) { return r.gnn.test_auc; }).c_str(),
              list([](const auto& r) { return r.mowst.test_auc; }).c_str(), mlp.first, gnn.first, mix.first,
              mix.second, c.first, homophily, o.threads, seconds);
  if (mix.first < o.min_accuracy) {
    std::fprintf(stderr, "mowst: mean Mowst test AUC %.4f is below --min-accuracy %.4f\n", mix.first, o.min_accuracy);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("mowst",
            "Trains Mowst / Mowst* (MLP + GNN mixed by a confidence gate) or one expert alone on a citation graph\n"
            "over several seeds; prints mean +- std test accuracy, the gate's mean confidence and the fraction of\n"
            "test nodes the GNN answered. The last stdout line is a JSON object.");
  cli.add("data", o.data,
          "graph folder in the plain format of shared/data/README.md (Cora, CiteSeer), or csbm: a generated graph");
  cli.add("homophily", o.homophily, "csbm: share of edges within a class (0.1 = heterophilous, 0.9 = homophilous)");
  cli.add("signal", o.signal, "csbm: feature signal strength (class mean over unit Gaussian noise)");
  cli.add("degree", o.degree, "csbm: average degree");
  cli.add("nodes", o.nodes, "csbm: nodes");
  cli.add("classes", o.classes, "csbm: classes");
  cli.add("features", o.features, "csbm: feature dimensions");
  cli.add("graph-seed", o.graph_seed, "csbm: seed of the generated graph (the same graph for every --seeds run)");
  cli.add("task", o.task,
          "node: node classification | link: link prediction (ROC-AUC of MLP, --strong GNN and Mowst on held-out edges)");
  cli.add("model", o.model, "mlp | gcn | sage | gin | gat | mowst | mowst-star");
  cli.add("strong", o.strong, "the strong expert of mowst / mowst-star: gcn | sage | gin | gat");
  cli.add("seeds", o.seeds, "runs, with seeds --seed .. --seed + seeds - 1");
  cli.add("seed", o.seed, "first seed");
  cli.add("hidden", o.hidden, "hidden width of both experts");
  cli.add("layers", o.layers, "layers of both experts (the reference: gate the same as the MLP)");
  cli.add("dropout", o.dropout, "dropout of an expert trained alone (baselines, pre-training)");
  cli.add("dropout-gate", o.dropout_gate, "dropout of MLP, GNN and gate in the mixture phase (reference: dropout_gate)");
  cli.add("batch-norm", o.batch_norm, "batch norm between layers (the reference has it on; off here: it costs ~3 points on Cora)");
  cli.add("heads", o.heads, "GAT attention heads of the hidden layers");
  cli.add("lr", o.lr, "learning rate of the experts");
  cli.add("lr-gate", o.lr_gate, "learning rate of the gate");
  cli.add("weight-decay", o.weight_decay, "weight decay");
  cli.add("optimizer", o.optimizer, "adamw (the reference) | adam (L2 decay, as Kipf & Welling's GCN)");
  cli.add("epochs", o.epochs, "most epochs of one training run / one Mowst turn");
  cli.add("patience", o.patience, "early stopping: epochs without a better validation score");
  cli.add("big-patience", o.big_patience, "Mowst: big epochs (weak turn + strong turn) without a gain");
  cli.add("big-epochs", o.big_epochs, "Mowst: most big epochs");
  cli.add("pretrain", o.pretrain, "pre-train before mixing: none | mlp | gnn | both");
  cli.add("gate-hidden", o.gate_hidden, "gate hidden width (0: --hidden)");
  cli.add("gate-layers", o.gate_layers, "gate layers (0: --layers)");
  cli.add("gate-features", o.gate_features, "the gate also sees the node features (reference: --original_data true)");
  cli.add("gate", o.gate,
          "mlp: C = sigmoid(mlp(D)) | hyper: a per-node gate on D whose weights a hyper-network makes from the node's "
          "features (reference: --original_data hypermlp)");
  cli.add("hyper-hidden", o.hyper_hidden, "--gate hyper: hidden width of the hyper-network (reference: 64)");
  cli.add("hyper-layers", o.hyper_layers, "--gate hyper: layers of the hyper-network (reference: 2)");
  cli.add("hyper-relu", o.hyper_relu,
          "--gate hyper: ReLU between the generated gate's layers (--no-hyper-relu: affine in D, as the reference)");
  cli.add("detach-dispersion", o.detach_dispersion,
          "no gradient from C into the MLP through the dispersion (the reference); --no-detach-dispersion lets it flow");
  cli.add("frozen-train-mode", o.frozen_train_mode,
          "Mowst: the expert a turn holds fixed runs with dropout each epoch (--no-frozen-train-mode: once, eval mode)");
  cli.add("draws", o.draws, "Mowst: draws of the sampled inference rule (reference: m_times)");
  cli.add("normalize-features", o.normalize_features, "divide each feature row by its sum");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("min-accuracy", o.min_accuracy, "exit 1 when the mean test accuracy is below this fraction");
  if (!cli.parse(argc, argv)) return 0;
  examples::print_blas_line();

  const std::vector<std::string> models{"mlp", "gcn", "sage", "gin", "gat", "mowst", "mowst-star"};
  const std::vector<std::string> gnns{"gcn", "sage", "gin", "gat"};
  if (std::find(models.begin(), models.end(), o.model) == models.end())
    throw value_error("--model: '" + o.model + "' is not one of mlp, gcn, sage, gin, gat, mowst, mowst-star");
  if (std::find(gnns.begin(), gnns.end(), o.strong) == gnns.end())
    throw value_error("--strong: '" + o.strong + "' is not one of gcn, sage, gin, gat");
  if (o.pretrain != "none" && o.pretrain != "mlp" && o.pretrain != "gnn" && o.pretrain != "both")
    throw value_error("--pretrain: '" + o.pretrain + "' is not one of none, mlp, gnn, both");
  if (o.optimizer != "adamw" && o.optimizer != "adam")
    throw value_error("--optimizer: '" + o.optimizer + "' is not one of adamw, adam");
  if (o.seeds < 1 || o.seed < 0 || o.threads < 1 || o.hidden < 1 || o.layers < 1 || o.heads < 1 || o.epochs < 1 ||
      o.patience < 1 || o.big_patience < 1 || o.big_epochs < 1 || o.draws < 1 || o.gate_hidden < 0 || o.gate_layers < 0)
    throw value_error("--seeds, --threads, --hidden, --layers, --heads, --epochs, --patience, --big-patience, "
                      "--big-epochs, --draws must be >= 1, --seed, --gate-hidden, --gate-layers >= 0");
  if (o.data.empty()) throw value_error("--data DIR is required (e.g. shared/data/cora)");
  const bool csbm = o.data == "csbm";
  if (csbm && (o.nodes < 2 || o.classes < 2 || o.features < 1 || o.graph_seed < 0 || !(o.degree >= 0) ||
               !std::isfinite(o.degree) || !(o.homophily >= 0 && o.homophily <= 1) || !std::isfinite(o.signal)))
    throw value_error("csbm: --nodes, --classes >= 2, --features >= 1, --graph-seed >= 0, --degree >= 0 finite, "
                      "--homophily in [0, 1], --signal finite");
  if (!csbm && !std::filesystem::is_directory(o.data))
    throw io_error("no graph folder at '" + o.data +
                   "'. Cora and CiteSeer are in shared/data/cora and shared/data/citeseer (see shared/data/README.md); "
                   "pass --data DIR");
  if (o.task != "node" && o.task != "link") throw value_error("--task: '" + o.task + "' is not one of node, link");
  if (o.gate != "mlp" && o.gate != "hyper") throw value_error("--gate: '" + o.gate + "' is not one of mlp, hyper");
  if (o.hyper_hidden < 1 || o.hyper_layers < 1) throw value_error("--hyper-hidden and --hyper-layers must be >= 1");
  set_num_threads(o.threads);

  graph::dataset d;
  if (csbm) {
    d = graph::make_csbm({.classes = static_cast<std::size_t>(o.classes), .nodes = static_cast<std::size_t>(o.nodes),
                          .avg_degree = o.degree, .homophily = o.homophily, .signal = o.signal,
                          .features = static_cast<std::size_t>(o.features),
                          .seed = static_cast<std::uint64_t>(o.graph_seed)});
    o.normalize_features = false;  // Gaussian features: a row sum means nothing
  } else {
    d = io::load_graph(o.data);
  }
  const double homophily = data::edge_homophily(d);
  if (o.task == "link") {
    if (o.strong == "gcn") return run_link<graph::gcn_conv<>>(o, d, homophily);
    if (o.strong == "sage") return run_link<graph::sage_conv<>>(o, d, homophily);
    if (o.strong == "gin") return run_link<graph::gin_conv<>>(o, d, homophily);
    return run_link<graph::gat_conv<>>(o, d, homophily);
  }
  const bool mixture = o.model == "mowst" || o.model == "mowst-star";
  const std::string gnn = mixture ? o.strong : o.model == "mlp" ? "gcn" : o.model;
  const std::string name = mixture ? (o.model == "mowst" ? "Mowst-" : "Mowst*-") + gnn : o.model;
  std::printf("mowst: %s on %s (%zu nodes, %zu features, %zu classes, edge homophily %.3f, %zu/%zu/%zu "
              "train/val/test), %d seeds, %d threads\n",
              name.c_str(), d.name.c_str(), d.nodes(), d.num_features(), d.classes, homophily, d.train.size(),
              d.val.size(), d.test.size(), o.seeds, o.threads);
  std::printf("%4s %9s %9s %10s %8s %9s %8s %8s\n", "seed", "val acc", "test acc", "expected", "mean C", "GNN frac",
              "epochs", "seconds");
  std::fflush(stdout);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<seed_result> rs;
  if (gnn == "gcn") rs = run_seeds<graph::gcn_conv<>>(o, d);
  else if (gnn == "sage") rs = run_seeds<graph::sage_conv<>>(o, d);
  else if (gnn == "gin") rs = run_seeds<graph::gin_conv<>>(o, d);
  else rs = run_seeds<graph::gat_conv<>>(o, d);
  const double seconds = seconds_since(t0);

  const auto test = over(rs, [](const seed_result& r) { return r.test; });
  const auto val = over(rs, [](const seed_result& r) { return r.val; });
  const auto conf = over(rs, [](const seed_result& r) { return r.confidence; });
  const auto frac = over(rs, [](const seed_result& r) { return r.gnn_fraction; });
  const auto expected = over(rs, [](const seed_result& r) { return r.test_expected; });
  const auto rows = over(rs, [](const seed_result& r) { return r.rows_fraction; });
  const auto edges = over(rs, [](const seed_result& r) { return r.edges_fraction; });
  const auto full_ms = over(rs, [](const seed_result& r) { return r.full_ms; });
  const auto subset_ms = over(rs, [](const seed_result& r) { return r.subset_ms; });
  const auto weak_ms = over(rs, [](const seed_result& r) { return r.weak_ms; });
  const bool has_c = mixture, sampled = o.model == "mowst";
  std::string per_seed = "[";
  for (const auto& r : rs) per_seed += (per_seed.size() > 1 ? ", " : "") + json_number(r.test);
  per_seed += "]";

  std::printf("\n%-26s %s\n%-26s %s\n%-26s %.2f%% +- %.2f%% (%d seeds, std over seeds)\n%-26s %.2f%% +- %.2f%%\n",
              "model", name.c_str(), "dataset", d.name.c_str(), "test accuracy", 100 * test.mean, 100 * test.std,
              o.seeds, "validation accuracy", 100 * val.mean, 100 * val.std);
  if (sampled)
    std::printf("%-26s %.2f%% (exact expectation of the %d-draw estimate)\n", "test accuracy, expected",
                100 * expected.mean, o.draws);
  if (has_c) std::printf("%-26s %.3f\n", "mean confidence C (test)", conf.mean);
  std::printf("%-26s %.3f\n", "GNN fraction (test nodes)", frac.mean);
  if (sampled)
    std::printf("%-26s %.3f of the nodes, %.3f of the entries; %.2f ms vs %.2f ms full-graph forward\n",
                "compute-saving GNN run", rows.mean, edges.mean, subset_ms.mean, full_ms.mean);
  if (sampled)
    std::printf("%-26s %.2f ms (MLP and gate on every node) + %.2f ms (GNN on the routed) vs %.2f ms (GNN on all)\n",
                "Mowst inference", weak_ms.mean, subset_ms.mean, full_ms.mean);
  std::printf("%-26s %.3f\n", "edge homophily", homophily);
  std::printf("%-26s %.1f\n", "seconds", seconds);
  std::printf("{\"example\": \"mowst\", \"model\": \"%s\", \"strong\": \"%s\", \"dataset\": \"%s\", \"seeds\": %d, "
              "\"test_acc_mean\": %.4f, \"test_acc_std\": %.4f, \"val_acc_mean\": %.4f, \"test_acc_expected\": %s, "
              "\"mean_confidence\": %s, \"gnn_fraction\": %.4f, \"gnn_rows_fraction\": %s, \"gnn_edges_fraction\": %s, "
              "\"test_acc\": %s, \"homophily\": %.4f, \"hidden\": %d, \"layers\": %d, \"threads\": %d, \"subset_ms\": %s, "
              "\"full_ms\": %s, \"weak_ms\": %s, \"seconds\": %.1f}\n",
              o.model.c_str(), mixture ? o.strong.c_str() : (o.model == "mlp" ? "none" : o.model.c_str()),
              d.name.c_str(), o.seeds, test.mean, test.std, val.mean, json_number(expected.mean, sampled).c_str(),
              json_number(conf.mean, has_c).c_str(), frac.mean, json_number(rows.mean, sampled).c_str(),
              json_number(edges.mean, sampled).c_str(), per_seed.c_str(), homophily, o.hidden, o.layers, o.threads,
              json_number(subset_ms.mean, sampled).c_str(), json_number(full_ms.mean, sampled).c_str(),
              json_number(weak_ms.mean, sampled).c_str(), seconds);
  if (test.mean < o.min_accuracy) {
    std::fprintf(stderr, "mowst: mean test accuracy %.4f is below --min-accuracy %.4f\n", test.mean, o.min_accuracy);
    return 1;
  }
  return 0;
} catch (const moekit::error& e) {
  std::fprintf(stderr, "mowst: %s\n", e.what());
  return 2;
}
