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

namespace moekit {

namespace fn {
/// out[i] of x rotated by `sign`·angle (sign −1: the inverse rotation). Angles
/// are computed in double so that long positions keep their precision. With
/// `positions` null a row's position is offset + its index along seq; else
/// it is positions[(row / group)·seq + index].
template <class T>
struct rope_rotate {
  const T* x;
  std::size_t seq, dim, offset;
  double log_base, sign;
  const index_t* positions = nullptr;
  std::size_t group = 1;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t half = dim / 2, d = i % dim, j = d < half ? d : d - half;
    const std::size_t t = (i / dim) % seq;
    const double position = positions ? static_cast<double>(positions[(i / (dim * seq)) / group * seq + t])
                                      : static_cast<double>(t + offset);
    const double frequency = std::exp(-2.0 * static_cast<double>(j) / static_cast<double>(dim) * log_base);
    const double angle = sign * position * frequency;
    const double c = std::cos(angle), s = std::sin(angle);
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

template <class T, class S, class B>
tensor<T, S, B> rope_rotate(const char* op, const tensor<T, S, B>& x, std::size_t offset, double base, double sign) {
  const auto [seq, dim] = rope_check(op, x, base);
  tensor<T, S, B> out(x.shape());
  if (out.size() == 0) return out;
  kernels<B>::generate(out.size(), out.data(), fn::rope_rotate<T>{x.data(), seq, dim, offset, std::log(base), sign});
  return out;
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
  tensor<T, S, B> out(x.shape());
  if (out.size() == 0) return out;
  kernels<B>::generate(out.size(), out.data(),
                       fn::rope_rotate<T>{x.data(), seq, dim, 0, std::log(base), sign, positions.data(),
                                          rows / groups});
  return out;
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
