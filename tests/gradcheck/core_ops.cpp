// Gradient checks (double, central differences) for the core differentiable
// ops: arithmetic and broadcasts, scalar ops, matmul/bmm in every transpose
// form, activations, exp/log/sqrt/pow, sum and mean.
#include <catch2/catch.hpp>

#include <moekit.hpp>

using namespace moekit;

namespace {
template <class S>
tensor<double, S> randn(rng& g, const S& s) {
  return normal<double>(g, s);
}
/// Strictly positive inputs for log, sqrt, pow and division.
template <class S>
tensor<double, S> positive(rng& g, const S& s) {
  return uniform<double>(g, s, 0.5, 2.0);
}
#define CHECK_GRADS(...)                          \
  do {                                            \
    auto r_ = check_gradients(__VA_ARGS__);       \
    INFO(r_.message);                             \
    REQUIRE(r_.ok);                               \
    REQUIRE(r_.checked > 0);                      \
  } while (0)
}  // namespace

TEST_CASE("gradcheck: same-shape arithmetic", "[gradcheck][arithmetic]") {
  rng g(1);
  auto a = randn(g, shape<dyn, 4>{3});
  auto b = positive(g, shape<3, 4>{});
  CHECK_GRADS([](auto x, auto y) { return x + y; }, a, b);
  CHECK_GRADS([](auto x, auto y) { return x - y; }, a, b);
  CHECK_GRADS([](auto x, auto y) { return x * y; }, a, b);
  CHECK_GRADS([](auto x, auto y) { return x / y; }, a, b);
  CHECK_GRADS([](auto x) { return -x * x; }, a);  // one input used twice
}

TEST_CASE("gradcheck: scalar arithmetic", "[gradcheck][arithmetic]") {
  rng g(2);
  auto a = positive(g, shape<2, dyn, 3>{2});
  CHECK_GRADS([](auto x) { return (x + 1.5) * 2.0 - 0.25; }, a);
  CHECK_GRADS([](auto x) { return 3.0 - x / 4.0; }, a);
  CHECK_GRADS([](auto x) { return 2.0 / x + (1.0 + x) * (0.5 * x); }, a);
}

TEST_CASE("gradcheck: row and column broadcasts", "[gradcheck][arithmetic]") {
  rng g(3);
  auto x = randn(g, shape<dyn, 5>{4});
  auto row = positive(g, shape<5>{});
  auto col = positive(g, shape<dyn>{4});
  CHECK_GRADS([](auto a, auto r) { return add_rows(a, r); }, x, row);
  CHECK_GRADS([](auto a, auto r) { return sub_rows(a, r); }, x, row);
  CHECK_GRADS([](auto a, auto r) { return mul_rows(a, r); }, x, row);
  CHECK_GRADS([](auto a, auto r) { return div_rows(a, r); }, x, row);
  CHECK_GRADS([](auto a, auto c) { return add_cols(a, c); }, x, col);
  CHECK_GRADS([](auto a, auto c) { return sub_cols(a, c); }, x, col);
  CHECK_GRADS([](auto a, auto c) { return mul_cols(a, c); }, x, col);
  CHECK_GRADS([](auto a, auto c) { return div_cols(a, c); }, x, col);
  // Rank 3: the row spans the last axis, the column the two leading ones.
  auto x3 = randn(g, shape<2, 3, 4>{});
  CHECK_GRADS([](auto a, auto r) { return mul_rows(a, r); }, x3, positive(g, shape<4>{}));
  CHECK_GRADS([](auto a, auto c) { return div_cols(a, c); }, x3, positive(g, shape<2, 3>{}));
}

TEST_CASE("gradcheck: matmul in every transpose form", "[gradcheck][matmul]") {
  rng g(4);
  auto a = randn(g, shape<dyn, 3>{4});     // (4, 3)
  auto b = randn(g, shape<3, 5>{});        // (3, 5)
  auto at = randn(g, shape<3, dyn>{4});    // (3, 4) read as (4, 3)
  auto bt = randn(g, shape<5, 3>{});       // (5, 3) read as (3, 5)
  CHECK_GRADS([](auto x, auto y) { return matmul(x, y); }, a, b);
  CHECK_GRADS([](auto x, auto y) { return matmul<trans::a>(x, y); }, at, b);
  CHECK_GRADS([](auto x, auto y) { return matmul<trans::b>(x, y); }, a, bt);
  CHECK_GRADS([](auto x, auto y) { return matmul<trans::both>(x, y); }, at, bt);
}

TEST_CASE("gradcheck: batched matmul in every transpose form", "[gradcheck][matmul]") {
  rng g(5);
  auto a = randn(g, shape<dyn, 3, 2>{2});   // (2, 3, 2)
  auto b = randn(g, shape<2, 2, 4>{});      // (2, 2, 4)
  auto at = randn(g, shape<2, 2, 3>{});     // read as (2, 3, 2)
  auto bt = randn(g, shape<dyn, 4, 2>{2});  // read as (2, 2, 4)
  CHECK_GRADS([](auto x, auto y) { return bmm(x, y); }, a, b);
  CHECK_GRADS([](auto x, auto y) { return bmm<trans::a>(x, y); }, at, b);
  CHECK_GRADS([](auto x, auto y) { return bmm<trans::b>(x, y); }, a, bt);
  CHECK_GRADS([](auto x, auto y) { return bmm<trans::both>(x, y); }, at, bt);
}

TEST_CASE("gradcheck: activations", "[gradcheck][activation]") {
  rng g(6);
  auto x = randn(g, shape<dyn, 6>{5});
  CHECK_GRADS([](auto v) { return relu(v); }, x);
  CHECK_GRADS([](auto v) { return gelu(v); }, x);
  CHECK_GRADS([](auto v) { return silu(v); }, x);
  CHECK_GRADS([](auto v) { return sigmoid(v); }, x);
  CHECK_GRADS([](auto v) { return tanh(v); }, x);
  CHECK_GRADS([](auto v) { return elu(v, 0.7); }, x);
  CHECK_GRADS([](auto v) { return leaky_relu(v, 0.1); }, x);
}

TEST_CASE("gradcheck: exp, log, sqrt, pow", "[gradcheck][math]") {
  rng g(7);
  auto x = positive(g, shape<3, 4>{});
  CHECK_GRADS([](auto v) { return exp(v); }, x);
  CHECK_GRADS([](auto v) { return log(v); }, x);
  CHECK_GRADS([](auto v) { return sqrt(v); }, x);
  CHECK_GRADS([](auto v) { return pow(v, 2.5); }, x);
  CHECK_GRADS([](auto v) { return pow(v, -1.0); }, x);
}

TEST_CASE("gradcheck: sum and mean", "[gradcheck][reduce]") {
  rng g(8);
  auto x = randn(g, shape<dyn, 3, 4>{2});
  CHECK_GRADS([](auto v) { return sum<0>(v); }, x);
  CHECK_GRADS([](auto v) { return sum<1>(v); }, x);
  CHECK_GRADS([](auto v) { return sum<2>(v); }, x);
  CHECK_GRADS([](auto v) { return mean<1>(v); }, x);
  CHECK_GRADS([](auto v) { return mean<2>(v * v); }, x);
  CHECK_GRADS([](auto v) { return sum(v * v); }, x);
  CHECK_GRADS([](auto v) { return mean(exp(v)); }, x);
}

TEST_CASE("gradcheck: a two-layer network end to end", "[gradcheck][composite]") {
  rng g(9);
  auto x = randn(g, shape<dyn, 4>{3});
  auto w1 = randn(g, shape<4, 6>{});
  auto b1 = randn(g, shape<6>{});
  auto w2 = randn(g, shape<6, 2>{});
  CHECK_GRADS([](auto in, auto a, auto b, auto c) { return mean(tanh(matmul(gelu(add_rows(matmul(in, a), b)), c))); },
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
