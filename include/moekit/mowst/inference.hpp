// moekit/mowst/inference.hpp — Mowst's inference rules:
//
//   sampled   per node draw q ~ U[0, 1); predict with the weak expert if q < C,
//             else with the strong one; accuracy averaged over m draws
//             (the reference's "multi" rule, m_times = 50)
//   expected  the exact expectation of the sampled accuracy:
//             mean_i C_i·[weak right] + (1 − C_i)·[strong right]
//   mixed     argmax(C·softmax(z_weak) + (1 − C)·softmax(z_strong)) (Mowst*)
//
// and the compute-saving form the paper argues for (Algorithm 1): run the GNN
// only for the nodes routed to it. An L-layer GNN's output at node v depends
// on v's L-hop neighbourhood, so strong_logits_on() runs it on the receptive
// field of the routed nodes S only:
//
//   R_L = S,  R_{l-1} = R_l ∪ in-neighbours(R_l)        (R_0: the rows of x read)
//
// on a sub-adjacency that keeps the rows of R_1 (each with all its entries
// and the full graph's normalised values) over the nodes of R_0, numbered so
// that every R_l is a prefix. Every layer then computes |R_0| rows of dense
// work (linear maps, norms) and SpMMs over the entries of R_1's rows; rows
// outside R_l at layer l are computed but never read. What is saved is
// exactly the work on the nodes outside R_0 and on the entries outside R_1's
// rows; receptive_field reports both counts. On small-world graphs two hops
// cover much of the graph, so the saving is far below 1 − |S|/n.
// Results equal the full-graph forward's rows of S (in eval mode: batch norm
// on running statistics and no dropout make every row independent).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../autograd/tape.hpp"
#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/shape_rules.hpp"
#include "../graph/gnn.hpp"
#include "../tensor/csr.hpp"
#include "../tensor/ops/elementwise.hpp"
#include "../tensor/ops/index.hpp"
#include "../tensor/ops/reduce.hpp"
#include "../tensor/ops/softmax.hpp"

namespace moekit::mowst {

/// Accuracy of an inference rule over a set of nodes.
struct accuracy_result {
  double accuracy = 0;         // fraction of the nodes predicted right
  double gnn_fraction = 0;     // fraction of the nodes the strong expert answered (expected, or averaged over draws)
  double mean_confidence = 0;  // mean C over the nodes
};

namespace detail {
template <class T>
void check_rule_inputs(const char* op, const tensor<index_t, shape<dyn>>& weak_pred,
                       const tensor<index_t, shape<dyn>>& strong_pred, const tensor<T, shape<dyn>>& confidence,
                       const tensor<index_t, shape<dyn>>& labels, const tensor<index_t, shape<dyn>>& nodes) {
  const std::size_t n = labels.size();
  if (weak_pred.size() != n || strong_pred.size() != n || confidence.size() != n)
    throw shape_error(std::string(op) + ": predictions " + weak_pred.shape().str() + " and " +
                      strong_pred.shape().str() + ", confidence " + confidence.shape().str() + " and labels " +
                      labels.shape().str() + " must have one entry per node");
  if (nodes.size() == 0) throw value_error(std::string(op) + ": no nodes to evaluate");
  moekit::detail::check_indices(op, nodes, n, [] { return std::string("nodes"); });
}
}  // namespace detail

/// The expectation of the sampled rule's accuracy over `nodes` (and its
/// expected GNN fraction, mean 1 − C): what sampled_accuracy tends to as the
/// number of draws grows. All inputs have one entry per graph node.
template <class T>
accuracy_result expected_accuracy(const tensor<index_t, shape<dyn>>& weak_pred,
                                  const tensor<index_t, shape<dyn>>& strong_pred,
                                  const tensor<T, shape<dyn>>& confidence, const tensor<index_t, shape<dyn>>& labels,
                                  const tensor<index_t, shape<dyn>>& nodes) {
  detail::check_rule_inputs("expected_accuracy", weak_pred, strong_pred, confidence, labels, nodes);
  accuracy_result r;
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    const auto i = static_cast<std::size_t>(nodes[k]);
    const double c = static_cast<double>(confidence[i]);
    r.accuracy += c * (weak_pred[i] == labels[i]) + (1 - c) * (strong_pred[i] == labels[i]);
    r.gnn_fraction += 1 - c;
    r.mean_confidence += c;
  }
  const double m = static_cast<double>(nodes.size());
  r.accuracy /= m;
  r.gnn_fraction /= m;
  r.mean_confidence /= m;
  return r;
}

namespace detail {
/// Draw `index` of the rule's stream as q ~ U[0, 1) (as torch.rand): C = 1
/// always picks the weak expert, C = 0 never.
inline double rule_draw(const rng& g, std::uint64_t index) noexcept {
  return 1.0 - rng::uniform_at<double>(g.seed(), index);  // uniform_at is in (0, 1]
}
}  // namespace detail

/// The sampled rule, `draws` times: q ~ U[0, 1) per node and draw from g
/// (g advances by draws · |nodes|); weak if q < C. Accuracy and GNN fraction
/// are averaged over the draws.
template <class T>
accuracy_result sampled_accuracy(const tensor<index_t, shape<dyn>>& weak_pred,
                                 const tensor<index_t, shape<dyn>>& strong_pred,
                                 const tensor<T, shape<dyn>>& confidence, const tensor<index_t, shape<dyn>>& labels,
                                 const tensor<index_t, shape<dyn>>& nodes, std::size_t draws, rng& g) {
  detail::check_rule_inputs("sampled_accuracy", weak_pred, strong_pred, confidence, labels, nodes);
  if (draws == 0) throw value_error("sampled_accuracy: draws must be positive");
  const std::size_t m = nodes.size();
  const std::uint64_t base = g.advance(draws * m);
  accuracy_result r;
  std::size_t right = 0, strong = 0;
  for (std::size_t d = 0; d < draws; ++d)
    for (std::size_t k = 0; k < m; ++k) {
      const auto i = static_cast<std::size_t>(nodes[k]);
      const bool weak = detail::rule_draw(g, base + d * m + k) < static_cast<double>(confidence[i]);
      right += (weak ? weak_pred[i] : strong_pred[i]) == labels[i];
      strong += !weak;
    }
  for (std::size_t k = 0; k < m; ++k) r.mean_confidence += static_cast<double>(confidence[static_cast<std::size_t>(nodes[k])]);
  const double total = static_cast<double>(draws * m);
  r.accuracy = static_cast<double>(right) / total;
  r.gnn_fraction = static_cast<double>(strong) / total;
  r.mean_confidence /= static_cast<double>(m);
  return r;
}

/// The nodes of `nodes` that one draw of the sampled rule sends to the strong
/// expert (q ≥ C), in their order; g advances by |nodes|.
template <class T>
tensor<index_t, shape<dyn>> route_sampled(const tensor<T, shape<dyn>>& confidence,
                                          const tensor<index_t, shape<dyn>>& nodes, rng& g) {
  moekit::detail::check_indices("route_sampled", nodes, confidence.size(), [] { return std::string("nodes"); });
  const std::uint64_t base = g.advance(nodes.size());
  std::vector<index_t> out;
  for (std::size_t k = 0; k < nodes.size(); ++k)
    if (!(detail::rule_draw(g, base + k) < static_cast<double>(confidence[static_cast<std::size_t>(nodes[k])])))
      out.push_back(nodes[k]);
  return moekit::detail::index_tensor_of(out);
}

/// The nodes of `nodes` whose confidence lies below `threshold` (a
/// deterministic routing: the strong expert answers where C < threshold).
template <class T>
tensor<index_t, shape<dyn>> route_below(const tensor<T, shape<dyn>>& confidence,
                                        const tensor<index_t, shape<dyn>>& nodes, double threshold) {
  moekit::detail::check_indices("route_below", nodes, confidence.size(), [] { return std::string("nodes"); });
  std::vector<index_t> out;
  for (std::size_t k = 0; k < nodes.size(); ++k)
    if (static_cast<double>(confidence[static_cast<std::size_t>(nodes[k])]) < threshold) out.push_back(nodes[k]);
  return moekit::detail::index_tensor_of(out);
}

/// Mowst*'s prediction: argmax_k C·softmax(z_weak)_k + (1 − C)·softmax(z_strong)_k per row.
template <class T, class S, class B>
tensor<index_t, shape<dyn>, B> mixed_prediction(const tensor<T, S, B>& weak_logits, const tensor<T, S, B>& strong_logits,
                                                const tensor<T, shape<dyn>, B>& confidence) {
  (void)elementwise_result("mixed_prediction", weak_logits.shape(), strong_logits.shape());
  if (confidence.size() != weak_logits.extent(0))
    throw shape_error("mixed_prediction: confidence " + confidence.shape().str() + " for logits " +
                      weak_logits.shape().str());
  auto c = confidence;
  auto one_minus_c = T(1) - confidence;
  auto p = mul_cols(softmax(weak_logits), c) + mul_cols(softmax(strong_logits), one_minus_c);  // (n, K)
  auto pred = argmax(p);
  return pred.reshape(shape<dyn>{pred.size()});
}

namespace detail {
/// Rows `rows` of a CSR matrix x (n, d), in that order: (|rows|, d).
template <class T>
graph::csr<T> csr_rows(const graph::csr<T>& x, const tensor<index_t, shape<dyn>>& rows) {
  std::vector<index_t> ptr(rows.size() + 1, 0), col;
  std::vector<T> val;
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const auto r = static_cast<std::size_t>(rows[k]);
    for (auto e = x.row_ptr()[r]; e < x.row_ptr()[r + 1]; ++e) {
      col.push_back(x.col()[static_cast<std::size_t>(e)]);
      val.push_back(x.has_values() ? x.values()[static_cast<std::size_t>(e)] : T(1));
    }
    ptr[k + 1] = static_cast<index_t>(col.size());
  }
  tensor<T, shape<dyn>> values(shape<dyn>{val.size()});
  std::copy(val.begin(), val.end(), values.data());
  return graph::csr<T>(rows.size(), x.cols(), moekit::detail::index_tensor_of(ptr),
                       moekit::detail::index_tensor_of(col), std::move(values));
}
}  // namespace detail

/// The part of a graph an L-layer GNN reads to answer a set of target nodes.
template <class T = float>
struct receptive_field {
  tensor<index_t, shape<dyn>> nodes;  // R_0 in local order: the targets first, then by hop
  graph::csr<T> adj;                  // (|R_0|, |R_0|): the rows of R_1 with all their entries, other rows empty
  std::size_t targets = 0;            // |S|: the first rows of the local order
  std::size_t inner = 0;              // |R_1|: the rows that aggregate
  std::size_t edges() const noexcept { return adj.nnz(); }
};

/// The receptive field of `targets` for `hops` rounds of aggregation over
/// `adj` (rows = targets, columns = sources, as graph::csr). Targets must be
/// distinct.
template <class T>
receptive_field<T> receptive_field_of(const graph::csr<T>& adj, const tensor<index_t, shape<dyn>>& targets,
                                      std::size_t hops) {
  const std::size_t n = adj.rows();
  if (adj.cols() != n) throw shape_error("receptive_field_of: adjacency " + adj.str() + " is not square");
  if (hops == 0) throw value_error("receptive_field_of: hops must be positive");
  moekit::detail::check_indices("receptive_field_of", targets, n, [] { return std::string("targets"); });
  std::vector<index_t> local(n, -1), order;
  for (std::size_t k = 0; k < targets.size(); ++k) {
    const auto v = static_cast<std::size_t>(targets[k]);
    if (local[v] >= 0) throw value_error("receptive_field_of: target " + std::to_string(v) + " is listed twice");
    local[v] = static_cast<index_t>(order.size());
    order.push_back(targets[k]);
  }
  // Widen hop by hop; after hop h, order holds R_{L-h}. R_1 is order's size after hops - 1 rounds.
  std::size_t begin = 0, inner = order.size();
  for (std::size_t h = 0; h < hops; ++h) {
    if (h + 1 == hops) inner = order.size();
    const std::size_t end = order.size();
    for (std::size_t k = begin; k < end; ++k) {
      const auto v = static_cast<std::size_t>(order[k]);
      for (auto e = adj.row_ptr()[v]; e < adj.row_ptr()[v + 1]; ++e) {
        const auto u = static_cast<std::size_t>(adj.col()[static_cast<std::size_t>(e)]);
        if (local[u] < 0) {
          local[u] = static_cast<index_t>(order.size());
          order.push_back(static_cast<index_t>(u));
        }
      }
    }
    begin = end;  // the neighbours of older nodes are in already: widen from the new ones
  }
  // Rows of R_1 (local 0 .. inner-1) with their entries, columns renumbered and sorted.
  const std::size_t m = order.size();
  std::vector<index_t> ptr(m + 1, 0), col;
  std::vector<std::pair<index_t, T>> row;
  std::vector<T> val;
  for (std::size_t r = 0; r < inner; ++r) {
    const auto v = static_cast<std::size_t>(order[r]);
    row.clear();
    for (auto e = adj.row_ptr()[v]; e < adj.row_ptr()[v + 1]; ++e) {
      const auto k = static_cast<std::size_t>(e);
      row.emplace_back(local[static_cast<std::size_t>(adj.col()[k])], adj.has_values() ? adj.values()[k] : T(1));
    }
    std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [c, w] : row) {
      col.push_back(c);
      val.push_back(w);
    }
    ptr[r + 1] = static_cast<index_t>(col.size());
  }
  for (std::size_t r = inner; r < m; ++r) ptr[r + 1] = ptr[r];
  tensor<T, shape<dyn>> values(shape<dyn>{val.size()});
  std::copy(val.begin(), val.end(), values.data());
  receptive_field<T> f;
  f.nodes = moekit::detail::index_tensor_of(order);
  f.adj = graph::csr<T>(m, m, moekit::detail::index_tensor_of(ptr), moekit::detail::index_tensor_of(col),
                        adj.has_values() ? std::move(values) : tensor<T, shape<dyn>>{});
  f.targets = targets.size();
  f.inner = inner;
  return f;
}

/// The strong expert's logits for `targets` only, (|targets|, K), computed on
/// their receptive field (see the top of this file). `net` must be in eval
/// mode (else batch statistics and dropout would couple the rows); `field`,
/// when given, receives the receptive field, for reporting what was read.
/// `features` is the dense (n, F) matrix, or its CSR rows (sparse features,
/// mowst::sparse_rows): the field's rows are then gathered as CSR rows too.
template <class Conv, class Features>
tensor<typename Conv::value_type, shape<dyn, dyn>> strong_logits_on(
    graph::gnn<Conv>& net, const graph::csr<typename Conv::value_type>& adj, const Features& features,
    const tensor<index_t, shape<dyn>>& targets, receptive_field<typename Conv::value_type>* field = nullptr) {
  using T = typename Conv::value_type;
  if (targets.size() == 0) {
    if (field) *field = {};
    return tensor<T, shape<dyn, dyn>>(shape<dyn, dyn>{0, net.config().classes});
  }
  auto f = receptive_field_of(adj, targets, net.layers());
  no_grad off;
  tape t;
  tensor<T, shape<dyn, dyn>> logits;  // (|R_0|, K)
  if constexpr (std::is_same_v<Features, graph::csr<T>>) logits = net(f.adj, detail::csr_rows(features, f.nodes)).value();
  else logits = net(f.adj, t.input(gather_rows(features, f.nodes))).value();
  auto out = logits.rows(0, f.targets).clone();
  if (field) *field = std::move(f);
  return out;
}

}  // namespace moekit::mowst
