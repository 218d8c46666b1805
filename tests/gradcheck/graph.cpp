// Gradient checks of the sparse graph ops (spmm with constant and with
// learned entry values, one and several heads; sddmm; segment softmax) and of
// the GNN layers and the gnn model, for their input features and their own
// parameters. Graphs are small random directed ones with duplicate edges,
// self-loops and empty rows, so that Aᵀ ≠ A and every kernel branch runs.
#include "check.hpp"

#include <moekit/graph/gat_conv.hpp>
#include <moekit/graph/gcn_conv.hpp>
#include <moekit/graph/gin_conv.hpp>
#include <moekit/graph/gnn.hpp>
#include <moekit/graph/sage_conv.hpp>
#include <moekit/nn/layer.hpp>

#include <cmath>
#include <sstream>
#include <string>
#include <string_view>

using namespace moekit;
using moekit::testing::randn;

namespace {

/// n nodes, m random directed edges (duplicates kept), nodes 0 and 1 receive none.
graph::csr<double> random_graph(rng& g, std::size_t n, std::size_t m, bool weighted = true) {
  graph::edge_list e{.nodes = n};
  for (std::size_t k = 0; k < m; ++k) {
    const auto src = static_cast<index_t>(g.next_u32() % n), dst = static_cast<index_t>(2 + g.next_u32() % (n - 2));
    if (weighted) e.add(src, dst, 0.5 + g.next_uniform<double>());
    else e.add(src, dst);
  }
  return graph::make_csr<double>(e, {.deduplicate = false});
}


}  // namespace

TEST_CASE("gradcheck: spmm with the matrix's own values", "[gradcheck][graph]") {
  rng g(1);
  const auto a = random_graph(g, 7, 25);
  REQUIRE_GRADIENTS([&](auto x) { return spmm(a, x); }, randn(g, shape<dyn, dyn>{7, 3}));
  REQUIRE_GRADIENTS([&](auto x) { return spmm(a, x); }, randn(g, shape<7, 2>{}));
  const auto plain = random_graph(g, 6, 15, false);  // no values: all 1
  REQUIRE_GRADIENTS([&](auto x) { return spmm(plain, x); }, randn(g, shape<dyn, 4>{6}));
  REQUIRE_GRADIENTS([&](auto x) { return spmm_transposed(a, x); }, randn(g, shape<dyn, dyn>{7, 2}));
}

TEST_CASE("gradcheck: spmm with learned entry values, one head and several", "[gradcheck][graph]") {
  rng g(2);
  const auto a = random_graph(g, 6, 20);
  REQUIRE_GRADIENTS([&](auto v, auto x) { return spmm(a, v, x); }, randn(g, shape<dyn>{a.nnz()}),
                    randn(g, shape<dyn, dyn>{6, 3}));
  REQUIRE_GRADIENTS([&](auto v, auto x) { return spmm(a, v, x); }, randn(g, shape<dyn, 2>{a.nnz()}),
                    randn(g, shape<6, 6>{}));  // 2 heads of 3 columns
  const auto fixed = randn(g, shape<dyn, dyn>{a.nnz(), 3});
  REQUIRE_GRADIENTS([&](auto x) { return spmm(a, fixed, x); }, randn(g, shape<dyn, dyn>{6, 3}));
}

TEST_CASE("gradcheck: sddmm", "[gradcheck][graph]") {
  rng g(3);
  const auto a = random_graph(g, 6, 18);
  REQUIRE_GRADIENTS([&](auto x, auto y) { return sddmm(a, x, y); }, randn(g, shape<dyn, dyn>{6, 4}),
                    randn(g, shape<dyn, dyn>{6, 4}));
  REQUIRE_GRADIENTS([&](auto x, auto y) { return sddmm(a, x, y, 2); }, randn(g, shape<6, 4>{}),
                    randn(g, shape<6, 4>{}));
}

TEST_CASE("gradcheck: segment_softmax over incoming edges", "[gradcheck][graph]") {
  rng g(4);
  const auto a = random_graph(g, 6, 22);
  REQUIRE_GRADIENTS([&](auto s) { return segment_softmax(a, s); }, randn(g, shape<dyn>{a.nnz()}));
  REQUIRE_GRADIENTS([&](auto s) { return segment_softmax(a, s); }, randn(g, shape<dyn, 3>{a.nnz()}));
  // Attention as GAT uses it: softmax weights into a weighted SpMM.
  REQUIRE_GRADIENTS([&](auto s, auto x) { return spmm(a, segment_softmax(a, s), x); },
                    randn(g, shape<dyn, dyn>{a.nnz(), 2}), randn(g, shape<dyn, dyn>{6, 4}));
}

TEST_CASE("gradcheck: gcn_conv", "[gradcheck][graph][layers]") {
  rng g(5);
  const auto adj = graph::gcn_conv<dyn, dyn, double>::prepare(random_graph(g, 7, 20, false));
  graph::gcn_conv<dyn, dyn, double> conv(g, 4, 3);
  const auto x = randn(g, shape<dyn, dyn>{7, 4});
  REQUIRE_GRADIENTS([&](auto v) { return conv(adj, v); }, x);
  REQUIRE_PARAMETER_GRADIENTS(conv, [&](tape& t) { return conv(adj, t.input(x)); }, "");
  graph::gcn_conv<4, 3, double> fixed(g);
  REQUIRE_GRADIENTS([&](auto v) { return fixed(adj.cast<double>(), v); }, randn(g, shape<7, 4>{}));
}

TEST_CASE("gradcheck: sage_conv, aggregating before and after the weight", "[gradcheck][graph][layers]") {
  rng g(6);
  const auto adj = graph::sage_conv<dyn, dyn, double>::prepare(random_graph(g, 7, 20, false));
  for (std::size_t out : {2u, 6u}) {  // out < in: transform first; out > in: aggregate first
    INFO("out " << out);
    graph::sage_conv<dyn, dyn, double> conv(g, 4, out);
    const auto x = randn(g, shape<dyn, dyn>{7, 4});
    REQUIRE_GRADIENTS([&](auto v) { return conv(adj, v); }, x);
    REQUIRE_PARAMETER_GRADIENTS(conv, [&](tape& t) { return conv(adj, t.input(x)); }, "");
  }
  graph::sage_conv<4, 3, double> fixed(g, 4, 3, {.root_weight = false});
  REQUIRE_GRADIENTS([&](auto v) { return fixed(adj, v); }, randn(g, shape<7, 4>{}));
}

TEST_CASE("gradcheck: gin_conv with fixed and learned eps", "[gradcheck][graph][layers]") {
  rng g(7);
  const auto adj = graph::gin_conv<dyn, dyn, double>::prepare(random_graph(g, 8, 20, false));
  graph::gin_conv<dyn, dyn, double> fixed(g, 3, 4, {.eps = 0.3});
  const auto x = randn(g, shape<dyn, dyn>{8, 3});
  REQUIRE_GRADIENTS([&](auto v) { return fixed(adj, v); }, x);
  REQUIRE_PARAMETER_GRADIENTS(fixed, [&](tape& t) { return fixed(adj, t.input(x)); }, "mlp.0");
  graph::gin_conv<dyn, dyn, double> learned(g, 3, 4, {.eps = 0.1, .train_eps = true, .mlp_layers = 3});
  REQUIRE_GRADIENTS([&](auto v) { return learned(adj, v); }, x);
  REQUIRE_PARAMETER_GRADIENTS(learned, [&](tape& t) { return learned(adj, t.input(x)); }, "");
  graph::gin_conv<3, 4, double> no_norm(g, 3, 4, {.mlp_batch_norm = false});
  REQUIRE_GRADIENTS([&](auto v) { return no_norm(adj, v); }, randn(g, shape<8, 3>{}));
}

TEST_CASE("gradcheck: gat_conv, heads concatenated and averaged", "[gradcheck][graph][layers]") {
  rng g(8);
  const auto adj = graph::gat_conv<dyn, dyn, double>::prepare(random_graph(g, 7, 18, false));
  const auto x = randn(g, shape<dyn, dyn>{7, 3});
  for (bool concat : {true, false}) {
    INFO("concat " << concat);
    graph::gat_conv<dyn, dyn, double> conv(g, 3, 2, {.heads = 3, .concat = concat});
    REQUIRE_GRADIENTS([&](auto v) { return conv(adj, v); }, x);
    REQUIRE_PARAMETER_GRADIENTS(conv, [&](tape& t) { return conv(adj, t.input(x)); }, "");
  }
  graph::gat_conv<3, 2, double> one_head(g);
  REQUIRE_GRADIENTS([&](auto v) { return one_head(adj, v); }, randn(g, shape<7, 3>{}));
}

TEST_CASE("gradcheck: gnn model with batch norm", "[gradcheck][graph][layers]") {
  rng g(9);
  const auto raw = random_graph(g, 8, 24, false);
  const auto x = randn(g, shape<dyn, dyn>{8, 3});
  {
    using model = graph::gnn<graph::gcn_conv<dyn, dyn, double>>;
    model net(g, {.in = 3, .hidden = 4, .classes = 2, .layers = 3, .dropout = 0.0});
    const auto adj = model::prepare(raw);
    REQUIRE_GRADIENTS([&](auto v) { return net(adj, v); }, x);
    REQUIRE_PARAMETER_GRADIENTS(net, [&](tape& t) { return net(adj, t.input(x)); }, "convs.0");
  }
  {
    using model = graph::gnn<graph::gat_conv<dyn, dyn, double>>;
    model net(g, {.in = 3, .hidden = 2, .classes = 2, .layers = 2, .dropout = 0.0, .act = graph::activation::elu},
              {.heads = 2});
    const auto adj = model::prepare(raw);
    REQUIRE_GRADIENTS([&](auto v) { return net(adj, v); }, x);
    REQUIRE_PARAMETER_GRADIENTS(net, [&](tape& t) { return net(adj, t.input(x)); }, "convs.1");
  }
}
