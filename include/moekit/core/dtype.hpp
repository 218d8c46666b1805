// moekit/core/dtype.hpp — element types moekit stores and their names.
#pragma once

#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace moekit {

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
  else return "?";
}

}  // namespace moekit
