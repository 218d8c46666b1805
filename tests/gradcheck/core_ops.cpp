// Gradient checks (double, central differences) for the core differentiable
// ops: arithmetic and broadcasts, scalar ops, matmul/bmm in every transpose
// form, activations, exp/log/sqrt/pow, sum and mean.
#include <catch2/catch.hpp>

#include <moekit.hpp>

#include "check.hpp"

using namespace moekit;
using namespace moekit::testing;

TEST_CASE("gradcheck: same-shape arithmetic", "[gradcheck][arithmetic]") {
  rng g(1);
  auto a = randn(g, shape<dyn, 4>{3});
  auto b = positive(g, shape<3, 4>{});
  REQUIRE_GRADIENTS([](auto x, auto y) { return x + y; }, a, b);
  REQUIRE_GRADIENTS([](auto x, auto y) { return x - y; }, a, b);
  REQUIRE_GRADIENTS([](auto x, auto y) { return x * y; }, a, b);
  REQUIRE_GRADIENTS([](auto x, auto y) { return x / y; }, a, b);
  REQUIRE_GRADIENTS([](auto x) { return -x * x; }, a);  // one input used twice
}

TEST_CASE("gradcheck: scalar arithmetic", "[gradcheck][arithmetic]") {
  rng g(2);
  auto a = positive(g, shape<2, dyn, 3>{2});
  REQUIRE_GRADIENTS([](auto x) { return (x + 1.5) * 2.0 - 0.25; }, a);
  REQUIRE_GRADIENTS([](auto x) { return 3.0 - x / 4.0; }, a);
  REQUIRE_GRADIENTS([](auto x) { return 2.0 / x + (1.0 + x) * (0.5 * x); }, a);
}

TEST_CASE("gradcheck: row and column broadcasts", "[gradcheck][arithmetic]") {
  rng g(3);
  auto x = randn(g, shape<dyn, 5>{4});
  auto row = positive(g, shape<5>{});
  auto col = positive(g, shape<dyn>{4});
  REQUIRE_GRADIENTS([](auto a, auto r) { return add_rows(a, r); }, x, row);
  REQUIRE_GRADIENTS([](auto a, auto r) { return sub_rows(a, r); }, x, row);
  REQUIRE_GRADIENTS([](auto a, auto r) { return mul_rows(a, r); }, x, row);
  REQUIRE_GRADIENTS([](auto a, auto r) { return div_rows(a, r); }, x, row);
  REQUIRE_GRADIENTS([](auto a, auto c) { return add_cols(a, c); }, x, col);
  REQUIRE_GRADIENTS([](auto a, auto c) { return sub_cols(a, c); }, x, col);
  REQUIRE_GRADIENTS([](auto a, auto c) { return mul_cols(a, c); }, x, col);
  REQUIRE_GRADIENTS([](auto a, auto c) { return div_cols(a, c); }, x, col);
  // Rank 3: the row spans the last axis, the column the two leading ones.
  auto x3 = randn(g, shape<2, 3, 4>{});
  REQUIRE_GRADIENTS([](auto a, auto r) { return mul_rows(a, r); }, x3, positive(g, shape<4>{}));
  REQUIRE_GRADIENTS([](auto a, auto c) { return div_cols(a, c); }, x3, positive(g, shape<2, 3>{}));
}

TEST_CASE("gradcheck: matmul in every transpose form", "[gradcheck][matmul]") {
  rng g(4);
  auto a = randn(g, shape<dyn, 3>{4});     // (4, 3)
  auto b = randn(g, shape<3, 5>{});        // (3, 5)
  auto at = randn(g, shape<3, dyn>{4});    // (3, 4) read as (4, 3)
  auto bt = randn(g, shape<5, 3>{});       // (5, 3) read as (3, 5)
  REQUIRE_GRADIENTS([](auto x, auto y) { return matmul(x, y); }, a, b);
  REQUIRE_GRADIENTS([](auto x, auto y) { return matmul<trans::a>(x, y); }, at, b);
  REQUIRE_GRADIENTS([](auto x, auto y) { return matmul<trans::b>(x, y); }, a, bt);
  REQUIRE_GRADIENTS([](auto x, auto y) { return matmul<trans::both>(x, y); }, at, bt);
}

TEST_CASE("gradcheck: batched matmul in every transpose form", "[gradcheck][matmul]") {
  rng g(5);
  auto a = randn(g, shape<dyn, 3, 2>{2});   // (2, 3, 2)
  auto b = randn(g, shape<2, 2, 4>{});      // (2, 2, 4)
  auto at = randn(g, shape<2, 2, 3>{});     // read as (2, 3, 2)
  auto bt = randn(g, shape<dyn, 4, 2>{2});  // read as (2, 2, 4)
  REQUIRE_GRADIENTS([](auto x, auto y) { return bmm(x, y); }, a, b);
  REQUIRE_GRADIENTS([](auto x, auto y) { return bmm<trans::a>(x, y); }, at, b);
  REQUIRE_GRADIENTS([](auto x, auto y) { return bmm<trans::b>(x, y); }, a, bt);
  REQUIRE_GRADIENTS([](auto x, auto y) { return bmm<trans::both>(x, y); }, at, bt);
}

TEST_CASE("gradcheck: activations", "[gradcheck][activation]") {
  rng g(6);
  auto x = randn(g, shape<dyn, 6>{5});
  REQUIRE_GRADIENTS([](auto v) { return relu(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return gelu(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return silu(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return sigmoid(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return tanh(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return elu(v, 0.7); }, x);
  REQUIRE_GRADIENTS([](auto v) { return leaky_relu(v, 0.1); }, x);
}

TEST_CASE("gradcheck: exp, log, sqrt, pow", "[gradcheck][math]") {
  rng g(7);
  auto x = positive(g, shape<3, 4>{});
  REQUIRE_GRADIENTS([](auto v) { return exp(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return log(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return sqrt(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return pow(v, 2.5); }, x);
  REQUIRE_GRADIENTS([](auto v) { return pow(v, -1.0); }, x);
}

TEST_CASE("gradcheck: sum and mean", "[gradcheck][reduce]") {
  rng g(8);
  auto x = randn(g, shape<dyn, 3, 4>{2});
  REQUIRE_GRADIENTS([](auto v) { return sum<0>(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return sum<1>(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return sum<2>(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return mean<1>(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return mean<2>(v * v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return sum(v * v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return mean(exp(v)); }, x);
}

TEST_CASE("gradcheck: a two-layer network end to end", "[gradcheck][composite]") {
  rng g(9);
  auto x = randn(g, shape<dyn, 4>{3});
  auto w1 = randn(g, shape<4, 6>{});
  auto b1 = randn(g, shape<6>{});
  auto w2 = randn(g, shape<6, 2>{});
  REQUIRE_GRADIENTS([](auto in, auto a, auto b, auto c) { return mean(tanh(matmul(gelu(add_rows(matmul(in, a), b)), c))); },
              x, w1, b1, w2);
}

TEST_CASE("gradcheck detects a wrong gradient", "[gradcheck][meta]") {
  // A deliberately broken op: forward x², backward claims 3x. The checker must fail.
  rng g(10);
  auto x = randn(g, shape<3>{});
  auto broken = [](auto v) {
    return record("broken_square", v.value() * v.value(), [v](const auto& dy) { v.accumulate(dy * v.value() * 3.0); }, v);
  };
  auto r = check_gradients(broken, x);
  REQUIRE_FALSE(r.ok);
  REQUIRE_THAT(r.message, Catch::Contains("input 0"));
}
