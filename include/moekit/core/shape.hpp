// moekit/core/shape.hpp — shape<E...>: static and dynamic extents with the
// std::extents API. Only the dynamic extents take storage; rank is static.
#pragma once

#include <array>
#include <cstddef>
#include <concepts>
#include <span>
#include <string>
#include <type_traits>

#include "error.hpp"

namespace moekit {

/// Marks an extent known only at run time: `shape<dyn, 784>`.
inline constexpr std::size_t dyn = std::dynamic_extent;

template <std::size_t... E>
class shape {
  static constexpr std::array<std::size_t, sizeof...(E)> statics_{E...};

  // Position of extent i among the dynamic extents (valid when extent i is dyn).
  static constexpr std::size_t dynamic_index(std::size_t i) noexcept {
    std::size_t n = 0;
    for (std::size_t j = 0; j < i; ++j) n += statics_[j] == dyn;
    return n;
  }

 public:
  static constexpr std::size_t rank() noexcept { return sizeof...(E); }
  static constexpr std::size_t rank_dynamic() noexcept { return ((E == dyn ? 1u : 0u) + ... + 0u); }
  static constexpr std::size_t static_extent(std::size_t i) noexcept { return statics_[i]; }
  static constexpr bool all_static() noexcept { return rank_dynamic() == 0; }

  /// A fully static shape needs no arguments; a dynamic one starts with zero extents.
  constexpr shape() noexcept = default;

  /// One value per dynamic extent, in order: `shape<dyn, 784>{batch}`.
  template <std::integral... I>
    requires(sizeof...(I) == rank_dynamic() && rank_dynamic() > 0)
  constexpr explicit shape(I... dynamic_extents) noexcept
      : dyn_{static_cast<std::size_t>(dynamic_extents)...} {}

  /// From all rank() extents; throws shape_error when a static extent disagrees.
  // Loops over axes test `i != rank()`: for rank 0, `i < rank()` is a
  // comparison of an unsigned value with zero, which nvcc warns about.
  static shape from_extents(std::span<const std::size_t> all, const char* op = "shape") {
    shape s;
    if (all.size() != rank())
      throw shape_error(std::string(op) + ": expected rank " + std::to_string(rank()) + ", got " +
                        std::to_string(all.size()));
    for (std::size_t i = 0; i != rank(); ++i) {
      if constexpr (rank_dynamic() > 0) {
        if (statics_[i] == dyn) {
          s.dyn_[dynamic_index(i)] = all[i];
          continue;
        }
      }
      if (statics_[i] != all[i]) {
        throw shape_error(std::string(op) + ": extent " + std::to_string(i) + " is " +
                          std::to_string(all[i]) + " but the type fixes it to " +
                          std::to_string(statics_[i]));
      }
    }
    return s;
  }

  constexpr std::size_t extent(std::size_t i) const noexcept {
    return statics_[i] == dyn ? dyn_[dynamic_index(i)] : statics_[i];
  }

  constexpr std::size_t size() const noexcept {
    std::size_t n = 1;
    for (std::size_t i = 0; i != rank(); ++i) n *= extent(i);
    return n;
  }

  constexpr std::array<std::size_t, rank()> extents() const noexcept {
    std::array<std::size_t, rank()> all{};
    for (std::size_t i = 0; i != rank(); ++i) all[i] = extent(i);
    return all;
  }

  /// "(128, 512)"; "()" for rank 0.
  std::string str() const {
    std::string s = "(";
    for (std::size_t i = 0; i != rank(); ++i) s += (i ? ", " : "") + std::to_string(extent(i));
    return s + ")";
  }

  template <std::size_t... F>
  constexpr bool operator==(const shape<F...>& o) const noexcept {
    if constexpr (sizeof...(F) != rank()) {
      return false;
    } else {
      for (std::size_t i = 0; i != rank(); ++i)
        if (extent(i) != o.extent(i)) return false;
      return true;
    }
  }

 private:
  // A fully static shape stores nothing (an empty std::array trips GCC's
  // maybe-uninitialized analysis when copied, so use an empty struct).
  struct no_extents {
    constexpr std::size_t operator[](std::size_t) const noexcept { return 0; }
    constexpr bool operator==(const no_extents&) const noexcept = default;
  };
  using storage = std::conditional_t<rank_dynamic() == 0, no_extents, std::array<std::size_t, rank_dynamic()>>;
  [[no_unique_address]] storage dyn_{};
};

/// A rank-0 shape: the shape of scalars such as losses.
using scalar_shape = shape<>;

namespace detail {
template <class S>
struct is_shape : std::false_type {};
template <std::size_t... E>
struct is_shape<shape<E...>> : std::true_type {};
}  // namespace detail

/// Any `shape<E...>`.
template <class S>
concept shape_like = detail::is_shape<S>::value;

}  // namespace moekit
