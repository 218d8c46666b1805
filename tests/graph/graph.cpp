// Graph structure and graph ops: CSR construction (symmetrise, deduplicate,
// self-loops, degrees, transposed structure, bad input), the normalisations
// against values worked out by hand, SpMM / SDDMM / segment softmax against
// dense reference loops, the GNN layers' shapes, the CSBM generator, and a GCN
// that learns a homophilous CSBM graph.
#include <catch2/catch.hpp>

#include <moekit/autograd/ops/index.hpp>
#include <moekit/autograd/ops/loss.hpp>
#include <moekit/graph/csbm.hpp>
#include <moekit/graph/gat_conv.hpp>
#include <moekit/graph/gcn_conv.hpp>
#include <moekit/graph/gin_conv.hpp>
#include <moekit/graph/gnn.hpp>
#include <moekit/graph/normalize.hpp>
#include <moekit/graph/sage_conv.hpp>
#include <moekit/optim/adamw.hpp>
#include <moekit/tensor/csr.hpp>
#include <moekit/tensor/ops/reduce.hpp>
#include <moekit/tensor/ops/sparse.hpp>

#include <cmath>
#include <set>
#include <utility>
#include <vector>

using namespace moekit;
using graph::self_loops;

namespace {

std::vector<index_t> as_vector(const tensor<index_t, shape<dyn>>& t) { return {t.data(), t.data() + t.size()}; }

/// Hand-made directed graph: 0->1, 1->2 twice, a loop on 2, 3->0.
graph::edge_list small_directed() {
  graph::edge_list e{.nodes = 4};
  e.add(0, 1);
  e.add(1, 2);
  e.add(1, 2);
  e.add(2, 2);
  e.add(3, 0);
  return e;
}

/// The dense matrix of a (rows, cols), values included.
template <class T>
std::vector<std::vector<double>> dense(const graph::csr<T>& a) {
  std::vector<std::vector<double>> m(a.rows(), std::vector<double>(a.cols(), 0.0));
  for (std::size_t k = 0; k < a.nnz(); ++k) m[static_cast<std::size_t>(a.row()[k])][static_cast<std::size_t>(a.col()[k])] += a.value(k);
  return m;
}

/// A random directed graph with duplicates, loops and empty rows, as CSR with random values.
graph::csr<double> random_graph(rng& g, std::size_t n, std::size_t m) {
  graph::edge_list e{.nodes = n};
  for (std::size_t k = 0; k < m; ++k) {
    // Nodes 0 and 1 receive nothing, so some rows are empty.
    const auto src = static_cast<index_t>(g.next_u32() % n), dst = static_cast<index_t>(2 + g.next_u32() % (n - 2));
    e.add(src, dst, 0.5 + g.next_uniform<double>());
  }
  return graph::make_csr<double>(e, {.deduplicate = false});
}

}  // namespace

TEST_CASE("make_csr sorts incoming edges into rows and merges duplicates", "[graph][csr]") {
  const auto a = graph::make_csr(small_directed());
  REQUIRE(a.rows() == 4);
  REQUIRE(a.cols() == 4);
  CHECK(as_vector(a.row_ptr()) == std::vector<index_t>{0, 1, 2, 4, 4});  // row = destination
  CHECK(as_vector(a.col()) == std::vector<index_t>{3, 0, 1, 2});
  CHECK(as_vector(a.row()) == std::vector<index_t>{0, 1, 2, 2});
  CHECK_FALSE(a.has_values());
  CHECK(as_vector(a.in_degree()) == std::vector<index_t>{1, 1, 2, 0});
  CHECK(as_vector(a.out_degree()) == std::vector<index_t>{1, 1, 1, 1});

  const auto dup = graph::make_csr(small_directed(), {.deduplicate = false});
  CHECK(as_vector(dup.row_ptr()) == std::vector<index_t>{0, 1, 2, 5, 5});
  CHECK(as_vector(dup.col()) == std::vector<index_t>{3, 0, 1, 1, 2});
}

TEST_CASE("make_csr adds up the weights of merged duplicates", "[graph][csr]") {
  auto e = small_directed();
  e.weight = {1, 2, 3, 4, 5};
  const auto a = graph::make_csr<double>(e);
  REQUIRE(a.has_values());
  // Entries: (0,3)=5, (1,0)=1, (2,1)=2+3, (2,2)=4.
  CHECK(as_vector(a.col()) == std::vector<index_t>{3, 0, 1, 2});
  CHECK(a.values()[0] == 5);
  CHECK(a.values()[1] == 1);
  CHECK(a.values()[2] == 5);
  CHECK(a.values()[3] == 4);
}

TEST_CASE("make_csr symmetrises and adds or removes self-loops", "[graph][csr]") {
  const auto plain = graph::make_csr(small_directed(), {.symmetrize = true, .loops = self_loops::remove});
  CHECK(as_vector(plain.row_ptr()) == std::vector<index_t>{0, 2, 4, 5, 6});
  CHECK(as_vector(plain.col()) == std::vector<index_t>{1, 3, 0, 2, 1, 0});
  CHECK(as_vector(plain.degrees()) == std::vector<index_t>{2, 2, 1, 1});

  // Node 2 has its loop already: it keeps one, the others get one.
  const auto looped = graph::make_csr(small_directed(), {.symmetrize = true, .loops = self_loops::add});
  CHECK(as_vector(looped.row_ptr()) == std::vector<index_t>{0, 3, 6, 8, 10});
  CHECK(as_vector(looped.col()) == std::vector<index_t>{0, 1, 3, 0, 1, 2, 1, 2, 0, 3});

  const auto kept = graph::make_csr(small_directed(), {.symmetrize = true});
  CHECK(as_vector(kept.col()) == std::vector<index_t>{1, 3, 0, 2, 1, 2, 0});
}

TEST_CASE("csr keeps the transposed structure with a permutation into its entries", "[graph][csr]") {
  rng g(3);
  const auto a = random_graph(g, 9, 40);
  std::vector<std::vector<std::pair<index_t, double>>> expect(a.cols());
  for (std::size_t k = 0; k < a.nnz(); ++k)
    expect[static_cast<std::size_t>(a.col()[k])].push_back({a.row()[k], a.values()[k]});
  for (std::size_t j = 0; j < a.cols(); ++j) {
    std::vector<std::pair<index_t, double>> got;
    for (auto k = a.t_row_ptr()[j]; k < a.t_row_ptr()[j + 1]; ++k) {
      const auto kk = static_cast<std::size_t>(k);
      got.push_back({a.t_col()[kk], a.values()[static_cast<std::size_t>(a.t_perm()[kk])]});
    }
    INFO("column " << j);
    CHECK(got == expect[j]);  // rows ascending: entries of A are in row order
  }
}

TEST_CASE("make_csr and csr reject out-of-range nodes", "[graph][csr]") {
  auto e = small_directed();
  e.add(1, 7);
  REQUIRE_THROWS_AS(graph::make_csr(e), value_error);
  REQUIRE_THROWS_WITH(graph::make_csr(e), Catch::Contains("make_csr") && Catch::Contains("edge 5 (1 -> 7)") &&
                                              Catch::Contains("[0, 4)"));
  graph::edge_list neg{.nodes = 3};
  neg.add(-1, 0);
  REQUIRE_THROWS_WITH(graph::make_csr(neg), Catch::Contains("node -1"));
  auto w = small_directed();
  w.weight = {1.0};
  REQUIRE_THROWS_WITH(graph::make_csr(w), Catch::Contains("1 weights for 5 edges"));

  auto ptr = from_values<index_t>(shape<dyn>{3}, {0, 1, 2});
  auto bad_col = from_values<index_t>(shape<dyn>{2}, {0, 5});
  REQUIRE_THROWS_AS((graph::csr<float>(2, 3, ptr, bad_col)), value_error);
  REQUIRE_THROWS_WITH((graph::csr<float>(2, 3, ptr, bad_col)), Catch::Contains("csr: column 5"));
  REQUIRE_THROWS_AS((graph::csr<float>(3, 3, ptr, bad_col)), shape_error);
}

TEST_CASE("gcn_norm is D^-1/2 (A + I) D^-1/2 on a hand-made graph", "[graph][normalize]") {
  // Star 1-0, 1-2, 1-3. With self-loops: d0 = d2 = d3 = 2, d1 = 4.
  graph::edge_list e{.nodes = 4};
  e.add(1, 0);
  e.add(1, 2);
  e.add(3, 1);
  const auto a = graph::make_csr<double>(e, {.symmetrize = true});
  const auto m = dense(graph::gcn_norm(a));
  const double s = 1.0 / std::sqrt(8.0);  // 1 / sqrt(2 · 4)
  const std::vector<std::vector<double>> expect = {
      {0.5, s, 0, 0}, {s, 0.25, s, s}, {0, s, 0.5, 0}, {0, s, 0, 0.5}};
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 4; ++j) {
      INFO(i << ", " << j);
      CHECK(m[i][j] == Approx(expect[i][j]).margin(1e-15));
    }

  const auto mean = dense(graph::mean_norm(a));
  CHECK(mean[1][0] == Approx(1.0 / 3));
  CHECK(mean[1][2] == Approx(1.0 / 3));
  CHECK(mean[1][3] == Approx(1.0 / 3));
  CHECK(mean[0][1] == Approx(1.0));
  CHECK(mean[1][1] == 0);

  // A graph that has a loop already keeps its weight: (A + I) does not double it.
  graph::edge_list l{.nodes = 2};
  l.add(0, 1, 1.0);
  l.add(0, 0, 3.0);
  const auto g2 = dense(graph::gcn_norm(graph::make_csr<double>(l)));
  // Rows: 0 gets {0: 3}, 1 gets {0: 1, 1: 1 (added)}. d0 = 3, d1 = 2.
  CHECK(g2[0][0] == Approx(1.0));
  CHECK(g2[1][0] == Approx(1.0 / std::sqrt(6.0)));
  CHECK(g2[1][1] == Approx(0.5));
  CHECK(g2[0][1] == 0);
}

TEST_CASE("spmm, spmm_transposed, sddmm and segment_softmax match dense loops", "[graph][ops]") {
  rng g(11);
  const auto a = random_graph(g, 12, 70);
  const std::size_t n = 12, heads = 3, f = 4, w = heads * f;
  const auto x = normal<double>(g, shape<dyn, dyn>{n, w});
  const auto y = normal<double>(g, shape<dyn, dyn>{n, w});
  const auto v = normal<double>(g, shape<dyn, dyn>{a.nnz(), heads});

  // y = A·x with A's values, and with per-head values.
  const auto ax = spmm(a, x), atx = spmm_transposed(a, x), avx = spmm(a, v, x), avtx = spmm_transposed(a, v, x);
  std::vector<double> e_ax(n * w, 0), e_atx(n * w, 0), e_avx(n * w, 0), e_avtx(n * w, 0);
  for (std::size_t k = 0; k < a.nnz(); ++k) {
    const auto i = static_cast<std::size_t>(a.row()[k]), j = static_cast<std::size_t>(a.col()[k]);
    for (std::size_t c = 0; c < w; ++c) {
      e_ax[i * w + c] += a.values()[k] * x(j, c);
      e_atx[j * w + c] += a.values()[k] * x(i, c);
      e_avx[i * w + c] += v(k, c / f) * x(j, c);
      e_avtx[j * w + c] += v(k, c / f) * x(i, c);
    }
  }
  for (std::size_t i = 0; i < n * w; ++i) {
    CHECK(ax[i] == Approx(e_ax[i]).margin(1e-12));
    CHECK(atx[i] == Approx(e_atx[i]).margin(1e-12));
    CHECK(avx[i] == Approx(e_avx[i]).margin(1e-12));
    CHECK(avtx[i] == Approx(e_avtx[i]).margin(1e-12));
  }
  CHECK(ax[0] == 0);  // rows 0 and 1 are empty
  CHECK(ax[w + 3] == 0);

  // sddmm: one dot product per entry (and per head).
  const auto d1 = sddmm(a, x, y);
  const auto dh = sddmm(a, x, y, heads);
  REQUIRE(dh.extent(1) == heads);
  for (std::size_t k = 0; k < a.nnz(); ++k) {
    const auto i = static_cast<std::size_t>(a.row()[k]), j = static_cast<std::size_t>(a.col()[k]);
    double all = 0;
    for (std::size_t h = 0; h < heads; ++h) {
      double dot = 0;
      for (std::size_t c = h * f; c < (h + 1) * f; ++c) dot += x(i, c) * y(j, c);
      CHECK(dh(k, h) == Approx(dot).margin(1e-12));
      all += dot;
    }
    CHECK(d1[k] == Approx(all).margin(1e-12));
  }

  // segment softmax: each row's entries sum to 1 per head and follow exp ratios.
  const auto s = segment_softmax(a, v);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t h = 0; h < heads; ++h) {
      double z = 0, total = 0;
      for (auto k = a.row_ptr()[i]; k < a.row_ptr()[i + 1]; ++k) z += std::exp(v(static_cast<std::size_t>(k), h));
      for (auto k = a.row_ptr()[i]; k < a.row_ptr()[i + 1]; ++k) {
        const auto kk = static_cast<std::size_t>(k);
        CHECK(s(kk, h) == Approx(std::exp(v(kk, h)) / z).margin(1e-14));
        total += s(kk, h);
      }
      if (a.row_ptr()[i + 1] > a.row_ptr()[i]) CHECK(total == Approx(1.0));
    }
}

TEST_CASE("sparse ops check their operands", "[graph][ops]") {
  rng g(5);
  const auto a = random_graph(g, 6, 20);
  const auto x = normal<double>(g, shape<dyn, dyn>{5, 4});
  REQUIRE_THROWS_AS(spmm(a, x), shape_error);
  REQUIRE_THROWS_WITH(spmm(a, x), Catch::Contains("spmm") && Catch::Contains("(5, 4)"));
  const auto x6 = normal<double>(g, shape<dyn, dyn>{6, 4});
  const auto v3 = normal<double>(g, shape<dyn, dyn>{a.nnz(), 3});
  REQUIRE_THROWS_WITH(spmm(a, v3, x6), Catch::Contains("3 heads do not divide the row width 4"));
  const auto short_v = normal<double>(g, shape<dyn>{a.nnz() - 1});
  REQUIRE_THROWS_WITH(segment_softmax(a, short_v), Catch::Contains("segment_softmax"));
  REQUIRE_THROWS_WITH(sddmm(a, x6, x), Catch::Contains("sddmm"));
  const auto af = graph::make_csr<float>(graph::to_edge_list(a));
  REQUIRE_THROWS_WITH(spmm(af, x6), Catch::Contains("different element types"));
}

TEST_CASE("spmm gives the same result for any thread count", "[graph][ops]") {
  rng g(21);
  graph::edge_list e{.nodes = 3000};
  for (int k = 0; k < 30000; ++k) e.add(static_cast<index_t>(g.next_u32() % 3000), static_cast<index_t>(g.next_u32() % 3000));
  const auto a = graph::gcn_norm(graph::make_csr(e, {.symmetrize = true}));
  const auto x = normal<float>(g, shape<dyn, dyn>{3000, 32});
  const int saved = num_threads();
  set_num_threads(1);
  const auto one = spmm_transposed(a, spmm(a, x));
  set_num_threads(4);
  const auto four = spmm_transposed(a, spmm(a, x));
  set_num_threads(saved);
  bool same = true;
  for (std::size_t i = 0; i < one.size(); ++i) same = same && one[i] == four[i];
  CHECK(same);
}

TEST_CASE("GNN layers produce the documented shapes", "[graph][layers]") {
  rng g(7);
  auto d = graph::make_csbm({.classes = 3, .nodes = 30, .avg_degree = 4, .features = 5, .train_per_class = 2,
                             .val_per_class = 2, .seed = 1});
  const auto a = graph::make_csr(d.edges, {.symmetrize = true});
  tape t;
  auto x = t.input(d.features);

  graph::gcn_conv<> gcn(g, 5, 8);
  CHECK(gcn(graph::gcn_conv<>::prepare(a), x).shape() == shape<dyn, dyn>{30, 8});
  graph::gcn_conv<5, 8> gcn_static(g);
  auto xs = t.input(shape_cast<shape<dyn, 5>>(d.features));
  auto hs = gcn_static(graph::gcn_conv<5, 8>::prepare(a), xs);
  STATIC_REQUIRE(std::is_same_v<decltype(hs), var<float, shape<dyn, 8>>>);

  graph::sage_conv<> sage(g, 5, 3);
  CHECK(sage(graph::sage_conv<>::prepare(a), x).shape() == shape<dyn, dyn>{30, 3});
  graph::gin_conv<> gin(g, 5, 6, {.train_eps = true, .mlp_layers = 3});
  CHECK(gin(graph::gin_conv<>::prepare(a), x).shape() == shape<dyn, dyn>{30, 6});
  std::vector<std::string> names;
  visit_parameters(gin, [&](const std::string& name, auto&) { names.push_back(name); });
  CHECK(names == std::vector<std::string>{"eps", "mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias",
                                          "mlp.2.weight", "mlp.2.bias", "norm.0.weight", "norm.0.bias",
                                          "norm.1.weight", "norm.1.bias"});

  const auto ga = graph::gat_conv<>::prepare(a);
  CHECK(ga.nnz() == a.nnz() + 30);  // one self-loop per node
  graph::gat_conv<> concat(g, 5, 4, {.heads = 3});
  CHECK(concat(ga, x).shape() == shape<dyn, dyn>{30, 12});
  graph::gat_conv<> averaged(g, 5, 4, {.heads = 3, .concat = false});
  CHECK(averaged(ga, x).shape() == shape<dyn, dyn>{30, 4});

  graph::gnn<graph::gat_conv<>> gat_net(g, {.in = 5, .hidden = 4, .classes = 3, .layers = 3}, {.heads = 2});
  CHECK(gat_net.conv(1).in_features() == 8);  // hidden layers concatenate 2 heads
  CHECK(gat_net.conv(2).heads() == 1);
  CHECK(gat_net(graph::gnn<graph::gat_conv<>>::prepare(a), x).shape() == shape<dyn, dyn>{30, 3});
  std::size_t norms = 0;
  visit_parameters(gat_net, [&](const std::string& name, auto&) { norms += name.starts_with("norms."); });
  CHECK(norms == 4);  // two batch norms (after the two hidden layers), weight and bias each
}

TEST_CASE("make_csbm draws a reproducible graph with the asked homophily", "[graph][csbm]") {
  const graph::csbm_options o{.classes = 4, .nodes = 2000, .avg_degree = 8, .homophily = 0.7, .features = 8, .seed = 9};
  const auto d = graph::make_csbm(o), again = graph::make_csbm(o);
  REQUIRE(d.nodes() == 2000);
  REQUIRE(d.num_features() == 8);
  REQUIRE(d.edges.src == again.edges.src);
  REQUIRE(d.edges.dst == again.edges.dst);
  CHECK(d.edges.size() > 7900);  // 8000 drawn, a few self-draws skipped
  std::size_t same = 0;
  for (std::size_t k = 0; k < d.edges.size(); ++k) same += d.labels[static_cast<std::size_t>(d.edges.src[k])] == d.labels[static_cast<std::size_t>(d.edges.dst[k])];
  CHECK(static_cast<double>(same) / static_cast<double>(d.edges.size()) == Approx(0.7).margin(0.02));
  CHECK(data::edge_homophily(d) == Approx(0.7).margin(0.02));
  CHECK(d.train.size() == 80);
  CHECK(d.val.size() == 200);
  CHECK(d.test.size() == 1720);
  std::set<index_t> all;
  for (const auto* s : {&d.train, &d.val, &d.test})
    for (std::size_t i = 0; i < s->size(); ++i) all.insert((*s)[i]);
  CHECK(all.size() == 2000);  // disjoint and complete
}

TEST_CASE("make_csbm's homophily knob: the graph's measured edge homophily is within 0.05 of the asked one",
          "[graph][csbm]") {
  // The graphs of the Mowst homophily sweep (docs/mowst.md), from 0.9 down to
  // 0.1, counted on distinct undirected edges as a GNN sees them.
  for (const double h : {0.9, 0.7, 0.5, 0.3, 0.1}) {
    for (const std::size_t classes : {std::size_t{2}, std::size_t{4}}) {
      const auto d = graph::make_csbm(
          {.classes = classes, .nodes = 2000, .avg_degree = 8, .homophily = h, .features = 4, .seed = 3});
      INFO("homophily " << h << ", " << classes << " classes");
      CHECK(std::abs(data::edge_homophily(d) - h) <= 0.05);
    }
  }
  // The count itself: a triangle with one mixed edge, a repeated edge in the
  // other direction, a self-loop and an edge to an unlabelled node.
  graph::dataset t;
  t.labels = moekit::detail::index_tensor_of({0, 0, 1, -1});
  t.edges.nodes = 4;
  for (auto [u, v] : std::vector<std::pair<index_t, index_t>>{{0, 1}, {1, 0}, {1, 2}, {0, 0}, {2, 3}, {0, 2}})
    t.edges.add(u, v);
  CHECK(data::edge_homophily(t) == Approx(1.0 / 3.0));
}

namespace {
template <class Model, class Features>
double accuracy(Model& net, const graph::csr<float>& adj, const Features& x, const graph::dataset& d,
                const tensor<index_t, shape<dyn>>& split) {
  no_grad off;
  tape t;
  net.eval();
  auto logits = net(adj, t.input(x)).value();
  net.train();
  auto pred = argmax(logits);
  std::size_t hit = 0;
  for (std::size_t i = 0; i < split.size(); ++i) {
    const auto n = static_cast<std::size_t>(split[i]);
    hit += pred[n] == d.labels[n];
  }
  return static_cast<double>(hit) / static_cast<double>(split.size());
}
}  // namespace

TEST_CASE("a 2-layer GCN learns a homophilous CSBM graph with weak features", "[graph][train]") {
  // Features alone are weak (signal 0.6 over noise 1); the graph is 90 % homophilous.
  const auto d = graph::make_csbm({.classes = 3, .nodes = 900, .avg_degree = 8, .homophily = 0.9, .signal = 0.6,
                                   .features = 16, .train_per_class = 20, .val_per_class = 30, .seed = 4});
  using model = graph::gnn<graph::gcn_conv<>>;
  rng g(1);
  model net(g, {.in = 16, .hidden = 32, .classes = 3, .layers = 2, .dropout = 0.5, .seed = 2});
  const auto adj = model::prepare(graph::make_csr(d.edges, {.symmetrize = true}));
  optim::adamw<float> opt(net, {.lr = 0.01, .weight_decay = 5e-4});
  const auto train_labels = gather_rows(d.labels, d.train);
  const double before = accuracy(net, adj, d.features, d, d.test);
  for (int epoch = 0; epoch < 100; ++epoch) {
    tape t;
    opt.zero_grad();
    auto logits = net(adj, t.input(d.features));
    t.backward(cross_entropy(gather_rows(logits, d.train), train_labels));
    opt.step();
  }
  const double after = accuracy(net, adj, d.features, d, d.test);
  INFO("test accuracy before " << before << ", after " << after);
  CHECK(after >= 0.9);
  CHECK(after > before + 0.2);
}
