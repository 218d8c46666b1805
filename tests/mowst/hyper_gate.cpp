// Mowst's hyper-network gate (gate_kind::hyper): the default gate is still
// sigmoid(mlp(D)); the hyper gate starts at C = 0.5, its C equals the per-node
// gate recomputed by a plain loop from the hypernetwork's raw output, dense
// and CSR features give the same C and gradients, gradchecks w.r.t. logits,
// features and every parameter (with and without the ReLU between the
// generated layers), the errors, and a training run in which the right gate
// depends on x: the hyper gate fits it, an MLP gate on D alone cannot.
//
// Compiled in one unity translation unit with mowst.cpp: every namespace-scope
// name here starts with hg_.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <moekit/autograd/ops/math.hpp>
#include <moekit/autograd/ops/reduce.hpp>
#include <moekit/autograd/parameter_tree.hpp>
#include <moekit/graph/csbm.hpp>
#include <moekit/graph/gcn_conv.hpp>
#include <moekit/mowst/confidence.hpp>
#include <moekit/mowst/mlp.hpp>
#include <moekit/mowst/mowst.hpp>
#include <moekit/mowst/training.hpp>
#include <moekit/optim/adamw.hpp>

#include "../gradcheck/check.hpp"

namespace {

using hg_mat = moekit::tensor<double, moekit::shape<moekit::dyn, moekit::dyn>>;
using hg_vec = moekit::tensor<double, moekit::shape<moekit::dyn>>;

/// A hyper gate on `features` node features with generated width h.
moekit::mowst::gate_config hg_config(std::size_t classes, std::size_t features, std::size_t h, bool relu) {
  return {.classes = classes, .features = features, .hidden = h, .dropout = 0, .detach_dispersion = false,
          .kind = moekit::mowst::gate_kind::hyper, .hyper_hidden = 7, .hyper_layers = 2, .hyper_relu = relu};
}

/// Adds scale·N(0, 1) to every parameter: moves the zero-initialised w2, b2
/// columns off zero so that every path of the gate carries a gradient.
template <class M>
void hg_jitter(M& model, moekit::rng& g, double scale) {
  moekit::visit_parameters(model, [&](const std::string&, auto& p) {
    auto noise = moekit::normal<double>(g, p.value().shape());
    for (std::size_t i = 0; i < noise.size(); ++i) p.value().data()[i] += scale * noise.data()[i];
  });
}

/// Features with about two thirds of the entries zero (bag-of-words like).
hg_mat hg_sparse_features(moekit::rng& g, std::size_t n, std::size_t f) {
  auto x = moekit::testing::randn(g, moekit::shape<moekit::dyn, moekit::dyn>{n, f});
  for (std::size_t i = 0; i < x.size(); ++i)
    if (i % 3 != 1) x[i] = 0;
  return x;
}

/// Every parameter's gradient, in visiting order.
template <class M>
std::vector<double> hg_gradients(M& model) {
  std::vector<double> out;
  moekit::visit_parameters(model, [&](const std::string&, auto& p) {
    const auto gr = p.grad();
    out.insert(out.end(), gr.data(), gr.data() + gr.size());
  });
  return out;
}
template <class M>
void hg_zero_grad(M& model) {
  moekit::visit_parameters(model, [](const std::string&, auto& p) { p.zero_grad(); });
}

double hg_sigmoid(double v) { return 1 / (1 + std::exp(-v)); }

}  // namespace

TEST_CASE("hyper gate: C starts at 0.5, parameters are hyper.*, the mlp gate is unchanged", "[mowst][hyper_gate]") {
  using namespace moekit;
  rng g(31);
  const auto z = testing::randn(g, shape<dyn, dyn>{9, 4}) * 3.0;
  const auto x = testing::randn(g, shape<dyn, dyn>{9, 5}) * 10.0;  // large features: the init does not care
  mowst::confidence_gate<double> gate(g, hg_config(4, 5, 6, true));
  REQUIRE(gate.hypernetwork() != nullptr);
  CHECK(gate.gate_mlp() == nullptr);
  CHECK(gate.hypernetwork()->config().out == 4 * 6 + 1);
  tape t;
  const auto c = gate(t.input(z), t.input(x)).value();
  REQUIRE(c.shape() == shape<dyn>{9});
  for (std::size_t i = 0; i < 9; ++i) CHECK(c[i] == 0.5);
  std::vector<std::string> names;
  visit_parameters(gate, [&](const std::string& name, auto&) { names.push_back(name); });
  REQUIRE(!names.empty());
  for (const auto& name : names) CHECK(name.starts_with("hyper."));

  // The default (mlp) gate is sigmoid(mlp(D)) with the mlp built first from the same stream.
  rng ga(8), gb(8);
  mowst::confidence_gate<double> plain(ga, {.classes = 4, .hidden = 6, .dropout = 0});
  mowst::mlp<double> same(gb, {.in = 2, .hidden = 6, .out = 1, .layers = 2, .dropout = 0});
  CHECK(plain.hypernetwork() == nullptr);
  REQUIRE(plain.gate_mlp() != nullptr);
  const auto got = plain(t.input(z)).value();
  const auto want = sigmoid(same(mowst::dispersion(t.input(z)))).value();  // (9, 1)
  for (std::size_t i = 0; i < 9; ++i) CHECK(got[i] == want[i]);
  visit_parameters(plain, [&](const std::string& name, auto&) { CHECK(name.starts_with("mlp.")); });

  // float, CSR features (the Cora path), in eval mode.
  mowst::confidence_gate<float> hf(g, {.classes = 4, .features = 5, .hidden = 6, .kind = mowst::gate_kind::hyper});
  hf.eval();
  auto xf = uniform<float>(g, shape<dyn, dyn>{9, 5}, -1.0f, 1.0f);
  for (std::size_t i = 0; i < xf.size(); i += 2) xf[i] = 0;
  const auto cf = hf(t.input(normal<float>(g, shape<dyn, dyn>{9, 4})), mowst::sparse_rows(xf)).value();
  for (std::size_t i = 0; i < 9; ++i) CHECK(cf[i] == 0.5f);
}

TEST_CASE("hyper gate: C is the per-node generated gate, recomputed by a loop", "[mowst][hyper_gate]") {
  using namespace moekit;
  for (const bool relu : {false, true}) {
    INFO("hyper_relu " << relu);
    rng g(relu ? 41 : 42);
    const std::size_t n = 8, k = 3, f = 5, h = 4;
    mowst::confidence_gate<double> gate(g, hg_config(k, f, h, relu));
    hg_jitter(gate, g, 0.5);
    const auto z = testing::randn(g, shape<dyn, dyn>{n, k}) * 2.0;
    const auto x = testing::randn(g, shape<dyn, dyn>{n, f});
    tape t;
    const auto c = gate(t.input(z), t.input(x)).value();                 // (n)
    const auto p = (*gate.hypernetwork())(t.input(x)).value();           // (n, 4h + 1)
    const auto d = mowst::dispersion(t.input(z)).value();                // (n, 2)
    REQUIRE(p.shape() == shape<dyn, dyn>{n, 4 * h + 1});
    for (std::size_t i = 0; i < n; ++i) {
      double logit = p(i, 4 * h);  // b2
      for (std::size_t j = 0; j < h; ++j) {
        double a = d(i, 0) * p(i, j) + d(i, 1) * p(i, h + j) + p(i, 2 * h + j);  // D·W1 + b1
        if (relu) a = std::max(a, 0.0);
        logit += a * p(i, 3 * h + j);  // · w2
      }
      CHECK(c[i] == Approx(hg_sigmoid(logit)).epsilon(1e-13));
    }
  }
}

TEST_CASE("hyper gate: dense and CSR features give the same C and gradients", "[mowst][hyper_gate]") {
  using namespace moekit;
  rng g(43);
  const std::size_t n = 11, k = 4, f = 9;
  auto cfg = hg_config(k, f, 5, true);
  cfg.hyper_layers = 3;
  mowst::confidence_gate<double> gate(g, cfg);
  hg_jitter(gate, g, 0.3);
  const auto z = testing::randn(g, shape<dyn, dyn>{n, k});
  const auto x = hg_sparse_features(g, n, f);
  const auto xs = mowst::sparse_rows(x);
  const auto r = testing::randn(g, shape<dyn>{n});

  hg_zero_grad(gate);
  tape td;
  const auto cd = gate(td.input(z), td.input(x));
  td.backward(cd, r);
  const auto dense_grads = hg_gradients(gate);

  hg_zero_grad(gate);
  tape ts;
  const auto cs = gate(ts.input(z), xs);
  ts.backward(cs, r);
  const auto sparse_grads = hg_gradients(gate);

  for (std::size_t i = 0; i < n; ++i) CHECK(cs.value()[i] == Approx(cd.value()[i]).epsilon(1e-12));
  REQUIRE(dense_grads.size() == sparse_grads.size());
  double largest = 0;
  for (std::size_t i = 0; i < dense_grads.size(); ++i) {
    largest = std::max(largest, std::abs(dense_grads[i]));
    CHECK(sparse_grads[i] == Approx(dense_grads[i]).epsilon(1e-10).margin(1e-13));
  }
  CHECK(largest > 1e-3);  // the gradients compared are not all zero
}

TEST_CASE("gradcheck: hyper gate w.r.t. logits, features and parameters", "[mowst][hyper_gate][gradcheck]") {
  using namespace moekit;
  for (const bool relu : {true, false}) {
    INFO("hyper_relu " << relu);
    rng g(relu ? 51 : 52);
    const std::size_t n = 7, k = 3, f = 4;
    mowst::confidence_gate<double> gate(g, hg_config(k, f, 3, relu));
    hg_jitter(gate, g, 0.4);
    REQUIRE_GRADIENTS([&](auto z, auto x) { return gate(z, x); }, testing::randn(g, shape<dyn, dyn>{n, k}),
                      testing::randn(g, shape<dyn, dyn>{n, f}));
    REQUIRE_GRADIENTS([&](auto z, auto x) { return gate(z, x); }, testing::randn(g, shape<7, 3>{}),
                      testing::randn(g, shape<7, 4>{}));  // static shapes
    const auto z = testing::randn(g, shape<dyn, dyn>{n, k});
    const auto x = hg_sparse_features(g, n, f);
    REQUIRE_PARAMETER_GRADIENTS(gate, [&](tape& t) { return gate(t.input(z), t.input(x)); });
    const auto xs = mowst::sparse_rows(x);
    REQUIRE_PARAMETER_GRADIENTS(gate, [&](tape& t) { return gate(t.input(z), xs); });
  }
  SECTION("detached dispersion (the default): no gradient reaches the logits") {
    rng g(53);
    auto cfg = hg_config(3, 4, 3, true);
    cfg.detach_dispersion = true;
    mowst::confidence_gate<double> gate(g, cfg);
    hg_jitter(gate, g, 0.4);
    const auto x = testing::randn(g, shape<dyn, dyn>{6, 4});
    tape t;
    auto z = t.variable(testing::randn(g, shape<dyn, dyn>{6, 3}));
    auto xv = t.variable(x);
    t.backward(sum(gate(z, xv)));
    CHECK_FALSE(z.grad().defined());
    CHECK(xv.grad().defined());
  }
}

TEST_CASE("hyper gate: errors", "[mowst][hyper_gate]") {
  using namespace moekit;
  rng g(61);
  // No features: nothing to generate the gate from.
  REQUIRE_THROWS_AS(mowst::confidence_gate<double>(g, hg_config(3, 0, 4, true)), value_error);
  REQUIRE_THROWS_WITH(mowst::confidence_gate<double>(g, hg_config(3, 0, 4, true)),
                      Catch::Contains("confidence_gate") && Catch::Contains("features"));
  REQUIRE_THROWS_AS(mowst::confidence_gate<double>(g, hg_config(3, 4, 0, true)), value_error);
  REQUIRE_THROWS_AS(mowst::confidence_gate<double>(g, hg_config(1, 4, 4, true)), value_error);

  mowst::confidence_gate<double> gate(g, hg_config(3, 4, 2, true));
  tape t;
  const auto z = t.input(testing::randn(g, shape<dyn, dyn>{5, 3}));
  REQUIRE_THROWS_AS(gate(z), value_error);  // the hyper gate needs x
  const auto wide = testing::randn(g, shape<dyn, dyn>{5, 6});
  REQUIRE_THROWS_AS(gate(z, t.input(wide)), shape_error);
  REQUIRE_THROWS_WITH(gate(z, t.input(wide)), Catch::Contains("confidence_gate"));
  REQUIRE_THROWS_AS(gate(z, mowst::sparse_rows(wide)), shape_error);
  REQUIRE_THROWS_AS(gate(z, t.input(testing::randn(g, shape<dyn, dyn>{4, 4}))), shape_error);  // rows
  REQUIRE_THROWS_AS(gate(z, mowst::sparse_rows(testing::randn(g, shape<dyn, dyn>{4, 4}))), shape_error);
  REQUIRE_THROWS_AS(gate(t.input(testing::randn(g, shape<dyn, dyn>{5, 2})), t.input(testing::randn(g, shape<dyn, dyn>{5, 4}))),
                    shape_error);  // classes

  // The mlp gate on [D, x] needs x dense; without features it ignores x.
  mowst::confidence_gate<double> concat_gate(g, {.classes = 3, .features = 4, .hidden = 5});
  const auto xs = mowst::sparse_rows(testing::randn(g, shape<dyn, dyn>{5, 4}));
  REQUIRE_THROWS_AS(concat_gate(z, xs), value_error);
  REQUIRE_THROWS_WITH(concat_gate(z, xs), Catch::Contains("confidence_gate") && Catch::Contains("dense"));
  mowst::confidence_gate<double> d_only(g, {.classes = 3, .hidden = 5, .dropout = 0});
  CHECK(d_only(z, xs).value()[0] == d_only(z).value()[0]);
  try {
    gate(z);
    FAIL("no throw");
  } catch (const moekit::error&) {
    SUCCEED("a moekit::error subclass");
  }
}

namespace {

struct hg_fit {
  double train_bce = 0, test_accuracy = 0;
};

/// Logits whose dispersion D varies at random (row scales in [0, 4]).
hg_mat hg_random_logits(moekit::rng& g, std::size_t n, std::size_t k) {
  auto z = moekit::testing::randn(g, moekit::shape<moekit::dyn, moekit::dyn>{n, k});
  for (std::size_t i = 0; i < n; ++i) {
    const double s = 4 * g.next_uniform<double>();
    for (std::size_t j = 0; j < k; ++j) z(i, j) *= s;
  }
  return z;
}

/// The target of node i: x_0 > 0 alone, or (x_0 > 0) == (its negative
/// entropy is above `median`): x then decides in which direction D matters.
bool hg_target(bool with_d, double x0, double ent, double median) {
  return with_d ? (x0 > 0) == (ent > median) : x0 > 0;
}

/// Trains `gate` on BCE(C, target) for `steps` full-batch AdamW steps (lr
/// 0.01) on 256 nodes; returns the final training BCE and the accuracy of
/// C > 0.5 on 256 fresh nodes.
hg_fit hg_train(moekit::mowst::confidence_gate<double>& gate, bool with_d, std::size_t steps) {
  using namespace moekit;
  rng data(71);
  const std::size_t n = 256, k = 4, f = 6;
  const auto z = hg_random_logits(data, n, k), x = testing::randn(data, shape<dyn, dyn>{n, f});
  const auto z_test = hg_random_logits(data, n, k), x_test = testing::randn(data, shape<dyn, dyn>{n, f});
  tape t0;
  const auto d = mowst::dispersion(t0.input(z)).value(), d_test = mowst::dispersion(t0.input(z_test)).value();
  std::vector<double> ent;
  for (std::size_t i = 0; i < n; ++i) ent.push_back(d(i, 1));
  std::nth_element(ent.begin(), ent.begin() + n / 2, ent.end());
  const double median = ent[n / 2];
  hg_vec y(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) y[i] = hg_target(with_d, x(i, 0), d(i, 1), median) ? 1.0 : 0.0;
  auto bce = [&](tape& t) {
    // C kept 1e-12 off 0 and 1: on separable data C saturates to 1.0 in
    // double within a few tens of steps, and log(1 − C) would be −inf.
    const auto c = gate(t.input(z), t.input(x)) * (1 - 2e-12) + 1e-12;  // (n)
    const auto yy = t.input(y);                                         // (n)
    return -mean(yy * log(c) + (1.0 - yy) * log(1.0 - c));
  };
  optim::adamw<double> opt(gate, {.lr = 0.01});
  for (std::size_t s = 0; s < steps; ++s) {
    tape t;
    opt.zero_grad();
    t.backward(bce(t));
    opt.step();
  }
  gate.eval();
  no_grad off;
  tape t;
  hg_fit out{bce(t).value()[0], 0};
  const auto c = gate(t.input(z_test), t.input(x_test)).value();
  for (std::size_t i = 0; i < n; ++i)
    out.test_accuracy += ((c[i] > 0.5) == hg_target(with_d, x_test(i, 0), d_test(i, 1), median)) / double(n);
  return out;
}

}  // namespace

TEST_CASE("hyper gate learns a gate that depends on x; an MLP gate on D cannot", "[mowst][hyper_gate][train]") {
  using namespace moekit;
  const std::size_t steps = 150;
  for (const bool with_d : {false, true}) {
    INFO((with_d ? "target (x_0 > 0) == (D_ent > median)" : "target x_0 > 0"));
    rng g0(81);
    mowst::confidence_gate<double> plain(g0, {.classes = 4, .hidden = 8, .dropout = 0, .batch_norm = false});
    const auto base = hg_train(plain, with_d, steps);
    for (const bool relu : {true, false}) {
      INFO("hyper_relu " << relu);
      rng g(81);
      auto cfg = hg_config(4, 6, 8, relu);
      cfg.hyper_hidden = 16;
      cfg.batch_norm = false;
      mowst::confidence_gate<double> hyper(g, cfg);
      const auto fit = hg_train(hyper, with_d, steps);
      INFO("training BCE: hyper " << fit.train_bce << ", mlp on D " << base.train_bce
                                  << "; held-out accuracy: hyper " << fit.test_accuracy << ", mlp on D "
                                  << base.test_accuracy);
      // Measured (seed 81, 150 steps, ReLU on and off): hyper training BCE
      // 3e-4 .. 1.1e-3, held-out accuracy 0.94 (x_0 alone) and 0.87 (with D);
      // the MLP on D: BCE 0.66 (log 2 = 0.69 knows nothing), held-out
      // accuracy 0.51 .. 0.53. About 0.8 s for the six runs.
      CHECK(fit.train_bce < 0.2);
      CHECK(base.train_bce > 0.6);
      CHECK(fit.test_accuracy > (with_d ? 0.75 : 0.85));
      CHECK(base.test_accuracy < 0.65);
    }
  }
}

TEST_CASE("mixture with a hyper gate: sized from the inputs, same C from dense and CSR features, trains",
          "[mowst][hyper_gate][train]") {
  const auto d = moekit::graph::make_csbm({.classes = 3, .nodes = 150, .avg_degree = 4, .homophily = 0.3, .signal = 2.0,
                                   .features = 8, .train_per_class = 10, .val_per_class = 10, .seed = 4});
  const auto dense_in = moekit::mowst::make_inputs<moekit::graph::gcn_conv<>>(d, {.normalize_features = false});
  auto sparse_in = moekit::mowst::make_inputs<moekit::graph::gcn_conv<>>(d, {.normalize_features = false, .sparse_density = 1.0});
  REQUIRE(dense_in.sparse_features.rows() == 0);  // Gaussian features are dense: no CSR copy
  REQUIRE(sparse_in.sparse_features.rows() == 150);
  moekit::rng g(8);
  // .features left 0: the mixture takes the count from the inputs for a hyper gate.
  moekit::mowst::mixture<moekit::graph::gcn_conv<>> m(g, {.hidden = 16}, {.hidden = 16},
                                      {.hidden = 8, .dropout = 0, .kind = moekit::mowst::gate_kind::hyper, .hyper_hidden = 16},
                                      dense_in);
  REQUIRE(m.gate().config().features == 8);
  {
    m.eval();
    moekit::no_grad off;
    moekit::tape t;
    const auto a = m(dense_in, t).confidence.value();
    const auto b = m(sparse_in, t).confidence.value();
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(b[i] == Approx(a[i]).epsilon(1e-5));
  }
  moekit::mowst::train_options o;
  o.patience = 10;
  o.big_patience = 1;
  const auto r = moekit::mowst::train_mowst(m, dense_in, o);
  CHECK(r.val_accuracy > 0.5);  // 3 classes: chance is 1/3; the features alone are strong (signal 2)
}
