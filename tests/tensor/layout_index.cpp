// Forward values of the layout ops (transpose, concat, split) and the indexing
// ops (gather_rows / index_select, scatter_add_rows, top_k) against reference
// loops, and their errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include <moekit/core/random.hpp>
#include <moekit/tensor/ops/concat.hpp>
#include <moekit/tensor/ops/creation.hpp>
#include <moekit/tensor/ops/elementwise.hpp>
#include <moekit/tensor/ops/index.hpp>
#include <moekit/tensor/ops/top_k.hpp>
#include <moekit/tensor/ops/transpose.hpp>

using namespace moekit;

namespace {
/// 0, 1, 2, ... laid out in shape s: every element tells where it came from.
template <class T = double, class S>
tensor<T, S> iota(const S& s) {
  tensor<T, S> x(s);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(i);
  return x;
}
template <class S>
tensor<index_t, S> indices(const S& s, std::initializer_list<index_t> v) {
  return from_values<index_t>(s, v);
}
template <class X, class Y>
bool same_values(const X& x, const Y& y) {
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (x[i] != y[i]) return false;
  return true;
}
}  // namespace

// ---- transpose ------------------------------------------------------------------

TEST_CASE("transpose: non-square matrices, static and dynamic", "[tensor][transpose]") {
  auto x = iota(shape<3, 5>{});
  auto t = transpose(x);
  STATIC_REQUIRE(std::is_same_v<decltype(t)::shape_type, shape<5, 3>>);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 5; ++j) REQUIRE(t(j, i) == x(i, j));

  // Larger than one tile in both directions, with ragged edges, and large
  // enough to run threaded.
  rng g(3);
  auto y = normal<float>(g, shape<dyn, dyn>{301, 133});
  auto ty = transpose(y);
  STATIC_REQUIRE(std::is_same_v<decltype(ty)::shape_type, shape<dyn, dyn>>);
  REQUIRE(ty.shape() == shape<133, 301>{});
  bool all = true;
  for (std::size_t i = 0; i < 301; ++i)
    for (std::size_t j = 0; j < 133; ++j) all = all && ty(j, i) == y(i, j);
  REQUIRE(all);
  REQUIRE(same_values(transpose(ty), y));
}

TEST_CASE("transpose: rank 3 swaps the last two axes", "[tensor][transpose]") {
  auto x = iota(shape<dyn, 3, 4>{2});
  auto t = transpose(x);
  STATIC_REQUIRE(std::is_same_v<decltype(t)::shape_type, shape<dyn, 4, 3>>);
  REQUIRE(t.extent(0) == 2);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 4; ++j) REQUIRE(t(b, j, i) == x(b, i, j));
}

// ---- concat / split ---------------------------------------------------------------

TEST_CASE("concat: along axis 0 and 1 of matrices", "[tensor][concat]") {
  auto a = iota(shape<2, 3>{});
  auto b = iota(shape<4, 3>{}) + 100.0;
  auto c0 = concat<0>(a, b);
  STATIC_REQUIRE(std::is_same_v<decltype(c0)::shape_type, shape<6, 3>>);
  for (std::size_t i = 0; i < 6; ++i)
    for (std::size_t j = 0; j < 3; ++j) REQUIRE(c0(i, j) == (i < 2 ? a(i, j) : b(i - 2, j)));

  // Static extents along the axis add up; a dyn one makes the sum dyn.
  STATIC_REQUIRE(std::is_same_v<decltype(concat<1>(a, iota(shape<dyn, 2>{2})))::shape_type, shape<2, 5>>);
  auto d = iota(shape<dyn, dyn>{2, 2}) + 100.0;
  auto c1 = concat<1>(a, d);  // (2, 3) and (2, 2) -> (2, 5)
  STATIC_REQUIRE(std::is_same_v<decltype(c1)::shape_type, shape<2, dyn>>);
  REQUIRE(c1.shape() == shape<2, 5>{});
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t j = 0; j < 5; ++j) REQUIRE(c1(i, j) == (j < 3 ? a(i, j) : d(i, j - 3)));
}

TEST_CASE("concat: rank 3 along the middle axis, and a list of parts", "[tensor][concat]") {
  auto a = iota(shape<2, 1, 3>{});
  auto b = iota(shape<2, dyn, 3>{2}) + 100.0;
  auto c = concat<1>(a, b);
  STATIC_REQUIRE(std::is_same_v<decltype(c)::shape_type, shape<2, dyn, 3>>);
  REQUIRE(c.shape() == shape<2, 3, 3>{});
  for (std::size_t o = 0; o < 2; ++o)
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 3; ++j) REQUIRE(c(o, i, j) == (i < 1 ? a(o, i, j) : b(o, i - 1, j)));

  std::vector<tensor<double, shape<2, dyn, 3>>> parts{shape_cast<shape<2, dyn, 3>>(a), b, b * 2.0};
  auto all = concat<1>(parts);
  REQUIRE(all.shape() == shape<2, 5, 3>{});
  for (std::size_t o = 0; o < 2; ++o)
    for (std::size_t i = 0; i < 5; ++i)
      for (std::size_t j = 0; j < 3; ++j) {
        const double want = i < 1 ? a(o, i, j) : i < 3 ? b(o, i - 1, j) : 2 * b(o, i - 3, j);
        REQUIRE(all(o, i, j) == want);
      }
}

TEST_CASE("split: pieces match slices, and concat undoes split", "[tensor][split]") {
  SECTION("axis 0") {
    auto x = iota(shape<5, 2>{});
    auto p = split<0>(x, {2, 0, 3});
    REQUIRE(p.size() == 3);
    STATIC_REQUIRE(std::is_same_v<decltype(p)::value_type::shape_type, shape<dyn, 2>>);
    REQUIRE(p[0].shape() == shape<2, 2>{});
    REQUIRE(p[1].size() == 0);
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 2; ++j) REQUIRE(p[2](i, j) == x(i + 2, j));
    REQUIRE(same_values(concat<0>(p), x));
  }
  SECTION("axis 1") {
    auto x = iota(shape<dyn, dyn>{3, 7});
    const std::array<std::size_t, 3> sizes{4, 1, 2};
    auto p = split<1>(x, sizes);
    std::size_t at = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      REQUIRE(p[k].shape() == shape<dyn, dyn>{3, sizes[k]});
      for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t j = 0; j < sizes[k]; ++j) REQUIRE(p[k](i, j) == x(i, at + j));
      at += sizes[k];
    }
    REQUIRE(same_values(concat<1>(p), x));
  }
  SECTION("rank 3, axis 1") {
    auto x = iota(shape<2, 5, 3>{});
    auto p = split<1>(x, {3, 2});
    REQUIRE(p[1].shape() == shape<2, 2, 3>{});
    for (std::size_t o = 0; o < 2; ++o)
      for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 3; ++j) REQUIRE(p[1](o, i, j) == x(o, i + 3, j));
    REQUIRE(same_values(concat<1>(p[0], p[1]), x));
  }
}

TEST_CASE("concat and split: shape errors name the op and the shapes", "[tensor][concat][split][error]") {
  auto a = iota(shape<dyn, 3>{2});
  auto b = iota(shape<dyn, 3>{2});
  auto c = iota(shape<2, dyn>{4});
  REQUIRE_THROWS_AS(concat<0>(a, c), shape_error);
  REQUIRE_THROWS_WITH(concat<0>(a, c), Catch::Contains("concat") && Catch::Contains("(2, 3)") &&
                                           Catch::Contains("(2, 4)") && Catch::Contains("axis 1"));
  REQUIRE_NOTHROW(concat<1>(a, c));  // the differing extent is the concatenated one

  std::vector<tensor<double, shape<dyn, 3>>> parts{a, iota(shape<dyn, 3>{1}), b};
  REQUIRE_NOTHROW(concat<0>(parts));
  std::vector<tensor<double, shape<dyn, 3>>> none;
  REQUIRE_THROWS_AS(concat<0>(none), value_error);
  REQUIRE_THROWS_WITH(concat<1>(parts), Catch::Contains("concat") && Catch::Contains("(1, 3)"));

  auto x = iota(shape<5, 3>{});
  REQUIRE_THROWS_AS(split<0>(x, {2, 2}), shape_error);
  REQUIRE_THROWS_WITH(split<0>(x, {2, 4}),
                      Catch::Contains("split") && Catch::Contains("sum to 6") && Catch::Contains("(5, 3)"));
  REQUIRE_THROWS_WITH(split<1>(x, {1}), Catch::Contains("split") && Catch::Contains("axis 1"));
}

// ---- gather / scatter ---------------------------------------------------------

TEST_CASE("gather_rows: repeated indices, any rank", "[tensor][gather]") {
  auto x = iota(shape<4, 3>{});
  auto idx = indices(shape<dyn>{5}, {3, 0, 3, 3, 1});
  auto y = gather_rows(x, idx);
  STATIC_REQUIRE(std::is_same_v<decltype(y)::shape_type, shape<dyn, 3>>);
  REQUIRE(y.extent(0) == 5);
  for (std::size_t i = 0; i < 5; ++i)
    for (std::size_t j = 0; j < 3; ++j) REQUIRE(y(i, j) == x(static_cast<std::size_t>(idx[i]), j));
  REQUIRE(same_values(index_select(x, idx), y));

  auto x3 = iota(shape<dyn, 2, 2>{3});
  auto y3 = gather_rows(x3, indices(shape<2>{}, {2, 2}));
  STATIC_REQUIRE(std::is_same_v<decltype(y3)::shape_type, shape<2, 2, 2>>);
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t k = 0; k < 4; ++k) REQUIRE(y3[r * 4 + k] == x3[2 * 4 + k]);

  auto v = iota(shape<dyn>{6});  // rank 1: rows are single elements
  auto w = gather_rows(v, indices(shape<3>{}, {5, 0, 5}));
  REQUIRE((w[0] == 5 && w[1] == 0 && w[2] == 5));
}

TEST_CASE("scatter_add_rows: repeated indices add up, rows nobody hits stay zero", "[tensor][scatter]") {
  rng g(7);
  auto src = normal<double>(g, shape<dyn, 3>{6});
  auto idx = indices(shape<dyn>{6}, {2, 0, 2, 4, 2, 0});
  auto out = scatter_add_rows(src, idx, 5);
  REQUIRE(out.shape() == shape<5, 3>{});
  std::vector<double> want(15, 0.0);
  for (std::size_t i = 0; i < 6; ++i)
    for (std::size_t j = 0; j < 3; ++j) want[static_cast<std::size_t>(idx[i]) * 3 + j] += src(i, j);
  for (std::size_t k = 0; k < 15; ++k) REQUIRE(out[k] == Approx(want[k]).epsilon(1e-14));
  for (std::size_t j = 0; j < 3; ++j) REQUIRE((out(1, j) == 0 && out(3, j) == 0));

  auto scale = from_values<double>(shape<6>{}, {0.5, -1, 2, 3, 0, 1});
  auto scaled = scatter_add_rows(src, idx, 5, scale);
  std::fill(want.begin(), want.end(), 0.0);
  for (std::size_t i = 0; i < 6; ++i)
    for (std::size_t j = 0; j < 3; ++j) want[static_cast<std::size_t>(idx[i]) * 3 + j] += scale[i] * src(i, j);
  for (std::size_t k = 0; k < 15; ++k) REQUIRE(scaled[k] == Approx(want[k]).epsilon(1e-14));
}

TEST_CASE("gather and scatter: out-of-range indices and mismatched lengths", "[tensor][gather][scatter][error]") {
  auto x = iota(shape<5, 2>{});
  auto bad = indices(shape<dyn>{4}, {0, 4, 5, 1});
  REQUIRE_THROWS_AS(gather_rows(x, bad), value_error);
  REQUIRE_THROWS_WITH(gather_rows(x, bad), Catch::Contains("gather_rows") && Catch::Contains("index 5") &&
                                               Catch::Contains("position 2") && Catch::Contains("[0, 5)"));
  auto negative = indices(shape<dyn>{2}, {1, -1});
  REQUIRE_THROWS_WITH(index_select(x, negative), Catch::Contains("index_select") && Catch::Contains("index -1") &&
                                                     Catch::Contains("position 1"));

  auto src = iota(shape<dyn, 2>{4});
  REQUIRE_THROWS_AS(scatter_add_rows(src, bad, 5), value_error);
  REQUIRE_THROWS_WITH(scatter_add_rows(src, bad, 5), Catch::Contains("scatter_add_rows") &&
                                                         Catch::Contains("index 5") && Catch::Contains("[0, 5)"));
  REQUIRE_NOTHROW(scatter_add_rows(src, bad, 6));
  auto short_idx = indices(shape<dyn>{3}, {0, 1, 2});
  REQUIRE_THROWS_AS(scatter_add_rows(src, short_idx, 5), shape_error);
  auto short_scale = from_values<double>(shape<3>{}, {1, 1, 1});
  REQUIRE_THROWS_WITH(scatter_add_rows(src, bad, 6, short_scale), Catch::Contains("scatter_add_rows") &&
                                                                      Catch::Contains("(3)"));
}

// ---- top_k --------------------------------------------------------------------

namespace {
/// Reference: (value, index) of row r sorted by value descending, then index ascending.
std::vector<std::pair<double, index_t>> ranked(const tensor<double, shape<dyn, dyn>>& x, std::size_t r) {
  std::vector<std::pair<double, index_t>> v;
  for (std::size_t c = 0; c < x.extent(1); ++c) v.emplace_back(x(r, c), static_cast<index_t>(c));
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return v;
}
}  // namespace

TEST_CASE("top_k: values descending with their indices, against a sort", "[tensor][top_k]") {
  rng g(11);
  auto x = normal<double>(g, shape<dyn, dyn>{9, 13});
  for (std::size_t k : {1u, 4u, 13u}) {
    auto [v, i] = top_k(x, k);
    REQUIRE(v.shape() == shape<dyn, dyn>{9, k});
    for (std::size_t r = 0; r < 9; ++r) {
      auto want = ranked(x, r);
      for (std::size_t j = 0; j < k; ++j) {
        REQUIRE(v(r, j) == want[j].first);
        REQUIRE(i(r, j) == want[j].second);
      }
    }
  }
  auto s = top_k<2>(shape_cast<shape<9, 13>>(x));
  STATIC_REQUIRE(std::is_same_v<decltype(s.values)::shape_type, shape<9, 2>>);
  STATIC_REQUIRE(std::is_same_v<decltype(s.indices)::value_type, index_t>);
  REQUIRE(s.indices(8, 1) == ranked(x, 8)[1].second);
}

TEST_CASE("top_k: ties go to the higher score first, then the lower index", "[tensor][top_k]") {
  auto x = from_values<double>(shape<3, 5>{}, {1, 3, 3, 2, 3,    //
                                               7, 7, 7, 7, 7,    // all equal
                                               0, -1, 5, -1, 5});
  auto [v, i] = top_k(x, 4);
  const std::array<index_t, 12> want_i{1, 2, 4, 3, /**/ 0, 1, 2, 3, /**/ 2, 4, 0, 1};
  const std::array<double, 12> want_v{3, 3, 3, 2, /**/ 7, 7, 7, 7, /**/ 5, 5, 0, -1};
  for (std::size_t k = 0; k < 12; ++k) {
    REQUIRE(i[k] == want_i[k]);
    REQUIRE(v[k] == want_v[k]);
  }
  auto [v1, i1] = top_k(x, 1);
  REQUIRE((i1[0] == 1 && i1[1] == 0 && i1[2] == 2));
  REQUIRE(v1[1] == 7);
}

TEST_CASE("top_k: k outside [1, columns] is a value_error", "[tensor][top_k][error]") {
  auto x = iota(shape<dyn, 4>{3});
  REQUIRE_THROWS_AS(top_k(x, 5), value_error);
  REQUIRE_THROWS_WITH(top_k(x, 5), Catch::Contains("top_k") && Catch::Contains("k = 5") && Catch::Contains("(3, 4)"));
  REQUIRE_THROWS_AS(top_k(x, 0), value_error);
  REQUIRE_NOTHROW(top_k(x, 4));
}
