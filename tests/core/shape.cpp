// shape<E...>: the std::extents API, storage of dynamic extents only, runtime
// checks, and the shape algebra ops use.
#include <catch2/catch.hpp>

#include <type_traits>

#include <moekit/core/shape.hpp>
#include <moekit/core/shape_rules.hpp>

using namespace moekit;

TEST_CASE("shape: the std::extents API", "[shape]") {
  using S = shape<dyn, 784>;
  STATIC_REQUIRE(S::rank() == 2);
  STATIC_REQUIRE(S::rank_dynamic() == 1);
  STATIC_REQUIRE(S::static_extent(0) == dyn);
  STATIC_REQUIRE(S::static_extent(1) == 784);
  S s{32};
  REQUIRE(s.extent(0) == 32);
  REQUIRE(s.extent(1) == 784);
  REQUIRE(s.size() == 32 * 784);
  REQUIRE(s.str() == "(32, 784)");

  shape<2, dyn, 4, dyn> mixed{3, 5};
  REQUIRE(mixed.extent(1) == 3);
  REQUIRE(mixed.extent(3) == 5);
  REQUIRE(mixed.size() == 2 * 3 * 4 * 5);

  STATIC_REQUIRE(scalar_shape::rank() == 0);
  REQUIRE(scalar_shape{}.size() == 1);
  REQUIRE(scalar_shape{}.str() == "()");
}

TEST_CASE("shape: only dynamic extents take storage", "[shape]") {
  STATIC_REQUIRE(sizeof(shape<3, 4>) == 1);  // empty class
  STATIC_REQUIRE(sizeof(shape<dyn, 4>) == sizeof(std::size_t));
  STATIC_REQUIRE(sizeof(shape<dyn, 4, dyn>) == 2 * sizeof(std::size_t));
  STATIC_REQUIRE(std::is_trivially_copyable_v<shape<dyn, 8>>);
}

TEST_CASE("shape: from_extents checks static extents", "[shape]") {
  using S = shape<dyn, 4>;
  const std::array<std::size_t, 2> good{7, 4}, bad{7, 5};
  const std::array<std::size_t, 3> rank3{1, 2, 3};
  REQUIRE(S::from_extents(good).extent(0) == 7);
  REQUIRE_THROWS_AS(S::from_extents(bad), shape_error);
  REQUIRE_THROWS_WITH(S::from_extents(bad, "linear"), Catch::Contains("linear") && Catch::Contains("fixes it to 4"));
  REQUIRE_THROWS_AS(S::from_extents(rank3), shape_error);
}

TEST_CASE("shape: equality compares extents, not types", "[shape]") {
  REQUIRE(shape<dyn, 4>{3} == shape<3, 4>{});
  REQUIRE_FALSE(shape<dyn, 4>{2} == shape<3, 4>{});
  REQUIRE_FALSE(shape<3, 4>{} == shape<12>{});
}

TEST_CASE("shape rules: element-wise joins static over dyn", "[shape]") {
  auto r = elementwise_result("add", shape<dyn, 4>{3}, shape<3, dyn>{4});
  STATIC_REQUIRE(std::is_same_v<decltype(r), shape<3, 4>>);
  REQUIRE(r.size() == 12);
  using S = shape<dyn, 4>;
  REQUIRE_THROWS_AS(elementwise_result("add", S{3}, S{2}), shape_error);
  REQUIRE_THROWS_WITH(elementwise_result("add", S{3}, S{2}),
                      Catch::Contains("add") && Catch::Contains("(3, 4)") && Catch::Contains("(2, 4)"));
}

TEST_CASE("shape rules: axis algebra", "[shape]") {
  STATIC_REQUIRE(std::is_same_v<drop_axis_t<1, shape<2, 3, 4>>, shape<2, 4>>);
  STATIC_REQUIRE(std::is_same_v<drop_axis_t<0, shape<dyn, 3>>, shape<3>>);
  STATIC_REQUIRE(std::is_same_v<drop_axis_t<0, shape<5>>, shape<>>);
  STATIC_REQUIRE(std::is_same_v<set_axis_t<1, dyn, shape<2, 3, 4>>, shape<2, dyn, 4>>);
  STATIC_REQUIRE(std::is_same_v<rows_shape_t<shape<8, 16>>, shape<dyn, 16>>);
  auto sp = split_at(shape<2, 3, 4>{}, 1);
  REQUIRE(sp.outer == 2);
  REQUIRE(sp.n == 3);
  REQUIRE(sp.inner == 4);
  auto [r, c] = as_matrix(shape<2, 3, 4>{});
  REQUIRE(r == 6);
  REQUIRE(c == 4);
}
