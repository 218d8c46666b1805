// Philox-4x32-10: known-answer vectors, and streams that depend only on
// (seed, offset) so any order of drawing gives the same numbers.
#include <catch2/catch.hpp>

#include <cmath>

#include <moekit.hpp>

using namespace moekit;

TEST_CASE("philox: Random123 known-answer vectors", "[random]") {
  // Salmon et al., kat_vectors: philox4x32 10 rounds.
  auto zero = philox4x32::rounds({0, 0, 0, 0}, {0, 0});
  REQUIRE(zero == philox4x32::counter_type{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  auto ones = philox4x32::rounds({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  REQUIRE(ones == philox4x32::counter_type{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  auto pi = philox4x32::rounds({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u});
  REQUIRE(pi == philox4x32::counter_type{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("rng: a draw depends only on (seed, offset)", "[random]") {
  rng a(42);
  auto first = uniform<float>(a, shape<dyn>{100});
  auto second = uniform<float>(a, shape<dyn>{100});
  REQUIRE(a.offset() == 200);
  rng b(42, 100);  // start where the second draw started
  auto again = uniform<float>(b, shape<dyn>{100});
  for (std::size_t i = 0; i < 100; ++i) REQUIRE(again[i] == second[i]);
  bool differs = false;
  for (std::size_t i = 0; i < 100; ++i) differs |= first[i] != second[i];
  REQUIRE(differs);
  rng other(43);
  auto other_draw = uniform<float>(other, shape<dyn>{100});
  differs = false;
  for (std::size_t i = 0; i < 100; ++i) differs |= other_draw[i] != first[i];
  REQUIRE(differs);
}

TEST_CASE("rng: uniform and normal moments", "[random]") {
  rng g(7);
  const std::size_t n = 200000;
  auto u = uniform<double>(g, shape<dyn>{n}, -1.0, 3.0);
  auto z = normal<double>(g, shape<dyn>{n}, 2.0, 0.5);
  double su = 0, sz = 0, szz = 0, lo = 10, hi = -10;
  for (std::size_t i = 0; i < n; ++i) {
    su += u[i];
    lo = std::min(lo, u[i]);
    hi = std::max(hi, u[i]);
    sz += z[i];
    szz += (z[i] - 2.0) * (z[i] - 2.0);
  }
  REQUIRE(su / n == Approx(1.0).margin(0.02));   // mean of U(-1, 3)
  REQUIRE(lo > -1.0);
  REQUIRE(hi <= 3.0);
  REQUIRE(sz / n == Approx(2.0).margin(0.01));
  REQUIRE(std::sqrt(szz / n) == Approx(0.5).margin(0.01));
}

TEST_CASE("rng: unit conversions never return 0", "[random]") {
  REQUIRE(to_unit_float(0) > 0.0f);
  REQUIRE(to_unit_float(0xffffffffu) == 1.0f);
  REQUIRE(to_unit_double(0) > 0.0);
  REQUIRE(to_unit_double(0xffffffffu) == 1.0);
}
