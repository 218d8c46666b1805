// Gradient checks of softmax, log_softmax, layer_norm, rms_norm and dropout,
// rank 2 and rank 3, static and dyn shapes; plus the autograd-only behaviour
// (parameters as weights, dropout in eval mode).
#include <catch2/catch.hpp>

#include <moekit/autograd/gradcheck.hpp>
#include <moekit/autograd/ops/arithmetic.hpp>
#include <moekit/autograd/ops/dropout.hpp>
#include <moekit/autograd/ops/norm.hpp>
#include <moekit/autograd/ops/reduce.hpp>
#include <moekit/autograd/ops/softmax.hpp>
#include <moekit/autograd/parameter.hpp>
#include <moekit/tensor/ops/creation.hpp>

#include <cstddef>

using namespace moekit;

// ---- softmax / log_softmax -------------------------------------------------------

TEST_CASE("gradcheck softmax: rank 2 dyn and rank 3 static", "[gradcheck][softmax]") {
  rng g(101);
  auto x2 = normal<double>(g, shape<dyn, 5>{3});  // (3, 5)
  auto r2 = check_gradients([](auto x) { return softmax(x); }, x2);
  INFO(r2.message);
  REQUIRE(r2.ok);
  REQUIRE(r2.checked == 15);

  auto x3 = normal<double>(g, shape<2, 3, 4>{}, 0.0, 2.0);  // (2, 3, 4)
  auto r3 = check_gradients([](auto x) { return softmax(x); }, x3);
  INFO(r3.message);
  REQUIRE(r3.ok);
}

TEST_CASE("gradcheck log_softmax: rank 2 static and rank 3 dyn", "[gradcheck][softmax]") {
  rng g(102);
  auto x2 = normal<double>(g, shape<4, 6>{});  // (4, 6)
  auto r2 = check_gradients([](auto x) { return log_softmax(x); }, x2);
  INFO(r2.message);
  REQUIRE(r2.ok);

  auto x3 = normal<double>(g, shape<dyn, dyn, 5>{2, 3}, 0.0, 2.0);  // (2, 3, 5)
  auto r3 = check_gradients([](auto x) { return log_softmax(x); }, x3);
  INFO(r3.message);
  REQUIRE(r3.ok);
}

// ---- layer_norm --------------------------------------------------------------------

TEST_CASE("gradcheck layer_norm: x, gamma and beta, rank 2 dyn", "[gradcheck][norm]") {
  rng g(111);
  auto x = normal<double>(g, shape<dyn, 6>{4}, 0.5, 2.0);  // (4, 6)
  auto gamma = normal<double>(g, shape<dyn>{6}, 1.0, 0.5);
  auto beta = normal<double>(g, shape<dyn>{6});
  auto r = check_gradients([](auto x, auto w, auto b) { return layer_norm(x, w, b); }, x, gamma, beta);
  INFO(r.message);
  REQUIRE(r.ok);
  REQUIRE(r.checked == 24 + 6 + 6);
}

TEST_CASE("gradcheck layer_norm: x, gamma and beta, rank 3 static", "[gradcheck][norm]") {
  rng g(112);
  auto x = normal<double>(g, shape<2, 3, 5>{});  // (2, 3, 5)
  auto gamma = normal<double>(g, shape<5>{}, 1.0, 0.5);
  auto beta = normal<double>(g, shape<5>{});
  auto r = check_gradients([](auto x, auto w, auto b) { return layer_norm(x, w, b, 1e-3); }, x, gamma, beta);
  INFO(r.message);
  REQUIRE(r.ok);
}

TEST_CASE("gradcheck layer_norm: without affine weights, rank 3 dyn", "[gradcheck][norm]") {
  rng g(113);
  auto x = normal<double>(g, shape<dyn, 2, 4>{3});  // (3, 2, 4)
  auto r = check_gradients([](auto x) { return layer_norm(x); }, x);
  INFO(r.message);
  REQUIRE(r.ok);
}

// ---- rms_norm ----------------------------------------------------------------------

TEST_CASE("gradcheck rms_norm: x and gamma, rank 2 static and rank 3 dyn", "[gradcheck][norm]") {
  rng g(121);
  auto x2 = normal<double>(g, shape<3, 7>{});  // (3, 7)
  auto w2 = normal<double>(g, shape<7>{}, 1.0, 0.5);
  auto r2 = check_gradients([](auto x, auto w) { return rms_norm(x, w); }, x2, w2);
  INFO(r2.message);
  REQUIRE(r2.ok);
  REQUIRE(r2.checked == 21 + 7);

  auto x3 = normal<double>(g, shape<dyn, 3, dyn>{2, 4});  // (2, 3, 4)
  auto w3 = normal<double>(g, shape<dyn>{4}, 1.0, 0.5);
  auto r3 = check_gradients([](auto x, auto w) { return rms_norm(x, w, 1e-4); }, x3, w3);
  INFO(r3.message);
  REQUIRE(r3.ok);

  auto r_plain = check_gradients([](auto x) { return rms_norm(x); }, x3);
  INFO(r_plain.message);
  REQUIRE(r_plain.ok);
}

// ---- dropout -------------------------------------------------------------------------

TEST_CASE("gradcheck dropout: a fixed mask, rank 2 dyn and rank 3 static", "[gradcheck][dropout]") {
  // The rng is made inside f, so every evaluation draws the same mask.
  auto f = [](auto x) {
    rng g(2024);
    return dropout(x, 0.4, g);
  };
  rng g(131);
  auto x2 = normal<double>(g, shape<dyn, 8>{3});  // (3, 8)
  auto r2 = check_gradients(f, x2);
  INFO(r2.message);
  REQUIRE(r2.ok);

  auto x3 = normal<double>(g, shape<2, 3, 4>{});  // (2, 3, 4)
  auto r3 = check_gradients(f, x3);
  INFO(r3.message);
  REQUIRE(r3.ok);

  // The mask really drops some elements and keeps others, so the check is not trivial.
  rng m(2024);
  auto mask = dropout_mask<double>(m, x3.shape(), 0.4);
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < mask.size(); ++i) dropped += mask[i] == 0.0;
  REQUIRE(dropped > 0);
  REQUIRE(dropped < mask.size());
}

TEST_CASE("dropout (autograd): eval mode and p = 0 are the identity and draw nothing", "[gradcheck][dropout]") {
  tape t;
  rng g(5);
  auto x = t.variable(ones<double>(shape<dyn, 3>{2}));
  const std::size_t nodes = t.size();
  auto eval = dropout(x, 0.5, g, false);
  auto zero = dropout(x, 0.0, g);
  REQUIRE(g.offset() == 0);
  REQUIRE(t.size() == nodes);  // nothing recorded
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE((eval.value()[i] == 1.0 && zero.value()[i] == 1.0));
  REQUIRE_THROWS_AS(dropout(x, 1.0, g, false), value_error);  // p is checked in eval mode too

  // In training the gradient is the mask itself.
  auto y = dropout(x, 0.5, g);
  REQUIRE(g.offset() == 6);
  t.backward(sum(y));
  rng again(5);
  auto mask = dropout_mask<double>(again, x.shape(), 0.5);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(x.grad()[i] == mask[i]);
}

// ---- parameters as weights -----------------------------------------------------------

TEST_CASE("layer_norm, rms_norm (autograd): parameter weights get the same gradients as variables",
          "[gradcheck][norm]") {
  rng g(141);
  auto xv = normal<double>(g, shape<dyn, 4>{5});  // (5, 4)
  auto gv = normal<double>(g, shape<4>{}, 1.0, 0.3);
  auto bv = normal<double>(g, shape<4>{});
  auto seed = normal<double>(g, shape<dyn, 4>{5});

  parameter<double, shape<4>> gamma(gv.clone()), beta(bv.clone()), rms_gamma(gv.clone());
  {
    tape t;
    auto x = t.input(xv);  // no gradient wanted for x: only the weights'
    auto y = layer_norm(x, gamma, beta) + rms_norm(x, rms_gamma);
    t.backward(y, seed);
  }
  tape t;
  auto x = t.input(xv);
  auto gvar = t.variable(gv), bvar = t.variable(bv), rvar = t.variable(gv);
  t.backward(layer_norm(x, gvar, bvar) + rms_norm(x, rvar), seed);
  for (std::size_t c = 0; c < 4; ++c) {
    REQUIRE(gamma.grad()[c] == Approx(gvar.grad()[c]).epsilon(1e-12));
    REQUIRE(beta.grad()[c] == Approx(bvar.grad()[c]).epsilon(1e-12));
    REQUIRE(rms_gamma.grad()[c] == Approx(rvar.grad()[c]).epsilon(1e-12));
  }
  // dbeta is the column sum of the seed.
  for (std::size_t c = 0; c < 4; ++c) {
    double ref = 0;
    for (std::size_t r = 0; r < 5; ++r) ref += seed(r, c);
    REQUIRE(beta.grad()[c] == Approx(ref).epsilon(1e-12));
  }
}
