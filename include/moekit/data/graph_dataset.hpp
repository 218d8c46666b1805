// moekit/data/graph_dataset.hpp — a node-classification graph in memory: what
// io::load_graph reads (Cora, CiteSeer) and graph::make_csbm generates.
//
// It sits in data/ (below io/, which fills it from files) and is known to
// graph code as graph::dataset (the alias at the end).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../tensor/csr.hpp"
#include "../tensor/tensor.hpp"

namespace moekit {

namespace data {

struct graph_dataset {
  std::string name;
  tensor<float, shape<dyn, dyn>> features;  // (nodes, features)
  tensor<index_t, shape<dyn>> labels;        // (nodes): class in [0, classes), or -1 for an unlabelled node
  edge_list edges;                           // undirected edges, each listed once (make_csr with symmetrize)
  tensor<index_t, shape<dyn>> train, val, test;  // node ids of the splits, ascending, disjoint, all labelled
  std::size_t classes = 0;

  std::size_t nodes() const noexcept { return features.extent(0); }
  std::size_t num_features() const noexcept { return features.extent(1); }
};

/// Edge homophily: the share of the graph's distinct undirected edges whose
/// endpoints have the same class. Self-loops, repeated edges (in either
/// direction) and edges with an unlabelled endpoint are not counted; a graph
/// with no such edge has homophily 0.
inline double edge_homophily(const graph_dataset& d) {
  std::vector<std::pair<index_t, index_t>> pairs;
  pairs.reserve(d.edges.size());
  for (std::size_t e = 0; e < d.edges.size(); ++e) {
    const index_t u = d.edges.src[e], v = d.edges.dst[e];
    if (u == v || d.labels[static_cast<std::size_t>(u)] < 0 || d.labels[static_cast<std::size_t>(v)] < 0) continue;
    pairs.emplace_back(std::min(u, v), std::max(u, v));
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  std::size_t same = 0;
  for (const auto& [u, v] : pairs)
    same += d.labels[static_cast<std::size_t>(u)] == d.labels[static_cast<std::size_t>(v)];
  return pairs.empty() ? 0.0 : static_cast<double>(same) / static_cast<double>(pairs.size());
}

}  // namespace data

namespace graph {
/// The name graph code has always used.
using dataset = data::graph_dataset;
}  // namespace graph

}  // namespace moekit
