// moekit/mowst/link.hpp — link prediction with a Mowst mixture: a weak expert
// (an MLP over each node's own features) and a strong expert (a GNN over the
// training graph) each score node pairs, and Mowst's confidence gate decides,
// per pair, how much to trust the weak one.
//
// The paper (Zeng et al., ICLR 2024) and its reference code do node
// classification only; everything below that is specific to edges is our
// design, chosen to reuse the node-level pieces unchanged.
//
//   split      split_edges: the undirected edges (self loops dropped,
//              duplicates merged) shuffled by a seed; val_fraction and
//              test_fraction of them are held out (5 % / 10 %, PyG's
//              RandomLinkSplit defaults), the rest train. The GNN passes
//              messages over the training edges only (make_link_inputs).
//   negatives  uniform pairs u != v that are not edges of the full graph:
//              fixed ones for val and test (as many as their positives,
//              distinct, no pair in both), fresh ones each training epoch
//              (as many as the training edges, drawn with replacement:
//              negative_sampler). Every draw comes from moekit's
//              counter-based Philox streams rng(key, offset), so a seed fixes
//              everything. Training negatives avoid held-out edges too (the
//              full graph is the only edge set sampled against): the chance
//              that a uniform pair is a held-out edge is about 2·|E_held|/n²
//              (1e-4 on Cora), so the leak is negligible.
//   scorer     edge_scorer: embeddings H (n, d) -> one logit per pair,
//                hadamard_mlp  s(u, v) = MLP(h_u ⊙ h_v)   (OGB's LinkPredictor)
//                dot           s(u, v) = <h_u, h_v>
//              both symmetric in (u, v), so the pair's order never matters.
//   experts    link_expert<Encoder> = encoder (n, F) -> (n, d) + its own scorer:
//                link_mlp<T>     = mowst::mlp over the CSR features (weak)
//                link_gnn<Conv>  = graph::gnn<Conv> over the training graph (strong)
//   gate       s_w turned into two-class logits [0, s_w] (m, 2): their softmax
//              is [1 − σ(s_w), σ(s_w)], so the unchanged dispersion /
//              confidence_gate (classes = 2) give C per pair (a function of
//              |s_w|: confident where the weak expert is far from 0.5). The gate
//              sees the dispersion only (gate_config::features must be 0: a
//              pair has no single feature row).
//   loss       BCE(s, y) = CE([0, s], y) exactly (log(1 + e^s) − y·s), so the
//              experts learn cross_entropy on [0, s] (numerically stable) and
//              the mixture learns the unchanged mowst_loss on the two-class
//              logits: mean C·BCE(s_w, y) + (1 − C)·BCE(s_s, y).
//   mixture    p(u, v) = C·σ(s_w) + (1 − C)·σ(s_s), ranked by roc_auc.
//
// Training (train_link) reuses training.hpp: AdamW (train_options), the
// stopper (patience, min_delta), snapshots with restore, run_turn. The two
// baselines are trained first, each alone on BCE with early stopping on
// validation AUC (tie: lower validation BCE) and its best epoch restored;
// they double as Mowst's pre-training (train_options::pretraining says which
// expert the mixture starts from; the others start from the initialisation).
// Mowst then runs the alternating turns of train_mowst: a weak turn
// ({MLP, gate} learn, the GNN is a constant), a strong turn (the GNN learns),
// each stopped early on the mixture's validation AUC and kept only if it beats
// the best so far; big_patience big epochs without a gain end it. The
// constant expert of a turn is evaluated as train_options::frozen_train_mode
// says (train mode under no_grad each epoch, or once per turn in eval mode).
// Not used here: pretrain_dropout (the baselines are the pre-training, with
// the experts' own dropout) and Mowst* (not implemented for links).
//
//   auto split = mowst::split_edges(cora.edges, {.seed = 1});
//   auto in = mowst::make_link_inputs<graph::gcn_conv<>>(cora, split);
//   rng g(1);
//   auto r = mowst::train_link<graph::gcn_conv<>>(g, in, {.hidden = 64}, {.hidden = 64},
//                                                {.hidden = 64}, {}, {.patience = 50});
//   r.mlp.test_auc, r.gnn.test_auc, r.mowst.test_auc, r.mean_confidence
//
// Parameters: link_expert "encoder.*", "scorer.*"; link_mixture "weak.*",
// "strong.*", "gate.*".
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/index.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/loss.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../data/graph_dataset.hpp"
#include "../graph/gnn.hpp"
#include "confidence.hpp"
#include "mlp.hpp"
#include "mowst.hpp"
#include "training.hpp"

namespace moekit::mowst {

// ---- edges ----------------------------------------------------------------------

/// Node pairs (u, v): src[k], dst[k] for pair k.
struct edge_pairs {
  tensor<index_t, shape<dyn>> src, dst;  // (m) each

  std::size_t size() const noexcept { return src.size(); }
};

struct edge_split_options {
  double val_fraction = 0.05;   // of the undirected edges, held out for validation
  double test_fraction = 0.10;  // held out for test
  std::uint64_t seed = 0;       // shuffle and negatives
};

/// An undirected graph's edges split for link prediction (split_edges).
/// Positive pairs have u < v and are listed once, sorted.
struct edge_split {
  std::size_t nodes = 0;
  edge_pairs train, val, test;             // positives: the training edges are the message-passing graph
  edge_pairs val_negative, test_negative;  // fixed non-edges, as many as val / test
  std::vector<std::uint64_t> edge_keys;    // sorted u·n + v (u < v) of every edge of the full graph
  std::uint64_t seed = 0;

  /// Whether {u, v} is an edge of the full graph (either order).
  bool has_edge(index_t u, index_t v) const {
    return std::binary_search(edge_keys.begin(), edge_keys.end(), key(u, v));
  }
  /// The key of the unordered pair {u, v}.
  std::uint64_t key(index_t u, index_t v) const noexcept {
    const auto a = static_cast<std::uint64_t>(std::min(u, v)), b = static_cast<std::uint64_t>(std::max(u, v));
    return a * static_cast<std::uint64_t>(nodes) + b;
  }
  /// The training edges, one direction each (make_csr with symmetrize).
  graph::edge_list train_edges() const {
    graph::edge_list e{.nodes = nodes};
    for (std::size_t k = 0; k < train.size(); ++k) e.add(train.src[k], train.dst[k]);
    return e;
  }
};

namespace detail {

/// The Philox key of one purpose's stream for a split seed (splitmix64 of both).
constexpr std::uint64_t link_stream(std::uint64_t seed, std::uint64_t purpose) noexcept {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (purpose + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
enum : std::uint64_t { link_shuffle_stream = 0, link_fixed_negative_stream = 1, link_train_negative_stream = 2 };

/// A uniform integer in [0, range) from the next word of g.
inline std::size_t link_uniform_below(rng& g, std::size_t range) {
  const double u = g.next_uniform<double>();  // (0, 1]
  return std::min(range - 1, static_cast<std::size_t>((1.0 - u) * static_cast<double>(range)));
}

inline edge_pairs link_pairs_of(const std::vector<std::uint64_t>& keys, std::size_t n) {
  edge_pairs p{tensor<index_t, shape<dyn>>(shape<dyn>{keys.size()}), tensor<index_t, shape<dyn>>(shape<dyn>{keys.size()})};
  for (std::size_t k = 0; k < keys.size(); ++k) {
    p.src[k] = static_cast<index_t>(keys[k] / n);
    p.dst[k] = static_cast<index_t>(keys[k] % n);
  }
  return p;
}

/// `count` uniform non-edges u != v of s's full graph from g. distinct: no
/// pair twice and none in `taken` (which receives them); else with replacement.
inline edge_pairs link_non_edges(const edge_split& s, std::size_t count, rng g, bool distinct,
                                   std::unordered_set<std::uint64_t>* taken = nullptr) {
  const std::size_t n = s.nodes;
  const double pairs = 0.5 * static_cast<double>(n) * (static_cast<double>(n) - 1.0);
  const double free = pairs - static_cast<double>(s.edge_keys.size()) - (taken ? static_cast<double>(taken->size()) : 0.0);
  if (count > 0 && (n < 2 || free < (distinct ? static_cast<double>(count) : 1.0)))
    throw value_error("sample_negatives: " + std::to_string(count) + " non-edges wanted, the graph (" +
                      std::to_string(n) + " nodes, " + std::to_string(s.edge_keys.size()) + " edges) has too few");
  edge_pairs p{tensor<index_t, shape<dyn>>(shape<dyn>{count}), tensor<index_t, shape<dyn>>(shape<dyn>{count})};
  for (std::size_t k = 0; k < count;) {
    const auto u = static_cast<index_t>(link_uniform_below(g, n)), v = static_cast<index_t>(link_uniform_below(g, n));
    if (u == v || s.has_edge(u, v)) continue;
    if (distinct && !taken->insert(s.key(u, v)).second) continue;
    p.src[k] = u;
    p.dst[k] = v;
    ++k;
  }
  return p;
}

}  // namespace detail

/// Splits the undirected edges of `e` (either direction, self loops dropped,
/// duplicates merged) into train / val / test positives, and draws the fixed
/// val / test negatives; see the top of this file. Deterministic for o.seed.
inline edge_split split_edges(const graph::edge_list& e, const edge_split_options& o = {}) {
  if (!(o.val_fraction >= 0 && o.test_fraction >= 0 && o.val_fraction + o.test_fraction < 1))
    throw value_error("split_edges: val_fraction and test_fraction must be >= 0 and sum to less than 1");
  if (e.dst.size() != e.src.size()) throw value_error("split_edges: sources and destinations differ in number");
  edge_split s;
  s.nodes = e.nodes;
  s.seed = o.seed;
  const std::size_t n = e.nodes;
  for (std::size_t k = 0; k < e.size(); ++k) {
    const index_t u = e.src[k], v = e.dst[k];
    if (u < 0 || v < 0 || static_cast<std::size_t>(u) >= n || static_cast<std::size_t>(v) >= n)
      throw value_error("split_edges: edge " + std::to_string(k) + " (" + std::to_string(u) + ", " + std::to_string(v) +
                        ") is out of range [0, " + std::to_string(n) + ")");
    if (u != v) s.edge_keys.push_back(s.key(u, v));
  }
  std::sort(s.edge_keys.begin(), s.edge_keys.end());
  s.edge_keys.erase(std::unique(s.edge_keys.begin(), s.edge_keys.end()), s.edge_keys.end());

  const std::size_t m = s.edge_keys.size();
  const auto n_test = static_cast<std::size_t>(o.test_fraction * static_cast<double>(m));
  const auto n_val = static_cast<std::size_t>(o.val_fraction * static_cast<double>(m));
  if (m == 0 || n_test + n_val >= m)
    throw value_error("split_edges: " + std::to_string(m) + " undirected edges leave none for training");

  // Fisher-Yates over the sorted keys; test first, then val, the rest trains.
  std::vector<std::uint64_t> order = s.edge_keys;
  rng shuffle(detail::link_stream(o.seed, detail::link_shuffle_stream), 0);
  for (std::size_t i = m; i-- > 1;) std::swap(order[i], order[detail::link_uniform_below(shuffle, i + 1)]);
  auto part = [&](std::size_t from, std::size_t to) {
    std::vector<std::uint64_t> keys(order.begin() + static_cast<std::ptrdiff_t>(from),
                                    order.begin() + static_cast<std::ptrdiff_t>(to));
    std::sort(keys.begin(), keys.end());
    return detail::link_pairs_of(keys, n);
  };
  s.test = part(0, n_test);
  s.val = part(n_test, n_test + n_val);
  s.train = part(n_test + n_val, m);

  std::unordered_set<std::uint64_t> taken;
  rng negatives(detail::link_stream(o.seed, detail::link_fixed_negative_stream), 0);
  s.val_negative = detail::link_non_edges(s, n_val, negatives, true, &taken);
  negatives.advance(std::uint64_t{1} << 40);  // the test negatives' own stretch of the stream
  s.test_negative = detail::link_non_edges(s, n_test, negatives, true, &taken);
  return s;
}

/// Pairs with 0/1 labels: what a loss or an AUC reads.
struct labelled_pairs {
  edge_pairs edges;                    // (m)
  tensor<index_t, shape<dyn>> labels;  // (m): 1 for an edge, 0 for a non-edge

  std::size_t size() const noexcept { return edges.size(); }
};

/// The positives followed by the negatives, labelled 1 and 0.
inline labelled_pairs label_pairs(const edge_pairs& positive, const edge_pairs& negative) {
  const std::size_t p = positive.size(), m = p + negative.size();
  labelled_pairs r{{tensor<index_t, shape<dyn>>(shape<dyn>{m}), tensor<index_t, shape<dyn>>(shape<dyn>{m})},
                   tensor<index_t, shape<dyn>>(shape<dyn>{m})};
  for (std::size_t k = 0; k < m; ++k) {
    const bool pos = k < p;
    const edge_pairs& from = pos ? positive : negative;
    r.edges.src[k] = from.src[pos ? k : k - p];
    r.edges.dst[k] = from.dst[pos ? k : k - p];
    r.labels[k] = pos ? 1 : 0;
  }
  return r;
}

/// Fresh training negatives per epoch: epoch e's are the words from offset
/// e·2⁴⁰ of the split's training-negative stream, so every draw depends only
/// on (split seed, e). With replacement; non-edges of the full graph.
class negative_sampler {
 public:
  explicit negative_sampler(const edge_split& s, std::uint64_t first_epoch = 0) : split_(&s), epoch_(first_epoch) {}

  /// Epoch e's `count` negatives (pure).
  edge_pairs negatives(std::uint64_t epoch, std::size_t count) const {
    return detail::link_non_edges(
        *split_, count, rng(detail::link_stream(split_->seed, detail::link_train_negative_stream), epoch << 40), false);
  }
  /// The training edges and as many fresh negatives, for the next epoch.
  labelled_pairs next() { return label_pairs(split_->train, negatives(epoch_++, split_->train.size())); }
  std::uint64_t epoch() const noexcept { return epoch_; }

 private:
  const edge_split* split_;
  std::uint64_t epoch_;
};

// ---- ROC-AUC ----------------------------------------------------------------------

/// The exact area under the ROC curve of `scores` (m) against `labels` (m;
/// non-zero = positive): the probability that a random positive outscores a
/// random negative, ties counting half (average ranks, Mann-Whitney U).
/// O(m log m). value_error when there are no positives or no negatives, or a
/// score is NaN.
template <class T, class S, class SL>
double roc_auc(const tensor<T, S>& scores, const tensor<index_t, SL>& labels) {
  const std::size_t m = scores.size();
  if (labels.size() != m)
    throw shape_error("roc_auc: scores " + scores.shape().str() + " and labels " + labels.shape().str() +
                      " must have one entry per pair");
  std::vector<std::size_t> order(m);
  std::iota(order.begin(), order.end(), std::size_t{0});
  for (std::size_t k = 0; k < m; ++k)
    if (std::isnan(static_cast<double>(scores.data()[k]))) throw value_error("roc_auc: a score is NaN");
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores.data()[a] < scores.data()[b]; });
  double positives = 0, rank_sum = 0;  // sum of the positives' ranks (1-based, ties averaged)
  for (std::size_t i = 0; i < m;) {
    std::size_t j = i;
    while (j < m && scores.data()[order[j]] == scores.data()[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + 1 + j);  // mean of ranks i + 1 .. j
    for (std::size_t k = i; k < j; ++k)
      if (labels.data()[order[k]] != 0) {
        positives += 1;
        rank_sum += rank;
      }
    i = j;
  }
  const double negatives = static_cast<double>(m) - positives;
  if (positives == 0 || negatives == 0)
    throw value_error("roc_auc: needs at least one positive and one negative (" + std::to_string(m) + " pairs, " +
                      std::to_string(static_cast<std::size_t>(positives)) + " positive)");
  return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
}

// ---- the scorer ---------------------------------------------------------------------

enum class edge_score {
  hadamard_mlp,  // s(u, v) = MLP(h_u ⊙ h_v)
  dot,           // s(u, v) = <h_u, h_v> (no parameters)
};

struct scorer_config {
  edge_score kind = edge_score::hadamard_mlp;
  std::size_t dim = 0;      // d of the embeddings (link_expert fills it in)
  std::size_t hidden = 0;   // of the MLP (0: dim)
  std::size_t layers = 2;   // linear layers of the MLP (1: a weighted dot product plus a bias)
  double dropout = 0;       // after each hidden layer of the MLP
  bool batch_norm = false;
  std::uint64_t seed = 0;   // dropout stream
};

/// Embeddings H (n, d) and pairs (m) -> one logit per pair (m).
template <class T = float, backend B = cpu>
class edge_scorer {
 public:
  using value_type = T;
  using output_type = var<T, shape<dyn>, B>;

  edge_scorer(rng& g, const scorer_config& c) : config_(c) {
    if (c.dim == 0) throw value_error("edge_scorer: dim must be positive");
    if (c.kind == edge_score::hadamard_mlp)
      mlp_.emplace_back(g, mlp_config{.in = c.dim, .hidden = c.hidden ? c.hidden : c.dim, .out = 1, .layers = c.layers,
                                      .dropout = c.dropout, .batch_norm = c.batch_norm, .seed = c.seed});
  }

  template <class S>
  output_type operator()(const var<T, S, B>& h, const edge_pairs& e) {
    static_assert(S::rank() == 2, "edge_scorer: embeddings must be (nodes, dim)");
    if (h.extent(1) != config_.dim)
      throw shape_error("edge_scorer: embeddings " + h.shape().str() + " for dim " + std::to_string(config_.dim));
    const std::size_t m = e.size();
    const var<T, shape<dyn, dyn>, B> hu = gather_rows(h, e.src);  // (m, d)
    const var<T, shape<dyn, dyn>, B> hv = gather_rows(h, e.dst);  // (m, d)
    const var<T, shape<dyn, dyn>, B> prod = hu * hv;              // (m, d)
    if (mlp_.empty()) return sum<1>(prod);                        // (m)
    return reshape(mlp_[0](prod), shape<dyn>{m});                 // (m, 1) -> (m)
  }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept {
    for (auto& n : mlp_) n.set_training(on);
  }
  const scorer_config& config() const noexcept { return config_; }

  template <class V>
  void parameters(V&& visit) {
    if (!mlp_.empty()) visit("mlp", mlp_[0]);
  }

 private:
  scorer_config config_;
  std::vector<mlp<T, B>> mlp_;  // one, for hadamard_mlp; none for dot
};

// ---- experts --------------------------------------------------------------------------

namespace detail {
template <class E>
struct link_encoder_value;
template <class T, class B>
struct link_encoder_value<mlp<T, B>> {
  using type = T;
};
template <class Conv>
struct link_encoder_value<graph::gnn<Conv>> {
  using type = typename Conv::value_type;
};
template <class T, class B>
std::size_t link_embedding_width(const mlp<T, B>& e) {
  return e.config().out;
}
template <class Conv>
std::size_t link_embedding_width(const graph::gnn<Conv>& e) {
  return e.config().classes;
}
/// The encoder's embeddings of every node: the weak expert reads its own
/// features only, the strong one also the (training) graph.
template <class T, class B>
var<T, shape<dyn, dyn>, B> link_embed(mlp<T, B>& e, const graph_inputs<T, B>& in, tape& t) {
  return weak_logits(e, in, t);
}
template <class Conv, class T, class B>
var<T, shape<dyn, dyn>, B> link_embed(graph::gnn<Conv>& e, const graph_inputs<T, B>& in, tape& t) {
  return strong_logits(e, in, t);
}
}  // namespace detail

/// An encoder (n, F) -> (n, d) and its own edge scorer.
template <class Encoder>
class link_expert {
 public:
  using encoder_type = Encoder;
  using T = typename detail::link_encoder_value<Encoder>::type;
  using B = cpu;
  using value_type = T;
  using output_type = var<T, shape<dyn>, B>;

  /// encoder_args after g build the encoder (mlp: its mlp_config; gnn: its
  /// gnn_config and conv options); the scorer's dim is the encoder's output width.
  template <class... A>
  link_expert(rng& g, scorer_config scorer, A&&... encoder_args)
      : encoder_(g, std::forward<A>(encoder_args)...), scorer_(g, with_dim(scorer, detail::link_embedding_width(encoder_))) {}

  /// Embeddings of every node of `in`: (n, d).
  var<T, shape<dyn, dyn>, B> embeddings(const graph_inputs<T, B>& in, tape& t) { return detail::link_embed(encoder_, in, t); }
  /// Logits of the pairs from given embeddings: (m).
  template <class S>
  output_type score(const var<T, S, B>& h, const edge_pairs& e) {
    return scorer_(h, e);
  }
  /// Logits of the pairs: (m).
  output_type operator()(const graph_inputs<T, B>& in, const edge_pairs& e, tape& t) {
    return scorer_(embeddings(in, t), e);
  }

  void train() noexcept { set_training(true); }
  void eval() noexcept { set_training(false); }
  void set_training(bool on) noexcept {
    encoder_.set_training(on);
    scorer_.set_training(on);
  }
  Encoder& encoder() noexcept { return encoder_; }
  edge_scorer<T, B>& scorer() noexcept { return scorer_; }

  template <class V>
  void parameters(V&& visit) {
    visit("encoder", encoder_);
    visit("scorer", scorer_);
  }

 private:
  static scorer_config with_dim(scorer_config c, std::size_t d) {
    c.dim = d;
    return c;
  }
  Encoder encoder_;
  edge_scorer<T, B> scorer_;
};

template <class T = float>
using link_mlp = link_expert<mlp<T>>;
template <class Conv>
using link_gnn = link_expert<graph::gnn<Conv>>;

/// A link-prediction graph: the node inputs of mowst.hpp over the training
/// edges only (adj: Conv::prepare of them; labels and node splits are the
/// dataset's, unused here), and the edge split.
template <class T = float>
struct link_inputs {
  graph_inputs<T> graph;
  edge_split split;

  std::size_t nodes() const noexcept { return graph.nodes(); }
  std::size_t num_features() const noexcept { return graph.num_features(); }
};

/// make_inputs<Conv> of `d` with its edges replaced by the split's training edges.
template <class Conv>
link_inputs<typename Conv::value_type> make_link_inputs(const graph::dataset& d, edge_split split,
                                                        const input_options& o = {}) {
  if (split.nodes != d.nodes())
    throw value_error("make_link_inputs: split over " + std::to_string(split.nodes) + " nodes for a graph of " +
                      std::to_string(d.nodes()));
  graph::dataset train_graph = d;
  train_graph.edges = split.train_edges();
  return {make_inputs<Conv>(train_graph, o), std::move(split)};
}

// ---- the mixture -----------------------------------------------------------------------

/// (m) logits s -> (m, 2) logits [0, s]: softmax gives [1 − σ(s), σ(s)], and
/// CE([0, s], y) = BCE(s, y).
template <class T, class S, class B>
var<T, shape<dyn, dyn>, B> two_class(const var<T, S, B>& s) {
  static_assert(S::rank() == 1, "two_class: logits must be (pairs)");
  const std::size_t m = s.extent(0);
  const var<T, shape<dyn, dyn>, B> zero(zeros<T, B>(shape<dyn, dyn>{m, 1}), s.tape_ptr(), nullptr);  // (m, 1) constant
  return concat<1>(zero, detail::as_column(s));  // (m, 2)
}

/// Mean binary cross entropy of logits s (m) against 0/1 labels (m).
template <class T, class S, class SY, class B>
var<T, scalar_shape, B> link_bce(const var<T, S, B>& s, const tensor<index_t, SY, B>& labels) {
  return cross_entropy(two_class(s), labels);
}

/// Mowst's loss over m pairs: mean C·BCE(s_w, y) + (1 − C)·BCE(s_s, y);
/// weak, strong, confidence, labels (m) each.
template <class T, class SW, class SS, class SC, class SY, class B>
var<T, scalar_shape, B> link_mowst_loss(const var<T, SW, B>& weak, const var<T, SS, B>& strong,
                                        const var<T, SC, B>& confidence, const tensor<index_t, SY, B>& labels) {
  return mowst_loss(two_class(weak), two_class(strong), confidence, labels);
}

/// The pairs' outputs of a link mixture.
template <class T, class B = cpu>
struct link_outputs {
  var<T, shape<dyn>, B> weak;        // (m) logits of the weak expert
  var<T, shape<dyn>, B> strong;      // (m) logits of the strong expert
  var<T, shape<dyn>, B> confidence;  // (m) C
};

template <class Conv>
class link_mixture {
 public:
  using T = typename Conv::value_type;
  using B = cpu;
  using value_type = T;
  using weak_type = link_mlp<T>;
  using strong_type = link_gnn<Conv>;
  using gate_type = confidence_gate<T, B>;
  using conv_options = typename Conv::options;

  /// Experts, their scorers (each its own, from `scorer`) and the gate. The
  /// encoders' input width is taken from `in`; their output width (the
  /// embedding dim: weak.out, strong.classes) defaults to their hidden width.
  /// The gate's classes are 2; its hidden width defaults to weak.hidden.
  link_mixture(rng& g, const mlp_config& weak, const graph::gnn_config& strong, const gate_config& gate,
               const scorer_config& scorer, const link_inputs<T>& in, const conv_options& o = {})
      : weak_config_(with_io(weak, in)),
        strong_config_(with_io(strong, in)),
        scorer_config_(scorer),
        options_(o),
        weak_(g, scorer, weak_config_),
        strong_(g, scorer, strong_config_, o),
        gate_(g, with_io(gate, weak_config_)) {}

  /// All three outputs over the pairs `e`.
  link_outputs<T, B> operator()(const link_inputs<T>& in, const edge_pairs& e, tape& t) {
    auto s_w = weak_(in.graph, e, t);  // (m)
    return {s_w, strong_(in.graph, e, t), confidence(s_w)};
  }
  /// C from the weak expert's logits (m): the gate on [0, s_w].
  var<T, shape<dyn>, B> confidence(const var<T, shape<dyn>, B>& s_w) { return gate_(two_class(s_w)); }

  weak_type& weak() noexcept { return weak_; }
  strong_type& strong() noexcept { return strong_; }
  gate_type& gate() noexcept { return gate_; }
  const mlp_config& weak_config() const noexcept { return weak_config_; }
  const graph::gnn_config& strong_config() const noexcept { return strong_config_; }
  const scorer_config& scorer_settings() const noexcept { return scorer_config_; }
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
  static mlp_config with_io(mlp_config c, const link_inputs<T>& in) {
    c.in = in.num_features();
    if (c.out == 0) c.out = c.hidden;
    return c;
  }
  static graph::gnn_config with_io(graph::gnn_config c, const link_inputs<T>& in) {
    c.in = in.num_features();
    if (c.classes == 0) c.classes = c.hidden;
    return c;
  }
  static gate_config with_io(gate_config c, const mlp_config& weak) {
    if (c.features != 0) throw value_error("link_mixture: the gate sees the dispersion only (features must be 0)");
    c.classes = 2;
    if (c.hidden == 0) c.hidden = weak.hidden;
    return c;
  }

  mlp_config weak_config_;
  graph::gnn_config strong_config_;
  scorer_config scorer_config_;
  conv_options options_;
  weak_type weak_;
  strong_type strong_;
  gate_type gate_;
};

// ---- evaluation ---------------------------------------------------------------------------

/// Validation and test ROC-AUC.
struct link_scores {
  double val_auc = 0, test_auc = 0;
};

namespace detail {

/// σ(s) in double.
inline double link_sigmoid(double s) { return s >= 0 ? 1 / (1 + std::exp(-s)) : std::exp(s) / (1 + std::exp(s)); }

/// p = C·σ(s_w) + (1 − C)·σ(s_s) per pair.
template <class T>
tensor<double, shape<dyn>> link_mixture_probability(const tensor<T, shape<dyn>>& s_w, const tensor<T, shape<dyn>>& s_s,
                                               const tensor<T, shape<dyn>>& c) {
  tensor<double, shape<dyn>> p(shape<dyn>{s_w.size()});
  for (std::size_t k = 0; k < p.size(); ++k) {
    const double ck = static_cast<double>(c[k]);
    p[k] = ck * link_sigmoid(static_cast<double>(s_w[k])) + (1 - ck) * link_sigmoid(static_cast<double>(s_s[k]));
  }
  return p;
}

/// An expert's eval-mode logits on several pair sets, from one forward.
template <class Expert, class T>
std::vector<tensor<T, shape<dyn>>> link_expert_logits(Expert& net, const graph_inputs<T>& in,
                                                 std::initializer_list<const edge_pairs*> sets) {
  no_grad off;
  tape t;
  net.eval();
  auto h = net.embeddings(in, t);  // (n, d)
  std::vector<tensor<T, shape<dyn>>> out;
  for (const edge_pairs* e : sets) out.push_back(net.score(h, *e).value());  // (m)
  return out;
}


}  // namespace detail

/// Val and test AUC of one expert (eval mode).
template <class Expert, class T>
link_scores evaluate_link(Expert& net, const link_inputs<T>& in, const labelled_pairs& val, const labelled_pairs& test) {
  const auto s = detail::link_expert_logits(net, in.graph, {&val.edges, &test.edges});
  return {roc_auc(s[0], val.labels), roc_auc(s[1], test.labels)};
}

/// Val and test AUC of a mixture's probabilities, and its mean C on the test pairs (eval mode).
template <class Conv, class T = typename Conv::value_type>
std::pair<link_scores, double> evaluate_link_mixture(link_mixture<Conv>& m, const link_inputs<T>& in, const labelled_pairs& val,
                                             const labelled_pairs& test) {
  no_grad off;
  m.eval();
  auto of = [&](const labelled_pairs& p) {
    tape t;
    auto out = m(in, p.edges, t);
    return std::pair{detail::link_mixture_probability(out.weak.value(), out.strong.value(), out.confidence.value()),
                     out.confidence.value()};
  };
  const auto [pv, cv] = of(val);
  const auto [pt, ct] = of(test);
  double mean_c = 0;
  for (std::size_t k = 0; k < ct.size(); ++k) mean_c += static_cast<double>(ct[k]);
  return {{roc_auc(pv, val.labels), roc_auc(pt, test.labels)}, ct.size() ? mean_c / static_cast<double>(ct.size()) : 0.0};
}

// ---- training ---------------------------------------------------------------------------------

struct link_train_result {
  double val_auc = 0;          // of the restored best state
  std::size_t epochs = 0;      // optimizer steps
  std::size_t big_epochs = 0;  // Mowst only
};

/// Trains one expert alone: BCE on the training edges and fresh negatives
/// (from `negatives`, which advances one epoch per step), early stopping on
/// validation AUC (tie: lower validation BCE), the best epoch restored.
/// Leaves it in eval mode.
template <class Expert, class T>
link_train_result train_link_expert(Expert& net, const link_inputs<T>& in, const train_options& o,
                                    negative_sampler& negatives, const char* phase = "expert") {
  detail::adam_optimizer<T> opt({{parameter_views<T>(net), o.lr}}, o);
  const auto val = label_pairs(in.split.val, in.split.val_negative);  // (m_val) pairs and labels
  detail::stopper stop{o.patience, o.min_delta};
  auto best = detail::take<T>(net);
  link_train_result r;
  for (std::size_t epoch = 0; epoch < o.max_epochs; ++epoch) {
    {
      net.train();
      tape t;
      opt.zero_grad();
      const auto batch = negatives.next();                                 // (b) pairs and labels, b = 2·|E_train|
      t.backward(link_bce(net(in.graph, batch.edges, t), batch.labels));  // logits (b) -> scalar
      opt.step();
      ++r.epochs;
    }
    const auto s = detail::link_expert_logits(net, in.graph, {&val.edges})[0];  // (m_val)
    double loss = 0;
    {
      no_grad off;
      tape t;
      loss = static_cast<double>(link_bce(t.input(s), val.labels).value()[0]);  // (m_val) -> scalar
    }
    const double auc = roc_auc(s, val.labels);
    if (stop.improved(auc, loss)) best = detail::take<T>(net);
    detail::report(o, phase, epoch + 1, 0, auc, stop.best);
    if (stop.done()) break;
  }
  detail::restore(net, best);
  net.eval();
  r.val_auc = stop.best;
  return r;
}

/// Mowst's alternating turns on a link mixture (see the top of this file),
/// from the state `m` is in (train_link pre-trains). Leaves `m` in its best
/// state, in eval mode; val_auc is the mixture's.
template <class Conv, class T = typename Conv::value_type>
link_train_result train_link_mowst(link_mixture<Conv>& m, const link_inputs<T>& in, const train_options& o,
                                   negative_sampler& negatives) {
  link_train_result r;
  detail::adam_optimizer<T> weak_opt({{parameter_views<T>(m.weak()), o.lr}, {parameter_views<T>(m.gate()), o.lr_gate}}, o);
  detail::adam_optimizer<T> strong_opt({{parameter_views<T>(m.strong()), o.lr}}, o);
  const auto val = label_pairs(in.split.val, in.split.val_negative);  // (m_val) pairs and labels
  const auto& g = in.graph;

  // The constant expert's logits on a pair set, under no_grad: in train mode
  // (frozen_train_mode) or eval mode.
  auto strong_fixed = [&](const edge_pairs& e, bool train_mode) {
    no_grad off;
    tape t;
    m.strong().set_training(train_mode);
    return m.strong()(g, e, t).value();  // (m)
  };
  auto weak_fixed = [&](const edge_pairs& e, bool train_mode) {
    no_grad off;
    tape t;
    m.weak().set_training(train_mode);
    m.gate().set_training(train_mode);
    auto s = m.weak()(g, e, t);  // (m)
    return std::pair{s.value(), m.confidence(s).value()};  // (m), (m)
  };
  auto val_auc = [&](const tensor<T, shape<dyn>>& s_w, const tensor<T, shape<dyn>>& s_s, const tensor<T, shape<dyn>>& c) {
    return roc_auc(detail::link_mixture_probability(s_w, s_s, c), val.labels);
  };

  double best_score = -std::numeric_limits<double>::infinity();
  std::size_t stale = 0;
  detail::weak_and_gate<link_mixture<Conv>> weak_part{&m};
  for (std::size_t big = 1; big <= o.max_big_epochs; ++big) {
    ++r.big_epochs;
    // Weak turn: the GNN's logits are constants.
    const auto s_s_val = strong_fixed(val.edges, false);  // (m_val)
    const bool weak_gain = detail::run_turn<T>(weak_part, [&] {
      const auto batch = negatives.next();  // (b) pairs and labels
      const auto s_s = strong_fixed(batch.edges, o.frozen_train_mode);  // (b)
      m.weak().train();
      m.gate().train();
      tape t;
      weak_opt.zero_grad();
      auto s_w = m.weak()(g, batch.edges, t);  // (b)
      t.backward(link_mowst_loss(s_w, t.input(s_s), m.confidence(s_w), batch.labels));  // (b) each -> scalar
      weak_opt.step();
    }, [&] {
      const auto [s_w, c] = weak_fixed(val.edges, false);  // (m_val), (m_val)
      return val_auc(s_w, s_s_val, c);
    }, best_score, o, "weak-turn", big, r.epochs);

    // Strong turn: the MLP's logits and the confidence are constants.
    const auto weak_val = weak_fixed(val.edges, false);
    const auto& s_w_val = weak_val.first;  // (m_val)
    const auto& c_val = weak_val.second;   // (m_val)
    const bool strong_gain = detail::run_turn<T>(m.strong(), [&] {
      const auto batch = negatives.next();  // (b) pairs and labels
      const auto [s_w, c] = weak_fixed(batch.edges, o.frozen_train_mode);  // (b), (b)
      m.strong().train();
      tape t;
      strong_opt.zero_grad();
      t.backward(link_mowst_loss(t.input(s_w), m.strong()(g, batch.edges, t), t.input(c), batch.labels));  // (b) each -> scalar
      strong_opt.step();
    }, [&] {
      return val_auc(s_w_val, strong_fixed(val.edges, false), c_val);
    }, best_score, o, "strong-turn", big, r.epochs);

    if (weak_gain || strong_gain) stale = 0;
    else if (++stale >= o.big_patience) break;
  }
  m.eval();
  r.val_auc = best_score;
  return r;
}

/// What train_link reached: the two experts alone and the mixture.
struct link_result {
  link_scores mlp, gnn, mowst;
  double mean_confidence = 0;  // the mixture's mean C over the test pairs (positive and negative)
  std::size_t epochs = 0;      // optimizer steps, all phases
  std::size_t big_epochs = 0;
};

/// The MLP alone, the GNN alone and Mowst, from one call: builds a
/// link_mixture from g (see its constructor for the configs), trains a copy
/// of each expert alone (the baselines), starts the mixture from those
/// `o.pretraining` names, and runs train_link_mowst. Training negatives come
/// from the split's stream, one epoch index per optimizer step, in this order.
template <class Conv, class T = typename Conv::value_type>
link_result train_link(rng& g, const link_inputs<T>& in, const mlp_config& weak, const graph::gnn_config& strong,
                       const gate_config& gate, const scorer_config& scorer, const train_options& o,
                       const typename Conv::options& conv = {}) {
  link_mixture<Conv> m(g, weak, strong, gate, scorer, in, conv);
  const auto val = label_pairs(in.split.val, in.split.val_negative);
  const auto test = label_pairs(in.split.test, in.split.test_negative);
  negative_sampler negatives(in.split);
  link_result r;
  rng unused(0);  // the copies' initial values are overwritten at once

  link_mlp<T> mlp_alone(unused, m.scorer_settings(), m.weak_config());
  detail::restore(mlp_alone, detail::take<T>(m.weak()));
  r.epochs += train_link_expert(mlp_alone, in, o, negatives, "mlp").epochs;
  r.mlp = evaluate_link(mlp_alone, in, val, test);

  link_gnn<Conv> gnn_alone(unused, m.scorer_settings(), m.strong_config(), conv);
  detail::restore(gnn_alone, detail::take<T>(m.strong()));
  r.epochs += train_link_expert(gnn_alone, in, o, negatives, "gnn").epochs;
  r.gnn = evaluate_link(gnn_alone, in, val, test);

  if (o.pretraining == pretrain::weak || o.pretraining == pretrain::both)
    detail::restore(m.weak(), detail::take<T>(mlp_alone));
  if (o.pretraining == pretrain::strong || o.pretraining == pretrain::both)
    detail::restore(m.strong(), detail::take<T>(gnn_alone));
  const auto mixed = train_link_mowst(m, in, o, negatives);
  r.epochs += mixed.epochs;
  r.big_epochs = mixed.big_epochs;
  std::tie(r.mowst, r.mean_confidence) = evaluate_link_mixture(m, in, val, test);
  return r;
}

}  // namespace moekit::mowst
