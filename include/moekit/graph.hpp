// moekit/graph.hpp — graphs: CSR, normalisations, sparse ops, GNN layers, data.
#pragma once

#include "autograd/ops/sparse.hpp"
#include "data/graph_dataset.hpp"
#include "graph/csbm.hpp"
#include "graph/gat_conv.hpp"
#include "graph/gcn_conv.hpp"
#include "graph/gin_conv.hpp"
#include "graph/gnn.hpp"
#include "graph/normalize.hpp"
#include "graph/sage_conv.hpp"
#include "io/graph.hpp"
#include "tensor/csr.hpp"
#include "tensor/ops/sparse.hpp"
