// bf16 and half: conversions round to nearest even, keep infinities, NaN and
// subnormals; checked exhaustively for half against the compiler's _Float16
// and for bf16 against the two neighbouring bf16 values of each float.
#include <catch2/catch.hpp>

#include <moekit.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

using moekit::bf16;
using moekit::half;
using moekit::detail::bits_float;
using moekit::detail::float_bits;

namespace {
/// Floats spread over the whole bit space (every `step`-th pattern).
template <class F>
void for_spread_floats(std::uint64_t step, F&& f) {
  for (std::uint64_t u = 0; u < (std::uint64_t{1} << 32); u += step) f(bits_float(static_cast<std::uint32_t>(u)));
}
}  // namespace

TEST_CASE("dtype: names of the 16-bit storage types", "[core][dtype]") {
  REQUIRE(moekit::dtype_name<bf16>() == "BF16");
  REQUIRE(moekit::dtype_name<half>() == "F16");
  STATIC_REQUIRE(sizeof(bf16) == 2);
  STATIC_REQUIRE(sizeof(half) == 2);
  STATIC_REQUIRE(std::is_same_v<moekit::accumulate_t<bf16>, float>);
  STATIC_REQUIRE(std::is_same_v<moekit::accumulate_t<double>, double>);
}

TEST_CASE("dtype: bf16 rounds to the nearer neighbour, ties to even", "[core][dtype]") {
  REQUIRE(float(bf16(1.0f)) == 1.0f);
  REQUIRE(float(bf16(-2.5f)) == -2.5f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  REQUIRE(float(bf16(1.0f + 0x1p-8f)) == 1.0f);
  REQUIRE(float(bf16(1.0f + 0x1p-7f + 0x1p-8f)) == 1.0f + 0x1p-6f);
  REQUIRE(std::isinf(float(bf16(std::numeric_limits<float>::infinity()))));
  REQUIRE(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
  REQUIRE(std::isinf(float(bf16(std::numeric_limits<float>::max()))));  // rounds past the largest bf16

  long bad = 0;
  for_spread_floats(4099, [&](float f) {
    if (std::isnan(f)) return;
    const std::uint32_t lo_bits = float_bits(f) & 0xffff0000u;
    const float lo = bits_float(lo_bits), hi = bits_float(lo_bits + 0x10000u);  // hi may be inf or the next binade
    const float got = float(bf16(f));
    const std::uint32_t rest = float_bits(f) & 0xffffu;
    const bool up = rest > 0x8000u || (rest == 0x8000u && (lo_bits >> 16) & 1u);
    if (float_bits(got) != float_bits(up ? hi : lo)) ++bad;
  });
  REQUIRE(bad == 0);
}

TEST_CASE("dtype: half matches the compiler's _Float16 everywhere", "[core][dtype]") {
  long bad = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {  // every half value converts to float exactly and back
    half x;
    x.bits = static_cast<std::uint16_t>(h);
    _Float16 ref;
    std::memcpy(&ref, &x.bits, 2);
    const float f = float(x), g = static_cast<float>(ref);
    if (std::isnan(g)) {
      if (!std::isnan(f)) ++bad;
      continue;
    }
    if (float_bits(f) != float_bits(g) || half(f).bits != h) ++bad;
  }
  REQUIRE(bad == 0);
  for_spread_floats(997, [&](float f) {  // every rounding case: subnormal, overflow, ties
    const _Float16 ref = static_cast<_Float16>(f);
    std::uint16_t rb;
    std::memcpy(&rb, &ref, 2);
    const half got(f);
    if (std::isnan(f) ? !std::isnan(float(got)) : got.bits != rb) ++bad;
  });
  REQUIRE(bad == 0);
}
