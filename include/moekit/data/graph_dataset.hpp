// moekit/data/graph_dataset.hpp — a node-classification graph in memory: what
// io::load_graph reads (Cora, CiteSeer) and graph::make_csbm generates.
//
// It sits in data/ (below io/, which fills it from files) and is known to
// graph code as graph::dataset (the alias at the end).
#pragma once

#include <cstddef>
#include <string>

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

}  // namespace data

namespace graph {
/// The name graph code has always used.
using dataset = data::graph_dataset;
}  // namespace graph

}  // namespace moekit
