// moekit/graph/csbm.hpp — a contextual stochastic block model (Deshpande et
// al., 2018): synthetic node classification where both the graph and the
// features carry the label, each to a degree one chooses.
//
//   labels   node i is in class i mod K (balanced classes)
//   edges    avg_degree · n / 2 undirected edges; each picks a uniform node u,
//            then with probability `homophily` a uniform other node of u's
//            class, else one of another class. So p_in / p_out, the edge
//            probabilities within and across classes, are
//            p_in ≈ h·d / (n/K),  p_out ≈ (1 − h)·d / (n − n/K).
//   features x_i = signal · μ_{y_i} + N(0, I), with μ_c independent N(0, I/f)
//            directions (|μ_c| ≈ 1): signal 0 makes features useless, ~2 makes
//            them nearly decisive.
//   splits   per class: the first train_per_class nodes train, the next
//            val_per_class validate, the rest test.
//
// Everything is drawn from one Philox stream of `seed`, so a configuration
// always gives the same graph. Duplicate edges may occur (make_csr merges them).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../data/graph_dataset.hpp"
#include "../tensor/ops/creation.hpp"

namespace moekit::graph {

struct csbm_options {
  std::size_t classes = 2;
  std::size_t nodes = 1000;
  double avg_degree = 5.0;
  double homophily = 0.8;        // fraction of edges within a class
  double signal = 1.0;           // feature signal strength
  std::size_t features = 16;
  std::size_t train_per_class = 20;
  std::size_t val_per_class = 50;
  std::uint64_t seed = 0;
};

inline dataset make_csbm(const csbm_options& o) {
  const std::size_t n = o.nodes, k = o.classes, f = o.features;
  if (k < 2 || n < k) throw value_error("make_csbm: need at least 2 classes and a node per class");
  if (f == 0) throw value_error("make_csbm: features must be positive");
  if (!(o.homophily >= 0 && o.homophily <= 1)) throw value_error("make_csbm: homophily must lie in [0, 1]");
  if (!(o.avg_degree >= 0)) throw value_error("make_csbm: avg_degree must be >= 0");
  if ((o.train_per_class + o.val_per_class) * k > n)
    throw value_error("make_csbm: train_per_class + val_per_class exceed the nodes of a class");
  rng g(o.seed);

  dataset d;
  d.name = "csbm";
  d.classes = k;
  d.labels = tensor<index_t, shape<dyn>>(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) d.labels[i] = static_cast<index_t>(i % k);

  // Features: signal · μ_y + noise.
  auto mu = normal<float>(g, shape<dyn, dyn>{k, f}, 0.0f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(f))));
  d.features = normal<float>(g, shape<dyn, dyn>{n, f});
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t c = 0; c < f; ++c) d.features(i, c) += static_cast<float>(o.signal) * mu(i % k, c);

  // Edges: 4 words each (u, same-class coin, class offset, member).
  const auto m = static_cast<std::size_t>(o.avg_degree * static_cast<double>(n) / 2.0 + 0.5);
  const std::uint64_t base = g.advance(4 * m);
  auto pick = [&](std::size_t e, int word, std::size_t range) {
    const double u = rng::uniform_at<double>(g.seed(), base + 4 * e + static_cast<std::size_t>(word));
    return std::min(range - 1, static_cast<std::size_t>((1.0 - u) * static_cast<double>(range)));  // u in (0, 1]
  };
  auto class_size = [&](std::size_t c) { return (n - c + k - 1) / k; };  // nodes c, c + k, c + 2k, ...
  d.edges.nodes = n;
  d.edges.src.reserve(m);
  d.edges.dst.reserve(m);
  for (std::size_t e = 0; e < m; ++e) {
    const std::size_t u = pick(e, 0, n), cu = u % k;
    const bool same = rng::uniform_at<double>(g.seed(), base + 4 * e + 1) <= o.homophily;
    const std::size_t cv = same ? cu : (cu + 1 + pick(e, 2, k - 1)) % k;
    const std::size_t v = cv + k * pick(e, 3, class_size(cv));
    if (u == v) continue;  // a class of one node, or the same node drawn: no self-loops
    d.edges.add(static_cast<index_t>(std::min(u, v)), static_cast<index_t>(std::max(u, v)));
  }

  // Splits per class, in node order.
  std::vector<index_t> train, val, test;
  std::vector<std::size_t> seen(k, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t r = seen[i % k]++;
    (r < o.train_per_class ? train : r < o.train_per_class + o.val_per_class ? val : test)
        .push_back(static_cast<index_t>(i));
  }
  d.train = moekit::detail::index_tensor_of(train);
  d.val = moekit::detail::index_tensor_of(val);
  d.test = moekit::detail::index_tensor_of(test);
  return d;
}

}  // namespace moekit::graph
