// The error hierarchy: every moekit error is a moekit::error.
#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <cstdint>

#include <moekit/core/checked.hpp>
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

TEST_CASE("allocation_error is a moekit::error; checked sizes name the op and shape", "[error]") {
  REQUIRE_THROWS_AS(throw allocation_error("allocate (cpu): 8 bytes"), error);
  const std::size_t half = std::size_t{1} << 32;
  const std::array<std::size_t, 2> fits{3, 5}, wraps{half, half};
  REQUIRE(checked_count(fits, "zeros") == 15);
  REQUIRE(checked_bytes(fits, 8, "zeros") == 120);
  REQUIRE_THROWS_AS(checked_count(wraps, "zeros"), shape_error);
  REQUIRE_THROWS_WITH(checked_bytes(wraps, 1, "zeros"),
                      Catch::Contains("zeros") && Catch::Contains("(4294967296, 4294967296)") &&
                          Catch::Contains("1-byte"));
  // 2^62 elements fit std::size_t, 2^62 four-byte elements do not.
  const std::array<std::size_t, 1> quarter{std::size_t{1} << 62};
  REQUIRE(checked_count(quarter, "full") == std::size_t{1} << 62);
  REQUIRE_THROWS_AS(checked_bytes(quarter, 4, "full"), shape_error);
  std::size_t sum = 0;
  REQUIRE_FALSE(add_fits(SIZE_MAX, std::size_t{1}, sum));
  REQUIRE(add_fits(SIZE_MAX - 1, std::size_t{1}, sum));
  REQUIRE(sum == SIZE_MAX);
}
