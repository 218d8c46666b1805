// moekit/core/checked.hpp — size arithmetic that cannot wrap. Element counts
// and byte sizes (of tensors, of what a file declares) go through these, so a
// product that does not fit std::size_t is an error, never a small number.
//
//   std::size_t n = 0;
//   if (!mul_fits(a, b, n)) ...;                          // a * b, or false
//   checked_bytes(s.extents(), sizeof(float), "zeros");   // shape_error on overflow
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include "error.hpp"

namespace moekit {

/// out = a * b for unsigned integers; false (out untouched) when it wraps.
template <class U>
  requires std::is_unsigned_v<U>
constexpr bool mul_fits(U a, U b, U& out) noexcept {
  if (a != 0 && b > static_cast<U>(-1) / a) return false;
  out = static_cast<U>(a * b);
  return true;
}

/// out = a + b for unsigned integers; false (out untouched) when it wraps.
template <class U>
  requires std::is_unsigned_v<U>
constexpr bool add_fits(U a, U b, U& out) noexcept {
  if (b > static_cast<U>(-1) - a) return false;
  out = static_cast<U>(a + b);
  return true;
}

namespace detail {
inline std::string extents_str(std::span<const std::size_t> extents) {
  std::string s = "(";
  for (std::size_t i = 0; i < extents.size(); ++i) s += (i ? ", " : "") + std::to_string(extents[i]);
  return s + ")";
}
}  // namespace detail

/// The element count of `extents`; shape_error naming `op` and the shape when it overflows.
inline std::size_t checked_count(std::span<const std::size_t> extents, const char* op) {
  std::size_t n = 1;
  for (std::size_t e : extents)
    if (!mul_fits(n, e, n))
      throw shape_error(std::string(op) + ": shape " + detail::extents_str(extents) +
                        " has more elements than std::size_t counts");
  return n;
}

/// The bytes of `extents` elements of `element_bytes` each; shape_error naming
/// `op`, the shape and the element size when the product overflows.
inline std::size_t checked_bytes(std::span<const std::size_t> extents, std::size_t element_bytes, const char* op) {
  std::size_t n = element_bytes;
  for (std::size_t e : extents)
    if (!mul_fits(n, e, n))
      throw shape_error(std::string(op) + ": shape " + detail::extents_str(extents) + " of " +
                        std::to_string(element_bytes) + "-byte elements needs more bytes than std::size_t counts");
  return n;
}

}  // namespace moekit
