// Mowst: the dispersion features against hand values (1 for a one-hot
// softmax, 0 for a uniform one), gradchecks of the confidence path and both
// losses, the inference rules (sampling agrees with the expectation), the
// receptive-field forward against the full one, and training on a synthetic
// graph whose nodes are decided by their features in one half and by their
// neighbours in the other: the gate must route most of the first half to the
// weak expert. Cora, where present (MOEKIT_SHARED_DATA_DIR), checks the
// sparse feature path; skipped with a warning otherwise.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <vector>

#include <moekit/autograd/ops/reduce.hpp>
#include <moekit/graph/csbm.hpp>
#include <moekit/graph/gat_conv.hpp>
#include <moekit/graph/gcn_conv.hpp>
#include <moekit/graph/gin_conv.hpp>
#include <moekit/graph/sage_conv.hpp>
#include <moekit/io/graph.hpp>
#include <moekit/mowst/confidence.hpp>
#include <moekit/mowst/inference.hpp>
#include <moekit/mowst/mlp.hpp>
#include <moekit/mowst/mowst.hpp>
#include <moekit/mowst/training.hpp>

#include "../gradcheck/check.hpp"

#ifndef MOEKIT_SHARED_DATA_DIR
#define MOEKIT_SHARED_DATA_DIR "../shared/data"
#endif

using namespace moekit;
using moekit::testing::randn;

namespace {

/// Softmax of one row, in double.
std::vector<double> softmax_row(const std::vector<double>& z) {
  double mx = z[0], s = 0;
  for (double v : z) mx = std::max(mx, v);
  std::vector<double> p;
  for (double v : z) s += std::exp(v - mx);
  for (double v : z) p.push_back(std::exp(v - mx) / s);
  return p;
}

template <class S>
std::vector<double> row_of(const tensor<double, S>& x, std::size_t i) {
  std::vector<double> r;
  for (std::size_t j = 0; j < x.extent(1); ++j) r.push_back(x(i, j));
  return r;
}

tensor<index_t, shape<dyn>> ids(std::vector<index_t> v) { return moekit::detail::index_tensor_of(v); }

}  // namespace

// ---- dispersion --------------------------------------------------------------------

TEST_CASE("dispersion is 1 for a one-hot softmax and 0 for a uniform one", "[mowst][confidence]") {
  for (std::size_t k : {2u, 3u, 7u}) {
    INFO("classes " << k);
    tensor<double, shape<dyn, dyn>> z(shape<dyn, dyn>{3, k});
    for (std::size_t j = 0; j < k; ++j) {
      z(0, j) = j == 1 ? 0.0 : -2000.0;  // softmax exactly one-hot (exp underflows to 0)
      z(1, j) = 0.25;                   // uniform
      z(2, j) = 40.0;                   // uniform, large logits
    }
    tape t;
    const auto d = mowst::dispersion(t.input(z)).value();  // (3, 2)
    REQUIRE(d.shape() == shape<dyn, dyn>{3, 2});
    CHECK(d(0, 0) == Approx(1.0).margin(1e-12));
    CHECK(d(0, 1) == Approx(1.0).margin(1e-12));
    for (std::size_t r : {1u, 2u}) {
      CHECK(d(r, 0) == Approx(0.0).margin(1e-12));
      CHECK(d(r, 1) == Approx(0.0).margin(1e-12));
    }
  }
}

TEST_CASE("dispersion matches a reference loop on random logits", "[mowst][confidence]") {
  rng g(7);
  const auto z = randn(g, shape<dyn, dyn>{6, 5}) * 2.0;
  tape t;
  const auto d = mowst::dispersion(t.input(z)).value();
  for (std::size_t i = 0; i < 6; ++i) {
    const auto p = softmax_row(row_of(z, i));
    const double k = 5, mean = 1 / k;
    double var = 0, h = 0;
    for (double v : p) var += (v - mean) * (v - mean) / k, h -= v * std::log(v);
    CHECK(d(i, 0) == Approx(var / ((k - 1) / (k * k))).epsilon(1e-12));
    CHECK(d(i, 1) == Approx(1 - h / std::log(k)).epsilon(1e-12));
    CHECK(d(i, 0) > 0);
    CHECK(d(i, 0) < 1);
  }
}

TEST_CASE("dispersion rejects a single class", "[mowst][confidence]") {
  tape t;
  const auto z = t.input(tensor<double, shape<dyn, dyn>>(shape<dyn, dyn>{4, 1}));
  REQUIRE_THROWS_AS(mowst::dispersion(z), shape_error);
  REQUIRE_THROWS_WITH(mowst::dispersion(z), Catch::Contains("dispersion") && Catch::Contains("2 classes"));
  REQUIRE_THROWS_WITH(mowst::normalized_variance(z), Catch::Contains("normalized_variance"));
  REQUIRE_THROWS_WITH(mowst::negative_entropy(z), Catch::Contains("negative_entropy"));
}

TEST_CASE("gradcheck: dispersion features w.r.t. the logits", "[mowst][confidence][gradcheck]") {
  rng g(11);
  REQUIRE_GRADIENTS([](auto z) { return mowst::normalized_variance(z); }, randn(g, shape<dyn, dyn>{5, 4}));
  REQUIRE_GRADIENTS([](auto z) { return mowst::negative_entropy(z); }, randn(g, shape<dyn, dyn>{5, 4}));
  REQUIRE_GRADIENTS([](auto z) { return mowst::dispersion(z); }, randn(g, shape<dyn, dyn>{6, 3}));
  REQUIRE_GRADIENTS([](auto z) { return mowst::dispersion(z); }, randn(g, shape<4, 6>{}));  // static shape
}

// ---- the gate -----------------------------------------------------------------------

TEST_CASE("confidence_gate gives one C in (0, 1) per node and checks its inputs", "[mowst][confidence]") {
  rng g(3);
  mowst::confidence_gate<double> gate(g, {.classes = 4, .hidden = 8, .layers = 2, .dropout = 0});
  tape t;
  const auto c = gate(t.input(randn(g, shape<dyn, dyn>{10, 4}))).value();
  REQUIRE(c.shape() == shape<dyn>{10});
  for (std::size_t i = 0; i < 10; ++i) {
    CHECK(c[i] > 0);
    CHECK(c[i] < 1);
  }
  REQUIRE_THROWS_AS(gate(t.input(randn(g, shape<dyn, dyn>{10, 3}))), shape_error);
  REQUIRE_THROWS_WITH(gate(t.input(randn(g, shape<dyn, dyn>{10, 3}))), Catch::Contains("confidence_gate"));
  mowst::confidence_gate<double> with_x(g, {.classes = 4, .features = 5, .hidden = 8});
  REQUIRE_THROWS_AS(with_x(t.input(randn(g, shape<dyn, dyn>{10, 4}))), value_error);
  REQUIRE_THROWS_AS(with_x(t.input(randn(g, shape<dyn, dyn>{10, 4})), t.input(randn(g, shape<dyn, dyn>{10, 6}))),
                    shape_error);
}

TEST_CASE("gradcheck: the confidence path, logits to C", "[mowst][confidence][gradcheck]") {
  rng g(5);
  SECTION("through the dispersion (detach_dispersion = false)") {
    mowst::confidence_gate<double> gate(
        g, {.classes = 3, .hidden = 6, .layers = 2, .dropout = 0, .detach_dispersion = false});
    REQUIRE_GRADIENTS([&](auto z) { return gate(z); }, randn(g, shape<dyn, dyn>{7, 3}));
    const auto z = randn(g, shape<dyn, dyn>{7, 3});
    REQUIRE_PARAMETER_GRADIENTS(gate, [&](tape& t) { return gate(t.input(z)); });
  }
  SECTION("with node features appended to D") {
    mowst::confidence_gate<double> gate(
        g, {.classes = 3, .features = 2, .hidden = 5, .layers = 3, .dropout = 0, .detach_dispersion = false});
    REQUIRE_GRADIENTS([&](auto z, auto x) { return gate(z, x); }, randn(g, shape<dyn, dyn>{6, 3}),
                      randn(g, shape<dyn, dyn>{6, 2}));
  }
  SECTION("detached (the reference): no gradient reaches the logits, the gate still learns") {
    mowst::confidence_gate<double> gate(g, {.classes = 3, .hidden = 6, .dropout = 0});
    const auto z0 = randn(g, shape<dyn, dyn>{7, 3});
    tape t;
    auto z = t.variable(z0);
    t.backward(sum(gate(z)));
    CHECK_FALSE(z.grad().defined());
    REQUIRE_PARAMETER_GRADIENTS(gate, [&](tape& tp) { return gate(tp.input(z0)); });
  }
}

// ---- losses ---------------------------------------------------------------------------

TEST_CASE("mowst_loss is the C-weighted mean of the two cross entropies", "[mowst][loss]") {
  rng g(9);
  const auto zw = randn(g, shape<dyn, dyn>{5, 3}), zs = randn(g, shape<dyn, dyn>{5, 3});
  const auto c = uniform<double>(g, shape<dyn>{5}, 0.1, 0.9);
  const auto y = ids({0, 2, 1, 1, 0});
  tape t;
  const double got = mowst::mowst_loss(t.input(zw), t.input(zs), t.input(c), y).value()[0];
  const double star = mowst::mowst_star_loss(t.input(zw), t.input(zs), t.input(c), y).value()[0];
  double want = 0, want_star = 0;
  for (std::size_t i = 0; i < 5; ++i) {
    const auto label = static_cast<std::size_t>(y[i]);
    const double ce_w = -std::log(softmax_row(row_of(zw, i))[label]);
    const double ce_s = -std::log(softmax_row(row_of(zs, i))[label]);
    want += (c[i] * ce_w + (1 - c[i]) * ce_s) / 5;
    std::vector<double> mix;
    for (std::size_t k = 0; k < 3; ++k) mix.push_back(c[i] * zw(i, k) + (1 - c[i]) * zs(i, k));
    want_star -= std::log(softmax_row(mix)[label]) / 5;
  }
  CHECK(got == Approx(want).epsilon(1e-12));
  CHECK(star == Approx(want_star).epsilon(1e-12));
  REQUIRE_THROWS_AS(mowst::mowst_loss(t.input(zw), t.input(zs), t.input(c), ids({0, 1})), shape_error);
  REQUIRE_THROWS_WITH(mowst::mowst_loss(t.input(zw), t.input(zs), t.input(c), ids({0, 1})),
                      Catch::Contains("mowst_loss"));
}

TEST_CASE("gradcheck: Mowst and Mowst* losses w.r.t. logits and confidence", "[mowst][loss][gradcheck]") {
  rng g(13);
  const auto y = ids({1, 0, 3, 2, 3, 1});
  const auto c = uniform<double>(g, shape<dyn>{6}, 0.05, 0.95);
  REQUIRE_GRADIENTS([&](auto zw, auto zs, auto cc) { return mowst::mowst_loss(zw, zs, cc, y); },
                    randn(g, shape<dyn, dyn>{6, 4}), randn(g, shape<dyn, dyn>{6, 4}), c);
  REQUIRE_GRADIENTS([&](auto zw, auto zs, auto cc) { return mowst::mowst_star_loss(zw, zs, cc, y); },
                    randn(g, shape<dyn, dyn>{6, 4}), randn(g, shape<dyn, dyn>{6, 4}), c);
  // Static shapes, and the whole path logits -> gate -> loss.
  mowst::confidence_gate<double> gate(g, {.classes = 4, .hidden = 5, .dropout = 0, .detach_dispersion = false});
  REQUIRE_GRADIENTS([&](auto zw, auto zs) { return mowst::mowst_loss(zw, zs, gate(zw), y); },
                    randn(g, shape<6, 4>{}), randn(g, shape<6, 4>{}));
  REQUIRE_GRADIENTS([&](auto zw, auto zs) { return mowst::mowst_star_loss(zw, zs, gate(zw), y); },
                    randn(g, shape<6, 4>{}), randn(g, shape<6, 4>{}));
}

// ---- the weak expert ---------------------------------------------------------------------

TEST_CASE("mlp gives the same logits and gradients from dense and CSR features", "[mowst][mlp]") {
  rng g(17);
  auto x = randn(g, shape<dyn, dyn>{12, 9});
  for (std::size_t i = 0; i < x.size(); ++i)
    if (i % 3 != 0) x[i] = 0;  // sparse, as bag-of-words features
  mowst::mlp<double> net(g, {.in = 9, .hidden = 6, .out = 4, .layers = 3, .dropout = 0});
  const auto xs = mowst::sparse_rows(x);
  CHECK(xs.nnz() == 36);
  tape t;
  const auto dense = net(t.input(x)).value();
  const auto sparse = net(xs).value();
  for (std::size_t i = 0; i < dense.size(); ++i) CHECK(sparse[i] == Approx(dense[i]).epsilon(1e-12));
  REQUIRE_PARAMETER_GRADIENTS(net, [&](tape&) { return net(xs); });
  REQUIRE_THROWS_AS(net(mowst::sparse_rows(randn(g, shape<dyn, dyn>{3, 8}))), shape_error);
  REQUIRE_THROWS_AS(mowst::mlp<double>(g, {.in = 9, .hidden = 0, .out = 4, .layers = 2}), value_error);
}

// ---- inference -------------------------------------------------------------------------

TEST_CASE("sampled inference agrees with the expectation", "[mowst][inference]") {
  rng g(21);
  const std::size_t n = 300;
  tensor<index_t, shape<dyn>> weak(shape<dyn>{n}), strong(shape<dyn>{n}), labels(shape<dyn>{n});
  tensor<double, shape<dyn>> c(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = static_cast<index_t>(i % 3);
    weak[i] = i % 4 == 0 ? labels[i] : static_cast<index_t>((i + 1) % 3);    // right on a quarter
    strong[i] = i % 5 != 0 ? labels[i] : static_cast<index_t>((i + 2) % 3);  // right on four fifths
    c[i] = g.next_uniform<double>();
  }
  std::vector<index_t> some;
  for (index_t i = 0; i < static_cast<index_t>(n); i += 2) some.push_back(i);
  const auto nodes = ids(some);
  const auto e = mowst::expected_accuracy(weak, strong, c, labels, nodes);
  rng draws(4);
  const auto s = mowst::sampled_accuracy(weak, strong, c, labels, nodes, 4000, draws);
  const double sigma = 0.5 / std::sqrt(4000.0 * static_cast<double>(nodes.size()));
  CHECK(std::abs(s.accuracy - e.accuracy) < 5 * sigma);
  CHECK(std::abs(s.gnn_fraction - e.gnn_fraction) < 5 * sigma);
  CHECK(s.mean_confidence == Approx(e.mean_confidence).epsilon(1e-12));
  CHECK(draws.offset() == 4000 * nodes.size());

  // C = 1: always the weak expert; C = 0: always the strong one.
  const auto all_weak = mowst::sampled_accuracy(weak, strong, ones<double>(shape<dyn>{n}), labels, nodes, 3, draws);
  const auto all_strong = mowst::sampled_accuracy(weak, strong, zeros<double>(shape<dyn>{n}), labels, nodes, 3, draws);
  CHECK(all_weak.gnn_fraction == 0);
  CHECK(all_weak.accuracy == 0.5);  // the even nodes: weak right where i % 4 == 0
  CHECK(all_strong.gnn_fraction == 1);
  CHECK(all_strong.accuracy == 0.8);  // strong right where i % 10 != 0

  // The same seed and offset route the same nodes.
  rng a(9), b(9);
  const auto ra = mowst::route_sampled(c, nodes, a), rb = mowst::route_sampled(c, nodes, b);
  REQUIRE(ra.size() == rb.size());
  for (std::size_t k = 0; k < ra.size(); ++k) CHECK(ra[k] == rb[k]);
  CHECK(mowst::route_below(c, nodes, 2.0).size() == nodes.size());
  CHECK(mowst::route_below(c, nodes, 0.0).size() == 0);
  REQUIRE_THROWS_AS(mowst::expected_accuracy(weak, strong, c, labels, ids({0, static_cast<index_t>(n)})), value_error);
}

TEST_CASE("mixed_prediction is the argmax of the C-mixed probabilities", "[mowst][inference]") {
  const auto zw = from_values(shape<dyn, dyn>{2, 2}, {3.0, 0.0, 0.0, 3.0});
  const auto zs = from_values(shape<dyn, dyn>{2, 2}, {0.0, 1.0, 0.0, 1.0});
  const auto c = from_values(shape<dyn>{2}, {0.9, 0.1});
  const auto p = mowst::mixed_prediction(zw, zs, c);
  CHECK(p[0] == 0);  // the confident weak expert wins
  CHECK(p[1] == 1);
}

TEST_CASE("receptive_field_of collects the L-hop neighbourhood, targets first", "[mowst][inference]") {
  graph::edge_list e{.nodes = 6};
  for (index_t i = 0; i + 1 < 6; ++i) e.add(i, i + 1);  // a path 0 - 1 - 2 - 3 - 4 - 5
  const auto adj = graph::gcn_norm(graph::make_csr<float>(e, {.symmetrize = true}));
  const auto one = mowst::receptive_field_of(adj, ids({2}), 1);
  CHECK(one.targets == 1);
  CHECK(one.inner == 1);
  CHECK(one.nodes.size() == 3);
  CHECK(one.nodes[0] == 2);
  CHECK(one.edges() == 3);  // 2's entries: 1, 2, 3
  const auto two = mowst::receptive_field_of(adj, ids({2}), 2);
  CHECK(two.inner == 3);
  CHECK(two.nodes.size() == 5);  // 0 .. 4
  CHECK(two.edges() == 9);
  REQUIRE_THROWS_AS(mowst::receptive_field_of(adj, ids({6}), 1), value_error);
  REQUIRE_THROWS_AS(mowst::receptive_field_of(adj, ids({1, 1}), 1), value_error);
}

namespace {
template <class Conv>
void check_subset_forward(std::size_t layers) {
  const auto d = graph::make_csbm({.classes = 3, .nodes = 120, .avg_degree = 3, .features = 6, .train_per_class = 5,
                                   .val_per_class = 5, .seed = 1});
  rng g(2);
  graph::gnn<Conv> net(g, {.in = 6, .hidden = 8, .classes = 3, .layers = layers, .dropout = 0.5});
  const auto adj = Conv::prepare(graph::make_csr(d.edges, {.symmetrize = true}));
  // A few training steps so that batch norm's running statistics are not the identity.
  optim::adamw<float> opt(net, {.lr = 0.01});
  for (int s = 0; s < 3; ++s) {
    tape t;
    opt.zero_grad();
    t.backward(sum(net(adj, t.input(d.features))));
    opt.step();
  }
  net.eval();
  no_grad off;
  tape t;
  const auto full = net(adj, t.input(d.features)).value();
  const auto targets = ids({5, 17, 60, 61, 119});
  mowst::receptive_field<float> field;
  const auto part = mowst::strong_logits_on(net, adj, d.features, targets, &field);
  REQUIRE(part.shape() == shape<dyn, dyn>{5, 3});
  for (std::size_t k = 0; k < 5; ++k)
    for (std::size_t j = 0; j < 3; ++j)
      CHECK(part(k, j) == Approx(full(static_cast<std::size_t>(targets[k]), j)).epsilon(1e-5).margin(1e-6));
  CHECK(field.nodes.size() < 120);
  CHECK(field.edges() < adj.nnz());
  // The same from the features' CSR rows (the field's rows gathered as CSR).
  const auto from_csr = mowst::strong_logits_on(net, adj, mowst::sparse_rows(d.features), targets);
  for (std::size_t k = 0; k < part.size(); ++k) CHECK(from_csr[k] == Approx(part[k]).epsilon(1e-5).margin(1e-6));
}

/// A gnn<Conv> in double gives the same logits and parameter gradients from
/// dense features and from their CSR rows, and the CSR path passes gradcheck.
template <class Conv>
void check_sparse_input(const typename Conv::options& o, std::size_t in, std::size_t hidden) {
  graph::edge_list e{.nodes = 10};
  for (index_t i = 0; i < 10; ++i) e.add(i, (i * 3 + 1) % 10);
  for (index_t i = 0; i + 2 < 10; i += 2) e.add(i, i + 2);
  const auto adj = Conv::prepare(graph::make_csr<double>(e, {.symmetrize = true}));
  rng g(23);
  auto x = randn(g, shape<dyn, dyn>{10, in});
  for (std::size_t i = 0; i < x.size(); ++i)
    if (i % 4 != 1) x[i] = 0;  // sparse, as bag-of-words features
  const auto xs = mowst::sparse_rows(x);
  graph::gnn<Conv> net(g, {.in = in, .hidden = hidden, .classes = 3, .layers = 2, .dropout = 0, .batch_norm = false}, o);
  auto grads = [&](auto&& input) {
    for (auto& v : parameter_views<double>(net))
      if (v.grad.defined()) fill(v.grad, 0.0);
    tape t;
    auto y = net(adj, input(t));
    t.backward(sum(y * y));
    std::vector<double> all(y.value().data(), y.value().data() + y.value().size());
    for (auto& v : parameter_views<double>(net))
      for (std::size_t k = 0; v.grad.defined() && k < v.grad.size(); ++k) all.push_back(v.grad[k]);
    return all;
  };
  const auto dense = grads([&](tape& t) { return t.input(x); });
  const auto sparse = grads([&](tape&) { return xs; });
  REQUIRE(dense.size() == sparse.size());
  for (std::size_t k = 0; k < dense.size(); ++k) CHECK(sparse[k] == Approx(dense[k]).epsilon(1e-10).margin(1e-12));
  REQUIRE_PARAMETER_GRADIENTS(net, [&](tape&) { return net(adj, xs); });
}
}  // namespace

TEST_CASE("gnn gives the same logits and gradients from dense and CSR features, for every conv",
          "[mowst][graph][sparse]") {
  check_sparse_input<graph::gcn_conv<dyn, dyn, double>>({}, 7, 5);
  check_sparse_input<graph::sage_conv<dyn, dyn, double>>({}, 7, 5);   // out < in: W_neigh first
  check_sparse_input<graph::sage_conv<dyn, dyn, double>>({}, 4, 6);   // out > in: the dense path aggregates first
  check_sparse_input<graph::gin_conv<dyn, dyn, double>>({.eps = 0.3, .train_eps = true, .mlp_batch_norm = false}, 7, 5);
  check_sparse_input<graph::gat_conv<dyn, dyn, double>>({.heads = 2}, 7, 3);
}

TEST_CASE("strong_logits_on equals the full-graph forward on the targets", "[mowst][inference]") {
  check_subset_forward<graph::gcn_conv<>>(2);
  check_subset_forward<graph::gcn_conv<>>(3);
  check_subset_forward<graph::sage_conv<>>(2);
  check_subset_forward<graph::gat_conv<>>(2);
}

// ---- training ---------------------------------------------------------------------------

namespace {

/// 3 classes, 600 nodes. Even "blocks" (node / 3 even): features decide
/// (a strong class signal) and neighbours are random. Odd blocks: features
/// are pure noise, neighbours share the class. Group A = the even blocks.
graph::dataset split_graph(std::uint64_t seed) {
  const std::size_t n = 600, k = 3, f = 8;
  rng g(seed);
  graph::dataset d;
  d.name = "split";
  d.classes = k;
  d.labels = tensor<index_t, shape<dyn>>(shape<dyn>{n});
  d.features = normal<float>(g, shape<dyn, dyn>{n, f});
  auto easy = [](std::size_t i) { return (i / 3) % 2 == 0; };
  for (std::size_t i = 0; i < n; ++i) {
    d.labels[i] = static_cast<index_t>(i % k);
    if (easy(i)) d.features(i, i % k) += 4.0f;
  }
  d.edges.nodes = n;
  for (std::size_t i = 0; i < n; ++i)
    for (int e = 0; e < 3; ++e) {
      std::size_t j = g.next_u32() % n;
      if (!easy(i)) j = (j / k) * k + i % k;  // same class
      if (j != i) d.edges.add(static_cast<index_t>(std::min(i, j)), static_cast<index_t>(std::max(i, j)));
    }
  std::vector<index_t> train, val, test;
  for (std::size_t i = 0; i < n; ++i) (i < 150 ? train : i < 300 ? val : test).push_back(static_cast<index_t>(i));
  d.train = ids(train);
  d.val = ids(val);
  d.test = ids(test);
  return d;
}

struct trained {
  double val = 0;
  std::vector<float> confidence;
  std::vector<float> params;
};

trained train_split(std::uint64_t seed) {
  const auto d = split_graph(3);
  const auto in = mowst::make_inputs<graph::gcn_conv<>>(d, {.normalize_features = false});
  rng g(seed);
  mowst::mixture<graph::gcn_conv<>> m(g, {.hidden = 16, .dropout = 0.2}, {.hidden = 16, .dropout = 0.2},
                                      {.hidden = 16, .dropout = 0.2}, in);
  const auto r = mowst::train_mowst(m, in, {.lr = 0.01, .lr_gate = 0.01, .patience = 30, .big_patience = 2,
                                            .max_big_epochs = 4, .pretraining = mowst::pretrain::both,
                                            .pretrain_dropout = 0.2});
  no_grad off;
  tape t;
  const auto c = m(in, t).confidence.value();
  trained out{r.val_accuracy, std::vector<float>(c.data(), c.data() + c.size()), {}};
  visit_parameters(m, [&](const std::string&, auto& p) { out.params.insert(out.params.end(), p.value().data(), p.value().data() + p.size()); });
  return out;
}

}  // namespace

TEST_CASE("Mowst routes the nodes that features decide to the weak expert", "[mowst][train]") {
  const auto r = train_split(1);
  INFO("validation accuracy " << r.val);
  CHECK(r.val > 0.8);
  std::size_t easy = 0, easy_weak = 0, hard = 0, hard_weak = 0;
  for (std::size_t i = 300; i < 600; ++i) {
    const bool weak = r.confidence[i] > 0.5f;
    if ((i / 3) % 2 == 0) ++easy, easy_weak += weak;
    else ++hard, hard_weak += weak;
  }
  const double easy_share = static_cast<double>(easy_weak) / static_cast<double>(easy);
  const double hard_share = static_cast<double>(hard_weak) / static_cast<double>(hard);
  INFO("weak expert (C > 0.5) on feature-decided test nodes " << easy_share << ", on neighbourhood-decided "
                                                              << hard_share);
  CHECK(easy_share > 0.75);
  CHECK(hard_share < easy_share - 0.4);
}

TEST_CASE("Mowst training is deterministic for a seed", "[mowst][train]") {
  const auto a = train_split(5), b = train_split(5);
  CHECK(a.val == b.val);
  REQUIRE(a.params.size() == b.params.size());
  CHECK(a.params == b.params);
  CHECK(a.confidence == b.confidence);
}

TEST_CASE("Mowst* trains the mixture jointly", "[mowst][train]") {
  const auto d = split_graph(3);
  const auto in = mowst::make_inputs<graph::gcn_conv<>>(d, {.normalize_features = false});
  rng g(2);
  mowst::mixture<graph::gcn_conv<>> m(g, {.hidden = 16, .dropout = 0.2}, {.hidden = 16, .dropout = 0.2},
                                      {.hidden = 16, .dropout = 0.2}, in);
  const auto r = mowst::train_mowst_star(m, in, {.patience = 30, .pretraining = mowst::pretrain::none});
  INFO("validation accuracy " << r.val_accuracy);
  CHECK(r.val_accuracy > 0.8);
  CHECK(r.epochs > 30);
}

TEST_CASE("mixture builds its strong expert with the conv options, and pre-training keeps them",
          "[mowst][train]") {
  const auto d = graph::make_csbm({.classes = 3, .nodes = 90, .avg_degree = 4, .features = 5, .train_per_class = 5,
                                   .val_per_class = 5, .seed = 2});
  const auto in = mowst::make_inputs<graph::gin_conv<>>(d);
  const graph::gin_options o{.mlp_layers = 3, .mlp_batch_norm = false};
  rng g(1);
  mowst::mixture<graph::gin_conv<>> m(g, {.hidden = 8}, {.hidden = 8, .batch_norm = false}, {.hidden = 8}, in, o);
  graph::gnn<graph::gin_conv<>> alone(g, m.strong().config(), o);
  CHECK(count_parameters(m.strong()) == count_parameters(alone));
  const auto r = mowst::train_mowst(m, in, {.patience = 5, .big_patience = 1, .max_big_epochs = 2,
                                            .pretraining = mowst::pretrain::both});
  CHECK(r.big_epochs >= 1);
  CHECK(r.epochs > 10);
}

// ---- Cora -----------------------------------------------------------------------------------

TEST_CASE("make_inputs on Cora: normalised rows, CSR features equal the dense ones", "[mowst][data]") {
  const auto dir = std::filesystem::path(MOEKIT_SHARED_DATA_DIR) / "cora";
  if (!std::filesystem::exists(dir / "meta.txt")) {
    WARN("skipped: no Cora at " << dir.string() << " (set MOEKIT_SHARED_DATA_DIR)");
    return;
  }
  const auto in = mowst::make_inputs<graph::gcn_conv<>>(io::load_graph(dir));
  REQUIRE(in.nodes() == 2708);
  CHECK(in.sparse_features.nnz() == 49216);
  for (std::size_t i = 0; i < 2708; i += 97) {
    double s = 0;
    for (std::size_t j = 0; j < 1433; ++j) s += in.features(i, j);
    CHECK(s == Approx(1.0).epsilon(1e-5));
  }
  rng g(1);
  mowst::mlp<float> net(g, {.in = 1433, .hidden = 16, .out = 7, .layers = 2, .dropout = 0});
  net.eval();
  tape t;
  const auto dense = net(t.input(in.features)).value();
  const auto sparse = net(in.sparse_features).value();
  for (std::size_t i = 0; i < dense.size(); i += 11) CHECK(sparse[i] == Approx(dense[i]).epsilon(1e-4).margin(1e-5));
}
