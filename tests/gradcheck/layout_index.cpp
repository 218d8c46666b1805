// Gradient checks (double, central differences) for the layout ops
// (transpose, reshape, concat, split) and the indexing ops (gather_rows /
// index_select, scatter_add_rows, embedding, top_k), static and dyn shapes.
#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <vector>

#include <moekit/autograd/gradcheck.hpp>
#include <moekit/autograd/ops/arithmetic.hpp>
#include <moekit/autograd/ops/index.hpp>
#include <moekit/autograd/ops/layout.hpp>
#include <moekit/autograd/ops/reduce.hpp>
#include <moekit/autograd/ops/top_k.hpp>
#include <moekit/autograd/parameter.hpp>

#include "check.hpp"

using namespace moekit;
using namespace moekit::testing;

namespace {
template <class S>
tensor<index_t, S> indices(const S& s, std::initializer_list<index_t> v) {
  return from_values<index_t>(s, v);
}
}  // namespace

TEST_CASE("gradcheck: transpose", "[gradcheck][transpose]") {
  rng g(21);
  REQUIRE_GRADIENTS([](auto x) { return transpose(x); }, randn(g, shape<3, 5>{}));
  REQUIRE_GRADIENTS([](auto x) { return transpose(x); }, randn(g, shape<dyn, dyn>{4, 2}));
  REQUIRE_GRADIENTS([](auto x) { return transpose(x); }, randn(g, shape<dyn, 2, 3>{2}));
  // Through a nonlinear use, so the gradient's layout matters.
  REQUIRE_GRADIENTS([](auto x) { return transpose(x) * transpose(x * x); }, randn(g, shape<dyn, 3>{4}));
}

TEST_CASE("gradcheck: reshape", "[gradcheck][reshape]") {
  rng g(22);
  auto x = randn(g, shape<2, 6>{});
  REQUIRE_GRADIENTS([](auto v) { return reshape<shape<3, 4>>(v) * reshape<shape<3, 4>>(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return reshape(v, shape<dyn, 2, 2>{3}) * 2.0; }, randn(g, shape<dyn, 4>{3}));
}

TEST_CASE("gradcheck: concat of two vars", "[gradcheck][concat]") {
  rng g(23);
  auto a = randn(g, shape<2, 3>{});
  auto b = randn(g, shape<dyn, 3>{4});
  REQUIRE_GRADIENTS([](auto x, auto y) { return concat<0>(x, y); }, a, b);
  auto c = randn(g, shape<2, dyn>{2});
  REQUIRE_GRADIENTS([](auto x, auto y) {
    auto z = concat<1>(x, y);
    return z * z;
  }, a, c);
  REQUIRE_GRADIENTS([](auto x) { return concat<0>(x, x * 3.0); }, a);  // one input on both sides
  auto d = randn(g, shape<2, dyn, 3>{2});
  auto e = randn(g, shape<2, 1, 3>{});
  REQUIRE_GRADIENTS([](auto x, auto y) { return concat<1>(x, y); }, d, e);
}

TEST_CASE("gradcheck: concat of a list of vars", "[gradcheck][concat]") {
  rng g(24);
  auto a = randn(g, shape<dyn, 2>{1});
  auto b = randn(g, shape<dyn, 2>{3});
  auto c = randn(g, shape<dyn, 2>{2});
  REQUIRE_GRADIENTS([](auto x, auto y, auto z) {
    std::vector parts{x, y * y, z};
    return concat<0>(parts);
  }, a, b, c);
  // A constant first part: the op is still recorded, through the later part.
  REQUIRE_GRADIENTS([&](auto y) {
    std::vector parts{var<double, shape<dyn, 2>>(a, nullptr, nullptr), y};
    return concat<0>(parts) * 2.0;
  }, b);
}

TEST_CASE("gradcheck: split", "[gradcheck][split]") {
  rng g(25);
  SECTION("both pieces used, equal widths") {
    REQUIRE_GRADIENTS([](auto x) {
      auto p = split<1>(x, {2, 2});
      return p[0] * p[1] + p[0];
    }, randn(g, shape<3, 4>{}));
  }
  SECTION("both pieces used, unequal sizes") {
    REQUIRE_GRADIENTS([](auto x) {
      auto p = split<0>(x, {2, 3});
      return sum<0>(p[0]) * sum<0>(p[1] * p[1]);
    }, randn(g, shape<dyn, 3>{5}));
  }
  SECTION("only one piece used: the other's slice gets zeros") {
    REQUIRE_GRADIENTS([](auto x) { return split<0>(x, {2, 3})[1] * 2.0; }, randn(g, shape<5, 2>{}));
    REQUIRE_GRADIENTS([](auto x) { return split<1>(x, {1, 2, 1})[1]; }, randn(g, shape<dyn, dyn>{2, 4}));
  }
  SECTION("rank 3, a piece used twice") {
    REQUIRE_GRADIENTS([](auto x) {
      auto p = split<1>(x, {1, 2});
      return p[1] * p[1] + concat<1>(p[0], p[0]);
    }, randn(g, shape<2, 3, 2>{}));
  }
}

TEST_CASE("split: a piece without gradient leaves zeros in its slice", "[autograd][split]") {
  rng g(26);
  tape t;
  auto x = t.variable(randn(g, shape<4, 2>{}));
  auto p = split<0>(x, {1, 3});
  t.backward(sum(p[1] * 2.0));
  const auto& dx = x.grad();
  REQUIRE(dx.defined());
  for (std::size_t j = 0; j < 2; ++j) REQUIRE(dx(0, j) == 0.0);
  for (std::size_t i = 1; i < 4; ++i)
    for (std::size_t j = 0; j < 2; ++j) REQUIRE(dx(i, j) == 2.0);
}

TEST_CASE("gradcheck: gather_rows / index_select with repeated indices", "[gradcheck][gather]") {
  rng g(27);
  auto idx = indices(shape<dyn>{6}, {2, 0, 2, 2, 3, 0});  // row 1 never picked
  REQUIRE_GRADIENTS([&](auto x) { return gather_rows(x, idx); }, randn(g, shape<4, 3>{}));
  REQUIRE_GRADIENTS([&](auto x) {
    auto y = index_select(x, idx);
    return y * y;
  }, randn(g, shape<dyn, 2>{4}));
  auto idx_static = indices(shape<3>{}, {1, 1, 0});
  REQUIRE_GRADIENTS([&](auto x) { return gather_rows(x, idx_static); }, randn(g, shape<dyn, 2, 2>{2}));
}

TEST_CASE("gradcheck: scatter_add_rows", "[gradcheck][scatter]") {
  rng g(28);
  auto idx = indices(shape<dyn>{5}, {1, 3, 1, 0, 1});
  REQUIRE_GRADIENTS([&](auto src) { return scatter_add_rows(src, idx, 4); }, randn(g, shape<dyn, 3>{5}));
  REQUIRE_GRADIENTS([&](auto src) {
    auto y = scatter_add_rows(src, idx, 6);
    return y * y;
  }, randn(g, shape<5, 2>{}));
}

TEST_CASE("gradcheck: embedding", "[gradcheck][embedding]") {
  rng g(29);
  auto ids = indices(shape<dyn>{5}, {4, 1, 4, 0, 4});
  REQUIRE_GRADIENTS([&](auto table) { return embedding(table, ids); }, randn(g, shape<5, 3>{}));
  REQUIRE_GRADIENTS([&](auto table) {
    auto e = embedding(table, ids);
    return e * e;
  }, randn(g, shape<dyn, dyn>{6, 2}));
}

TEST_CASE("embedding: a parameter table accumulates scattered gradients", "[autograd][embedding]") {
  parameter<double, shape<4, 2>> table(from_values<double>(shape<4, 2>{}, {0, 1, 2, 3, 4, 5, 6, 7}));
  tape t;
  auto ids = indices(shape<3>{}, {3, 1, 3});
  auto e = embedding(table, ids);
  REQUIRE((e.value()(0, 1) == 7 && e.value()(1, 0) == 2));
  t.backward(sum(e));
  const std::array<double, 8> want{0, 0, 1, 1, 0, 0, 2, 2};
  for (std::size_t k = 0; k < 8; ++k) REQUIRE(table.grad()[k] == want[k]);

  auto bad = indices(shape<dyn>{2}, {1, 4});
  REQUIRE_THROWS_AS(embedding(table, bad), value_error);
  REQUIRE_THROWS_WITH(embedding(table, bad), Catch::Contains("embedding") && Catch::Contains("index 4") &&
                                                 Catch::Contains("position 1") && Catch::Contains("[0, 4)"));
}

TEST_CASE("gradcheck: top_k values", "[gradcheck][top_k]") {
  rng g(30);  // continuous random draws: no ties, so the selection is stable under eps
  REQUIRE_GRADIENTS([](auto x) { return top_k(x, 2).values; }, randn(g, shape<dyn, 5>{4}));
  REQUIRE_GRADIENTS([](auto x) {
    auto v = top_k<3>(x).values;
    return v * v;
  }, randn(g, shape<3, 6>{}));
  REQUIRE_GRADIENTS([](auto x) { return top_k(x, 4).values; }, randn(g, shape<dyn, dyn>{2, 4}));  // k = cols
}

TEST_CASE("top_k: gradient lands only on the selected entries", "[autograd][top_k]") {
  tape t;
  auto x = t.variable(from_values<double>(shape<2, 4>{}, {0.5, 2, -1, 3, /**/ 4, 4, 1, 0}));
  auto [v, i] = top_k(x, 2);
  REQUIRE((i(0, 0) == 3 && i(0, 1) == 1 && i(1, 0) == 0 && i(1, 1) == 1));
  t.backward(v, from_values<double>(shape<2, 2>{}, {10, 20, 30, 40}));
  const std::array<double, 8> want{0, 20, 0, 10, /**/ 30, 40, 0, 0};
  for (std::size_t k = 0; k < 8; ++k) REQUIRE(x.grad()[k] == want[k]);
}
