// The error hierarchy: every moekit error is a moekit::error.
#include <catch2/catch.hpp>

#include <moekit/core/error.hpp>

using namespace moekit;

TEST_CASE("errors derive from moekit::error and std::runtime_error", "[error]") {
  REQUIRE_THROWS_AS(throw shape_error("matmul: x"), error);
  REQUIRE_THROWS_AS(throw value_error("top_k: x"), error);
  REQUIRE_THROWS_AS(throw io_error("load: x"), error);
  REQUIRE_THROWS_AS(throw cuda_error("cudaMalloc: x"), std::runtime_error);
  try {
    throw shape_error("matmul: (2, 3) x (4, 5): inner dimensions 3 != 4");
  } catch (const error& e) {
    REQUIRE(std::string(e.what()) == "matmul: (2, 3) x (4, 5): inner dimensions 3 != 4");
  }
}
