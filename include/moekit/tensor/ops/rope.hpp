// moekit/tensor/ops/rope.hpp — rotary position embedding (RoPE, Su et al.) in
// the half-split "rotate_half" form of GPT-NeoX and LLaMA: for x (..., seq,
// dim) the pair (x[j], x[j + dim/2]) at position p is rotated by the angle
// p·base^(−2j/dim). The rotation is orthogonal, so its backward is the inverse
// rotation (the same angles negated).
//
// Positions are either consecutive along the second-to-last axis, starting at
// `offset` (rope(x, offset, base)), or given per row of that axis
// (rope(x, positions, base)): x's leading axes flattened are its `rows`
// (size / (seq·dim)), and positions is (seq), shared by every row, or
// (R, seq) with R dividing rows, where row r reads positions row r / (rows/R).
// So for heads split as (batch·H, seq, d_head), positions (batch, seq) give
// every head of a batch row the same positions and (batch·H, seq) one set per
// head (tokens selected per head, at their original positions).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

#include "../../core/host_device.hpp"
#include "../tensor.hpp"
#include "creation.hpp"

namespace moekit {

namespace fn {
/// cos (Sin = false) or sin (Sin = true) of sign·p·base^(−2j/dim) for entry
/// k = prow·half + j of the angle table, p the position of position row prow:
/// positions[prow], or offset + prow when positions is null. In double, so
/// that long positions keep their precision.
template <bool Sin>
struct rope_angle {
  std::size_t half, dim, offset;
  double log_base, sign;
  const index_t* positions = nullptr;
  MOEKIT_HOST_DEVICE double operator()(std::size_t k) const {
    const std::size_t prow = k / half, j = k % half;
    const double position = positions ? static_cast<double>(positions[prow]) : static_cast<double>(prow + offset);
    const double angle = sign * position * std::exp(-2.0 * static_cast<double>(j) / static_cast<double>(dim) * log_base);
    if constexpr (Sin) return std::sin(angle);
    else return std::cos(angle);
  }
};

/// out[i] of x rotated by the tabled angles: the pair (j, j + dim/2) of row
/// r at index t along seq uses table row (r / group)·seq + t when positions
/// vary by row (group = rows per position row), else t.
template <class T>
struct rope_rotate {
  const T* x;
  const double* cos_table;
  const double* sin_table;
  std::size_t seq, dim, group;  // group 0: one position row per index t, shared by every row
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t half = dim / 2, d = i % dim, j = d < half ? d : d - half;
    const std::size_t t = (i / dim) % seq;
    const std::size_t prow = group ? (i / (dim * seq)) / group * seq + t : t;
    const double c = cos_table[prow * half + j], s = sin_table[prow * half + j];
    if (d < half) return static_cast<T>(x[i] * c - x[i + half] * s);
    return static_cast<T>(x[i] * c + x[i - half] * s);
  }
};
}  // namespace fn

/// The last extent (the rotated dim) must be even: `rope_dim_even<63>` fails.
template <std::size_t Dim>
struct rope_dim_even : std::bool_constant<Dim == dyn || Dim % 2 == 0> {};

namespace detail {
/// Checks x and base; returns (seq, dim).
template <class T, class S, class B>
std::array<std::size_t, 2> rope_check(const char* op, const tensor<T, S, B>& x, double base) {
  static_assert(S::rank() >= 2, "rope: x needs rank >= 2 (..., seq, dim)");
  static_assert(rope_dim_even<last_extent_v<S>>::value, "rope: the last extent (dim) must be even");
  const std::size_t seq = x.extent(S::rank() - 2), dim = x.extent(S::rank() - 1);
  if (dim % 2 != 0) throw shape_error(std::string(op) + ": x " + x.shape().str() + ": the last extent must be even");
  if (!(base > 1.0)) throw value_error(std::string(op) + ": base " + std::to_string(base) + " must be > 1");
  return {seq, dim};
}

/// x rotated with the angles of `position_rows` position rows, tabled once
/// (cos and sin of each (position row, j)) rather than per element: every
/// row of x (batch · heads of them) reuses them.
template <class T, class S, class B, class C, class Sn>
tensor<T, S, B> rotate_by_table(const tensor<T, S, B>& x, std::size_t seq, std::size_t dim, std::size_t position_rows,
                                std::size_t group, C cos_of, Sn sin_of) {
  tensor<T, S, B> out(x.shape());
  if (out.size() == 0) return out;
  const shape<dyn> table_shape{position_rows * (dim / 2)};
  const auto c = generate<double, B>(table_shape, cos_of);  // (position rows · dim/2)
  const auto s = generate<double, B>(table_shape, sin_of);  // (position rows · dim/2)
  kernels<B>::generate(out.size(), out.data(), fn::rope_rotate<T>{x.data(), c.data(), s.data(), seq, dim, group});
  return out;
}

template <class T, class S, class B>
tensor<T, S, B> rope_rotate(const char* op, const tensor<T, S, B>& x, std::size_t offset, double base, double sign) {
  const auto [seq, dim] = rope_check(op, x, base);
  return rotate_by_table(x, seq, dim, seq, 0, fn::rope_angle<false>{dim / 2, dim, offset, std::log(base), sign},
                         fn::rope_angle<true>{dim / 2, dim, offset, std::log(base), sign});
}

/// The same at positions (seq) or (R, seq), R dividing x's rows.
template <class T, class S, class PS, class B>
tensor<T, S, B> rope_rotate(const char* op, const tensor<T, S, B>& x, const tensor<index_t, PS, B>& positions,
                            double base, double sign) {
  static_assert(PS::rank() == 1 || PS::rank() == 2, "rope: positions must be (seq) or (rows, seq)");
  const auto [seq, dim] = rope_check(op, x, base);
  const std::size_t rows = seq * dim == 0 ? 0 : x.size() / (seq * dim);
  const std::size_t groups = PS::rank() == 1 ? 1 : positions.extent(0);
  if (!positions.defined() || positions.extent(PS::rank() - 1) != seq || groups == 0 || rows % groups != 0)
    throw shape_error(std::string(op) + ": positions " + positions.shape().str() + " for x " + x.shape().str() +
                      ": needs (seq) or (R, seq) with R dividing the " + std::to_string(rows) + " rows of x");
  const std::size_t half = dim / 2;
  return rotate_by_table(x, seq, dim, positions.size(), PS::rank() == 1 ? 0 : rows / groups,
                         fn::rope_angle<false>{half, dim, 0, std::log(base), sign, positions.data()},
                         fn::rope_angle<true>{half, dim, 0, std::log(base), sign, positions.data()});
}
}  // namespace detail

/// x (..., seq, dim) with each pair (j, j + dim/2) at position p = offset + its
/// index along the seq axis rotated by p·base^(−2j/dim).
template <class T, class S, class B>
tensor<T, S, B> rope(const tensor<T, S, B>& x, std::size_t offset = 0, double base = 10000.0) {
  return detail::rope_rotate("rope", x, offset, base, 1.0);
}
/// dx for y = rope(x, offset, base): dy rotated back.
template <class T, class S, class B>
tensor<T, S, B> rope_backward(const tensor<T, S, B>& dy, std::size_t offset = 0, double base = 10000.0) {
  return detail::rope_rotate("rope_backward", dy, offset, base, -1.0);
}

/// x (..., seq, dim) rotated at the given positions: (seq), one per index
/// along the seq axis for every row, or (R, seq), row r of x's leading axes
/// (flattened) reading positions row r / (rows/R). Positions may be any
/// integers (negative ones rotate the other way); positions 0..seq-1 give
/// exactly rope(x, 0, base). Device positions are read on the device.
template <class T, class S, class PS, class B>
tensor<T, S, B> rope(const tensor<T, S, B>& x, const tensor<index_t, PS, B>& positions, double base = 10000.0) {
  return detail::rope_rotate("rope", x, positions, base, 1.0);
}
/// dx for y = rope(x, positions, base): dy rotated back.
template <class T, class S, class PS, class B>
tensor<T, S, B> rope_backward(const tensor<T, S, B>& dy, const tensor<index_t, PS, B>& positions,
                              double base = 10000.0) {
  return detail::rope_rotate("rope_backward", dy, positions, base, -1.0);
}

}  // namespace moekit
