// moekit/core/shape_rules.hpp — the compile-time rules ops apply to shapes.
// A rule that fails at compile time names itself in the diagnostic; when an
// extent is dyn the same rule runs once at run time and throws shape_error.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "shape.hpp"

namespace moekit {

// Named traits so a failing static_assert shows the offending numbers in the
// template arguments: `inner_dims_match<512, 1024>`.
template <std::size_t A, std::size_t B>
struct inner_dims_match : std::bool_constant<A == dyn || B == dyn || A == B> {};
template <std::size_t A, std::size_t B>
struct extents_match : std::bool_constant<A == dyn || B == dyn || A == B> {};
template <std::size_t RankA, std::size_t RankB>
struct ranks_match : std::bool_constant<RankA == RankB> {};

namespace detail {

/// The joint extent of two extents that must agree: static wins over dyn.
constexpr std::size_t join_extent(std::size_t a, std::size_t b) noexcept { return a == dyn ? b : a; }

template <class A, class B>
struct joined;
template <std::size_t... E, std::size_t... F>
struct joined<shape<E...>, shape<F...>> {
  using type = shape<join_extent(E, F)...>;
};

/// Result type of an element-wise op over two shapes of equal rank.
template <class A, class B>
struct elementwise_shape {
  static_assert(ranks_match<A::rank(), B::rank()>::value, "elementwise: ranks differ");
  using type = typename joined<A, B>::type;
};

template <class A, class B, std::size_t... I>
consteval bool all_extents_match(std::index_sequence<I...>) {
  return (extents_match<A::static_extent(I), B::static_extent(I)>::value && ...);
}

/// Runtime part of a rule: throws `op: (2, 3) vs (2, 4): what`.
[[noreturn]] inline void shape_mismatch(const char* op, const std::string& a, const char* sep,
                                        const std::string& b, const std::string& what) {
  throw shape_error(std::string(op) + ": " + a + sep + b + ": " + what);
}

/// Builds the result shape R from extents, each taken from the runtime values.
template <class R, class F>
R make_shape(F&& extent_of) {
  std::array<std::size_t, R::rank()> all{};
  for (std::size_t i = 0; i != R::rank(); ++i) all[i] = extent_of(i);
  return R::from_extents(all);
}

}  // namespace detail

/// Checks two shapes for an element-wise op and returns the joint shape.
template <class A, class B>
auto elementwise_result(const char* op, const A& a, const B& b) {
  using R = typename detail::elementwise_shape<A, B>::type;
  static_assert(detail::all_extents_match<A, B>(std::make_index_sequence<A::rank()>{}),
                "elementwise: extents differ");
  if constexpr (!(A::all_static() && B::all_static())) {
    for (std::size_t i = 0; i < A::rank(); ++i)
      if (a.extent(i) != b.extent(i)) detail::shape_mismatch(op, a.str(), " vs ", b.str(), "extents differ");
  }
  return detail::make_shape<R>([&](std::size_t i) { return a.extent(i); });
}

/// Shape with one axis removed (reductions).
template <std::size_t Axis, class S>
struct drop_axis;
template <std::size_t Axis, std::size_t... E>
struct drop_axis<Axis, shape<E...>> {
  static_assert(Axis < sizeof...(E), "reduce: axis out of range");
  template <std::size_t... I>
  static auto pick(std::index_sequence<I...>) {
    constexpr std::array<std::size_t, sizeof...(E)> e{E...};
    return shape<e[I < Axis ? I : I + 1]...>{};
  }
  using type = decltype(pick(std::make_index_sequence<sizeof...(E) - 1>{}));
};
template <std::size_t Axis, class S>
using drop_axis_t = typename drop_axis<Axis, S>::type;

/// Shape with extent `Axis` replaced by N (N may be dyn).
template <std::size_t Axis, std::size_t N, class S>
struct set_axis;
template <std::size_t Axis, std::size_t N, std::size_t... E>
struct set_axis<Axis, N, shape<E...>> {
  static_assert(Axis < sizeof...(E), "axis out of range");
  template <std::size_t... I>
  static auto pick(std::index_sequence<I...>) {
    constexpr std::array<std::size_t, sizeof...(E)> e{E...};
    return shape<(I == Axis ? N : e[I])...>{};
  }
  using type = decltype(pick(std::make_index_sequence<sizeof...(E)>{}));
};
template <std::size_t Axis, std::size_t N, class S>
using set_axis_t = typename set_axis<Axis, N, S>::type;

/// Shape of rows [begin, end) of S: the leading extent becomes dyn.
template <class S>
using rows_shape_t = set_axis_t<0, dyn, S>;

/// The last extent of S (the "columns" of its row-major matrix view).
template <class S>
inline constexpr std::size_t last_extent_v = S::static_extent(S::rank() - 1);

/// Extents of a shape seen as (outer, axis, inner) around one axis.
struct axis_split {
  std::size_t outer, n, inner;
};
template <class S>
axis_split split_at(const S& s, std::size_t axis) {
  axis_split r{1, s.extent(axis), 1};
  for (std::size_t i = 0; i < axis; ++i) r.outer *= s.extent(i);
  for (std::size_t i = axis + 1; i < S::rank(); ++i) r.inner *= s.extent(i);
  return r;
}

/// A shape seen as a row-major matrix: (product of leading extents, last extent).
template <class S>
std::pair<std::size_t, std::size_t> as_matrix(const S& s) {
  if constexpr (S::rank() == 0) return {1, 1};
  else {
    std::size_t c = s.extent(S::rank() - 1);
    return {c ? s.size() / c : 0, c};
  }
}

}  // namespace moekit
