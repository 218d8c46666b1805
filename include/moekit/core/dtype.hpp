// moekit/core/dtype.hpp — element types moekit stores and their names.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "host_device.hpp"

namespace moekit {

namespace detail {
MOEKIT_HOST_DEVICE inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
MOEKIT_HOST_DEVICE inline float bits_float(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

/// bfloat16 storage: the top 16 bits of a float. Converts to and from float
/// with round-to-nearest-even; arithmetic happens in float (load, compute,
/// round on store), as on the GPU with float accumulation.
struct bf16 {
  std::uint16_t bits = 0;

  bf16() = default;
  MOEKIT_HOST_DEVICE explicit bf16(float f) noexcept : bits(from_float(f)) {}
  MOEKIT_HOST_DEVICE explicit operator float() const noexcept {
    return detail::bits_float(static_cast<std::uint32_t>(bits) << 16);
  }

 private:
  MOEKIT_HOST_DEVICE static std::uint16_t from_float(float f) noexcept {
    const std::uint32_t u = detail::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
};

/// IEEE binary16 storage, converted like bf16 (round-to-nearest-even,
/// overflow to infinity, subnormals kept).
struct half {
  std::uint16_t bits = 0;

  half() = default;
  MOEKIT_HOST_DEVICE explicit half(float f) noexcept : bits(from_float(f)) {}
  MOEKIT_HOST_DEVICE explicit operator float() const noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant · 2^-24
      const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
      return detail::bits_float(detail::float_bits(v) | sign);
    }
    if (exp == 31) return detail::bits_float(sign | 0x7f800000u | (mant << 13));
    return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  }

 private:
  MOEKIT_HOST_DEVICE static std::uint16_t from_float(float f) noexcept {
    std::uint32_t u = detail::float_bits(f);
    const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN, infinity
    if (u >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: infinity
    if (u < 0x38800000u) {
      // Below 2^-14 the result is subnormal: adding 0.5 puts the float's
      // mantissa on the half's subnormal grid, rounding it the FPU's way.
      const float shifted = detail::bits_float(u) + 0.5f;
      return sign | static_cast<std::uint16_t>(detail::float_bits(shifted) - 0x3f000000u);
    }
    const std::uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000fffu + odd;  // exponent -= 112, then round half to even
    return sign | static_cast<std::uint16_t>(u >> 13);
  }
};

/// 16-bit storage types: stored as is, computed in float.
template <class T>
concept storage_16 = std::same_as<T, bf16> || std::same_as<T, half>;

/// Arithmetic on 16-bit storage: in float, rounded once to the storage type
/// (so generic code such as gradient accumulation works on bf16/half tensors;
/// kernels that care about accuracy accumulate in accumulate_t<T> instead).
template <class H>
  requires storage_16<H>
MOEKIT_HOST_DEVICE inline H operator+(H a, H b) noexcept { return H(float(a) + float(b)); }
template <class H>
  requires storage_16<H>
MOEKIT_HOST_DEVICE inline H operator-(H a, H b) noexcept { return H(float(a) - float(b)); }
template <class H>
  requires storage_16<H>
MOEKIT_HOST_DEVICE inline H operator*(H a, H b) noexcept { return H(float(a) * float(b)); }
template <class H>
  requires storage_16<H>
MOEKIT_HOST_DEVICE inline H operator/(H a, H b) noexcept { return H(float(a) / float(b)); }
template <class H>
  requires storage_16<H>
MOEKIT_HOST_DEVICE inline H operator-(H a) noexcept { return H(-float(a)); }
template <class H>
  requires storage_16<H>
MOEKIT_HOST_DEVICE inline bool operator<(H a, H b) noexcept { return float(a) < float(b); }
template <class H>
  requires storage_16<H>
MOEKIT_HOST_DEVICE inline bool operator==(H a, H b) noexcept { return float(a) == float(b); }

/// The type arithmetic on T happens in: float for 16-bit storage, T otherwise.
template <class T>
using accumulate_t = std::conditional_t<storage_16<T>, float, T>;

/// Floating-point element types moekit computes in on the CPU.
template <class T>
concept real = std::same_as<T, float> || std::same_as<T, double>;

/// Names as the safetensors format spells them ("F32", "F64", "I32", "I64").
template <class T>
constexpr std::string_view dtype_name() noexcept {
  if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "I32";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "I64";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "U8";
  else if constexpr (std::is_same_v<T, bf16>) return "BF16";
  else if constexpr (std::is_same_v<T, half>) return "F16";
  else return "?";
}

}  // namespace moekit
