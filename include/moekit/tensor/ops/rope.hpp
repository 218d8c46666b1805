// moekit/tensor/ops/rope.hpp — rotary position embedding (RoPE, Su et al.) in
// the half-split "rotate_half" form of GPT-NeoX and LLaMA: for x (..., seq,
// dim) the pair (x[j], x[j + dim/2]) at position p is rotated by the angle
// p·base^(−2j/dim). Positions run along the second-to-last axis, starting at
// `offset`. The rotation is orthogonal, so its backward is the inverse
// rotation (the same angles negated).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

#include "../../core/host_device.hpp"
#include "../tensor.hpp"

namespace moekit {

namespace fn {
/// out[i] of x rotated by `sign`·angle (sign −1: the inverse rotation). Angles
/// are computed in double so that long positions keep their precision.
template <class T>
struct rope_rotate {
  const T* x;
  std::size_t seq, dim, offset;
  double log_base, sign;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t half = dim / 2, d = i % dim, j = d < half ? d : d - half;
    const double position = static_cast<double>((i / dim) % seq + offset);
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
template <class T, class S, class B>
tensor<T, S, B> rope_rotate(const char* op, const tensor<T, S, B>& x, std::size_t offset, double base, double sign) {
  static_assert(S::rank() >= 2, "rope: x needs rank >= 2 (..., seq, dim)");
  static_assert(rope_dim_even<last_extent_v<S>>::value, "rope: the last extent (dim) must be even");
  const std::size_t seq = x.extent(S::rank() - 2), dim = x.extent(S::rank() - 1);
  if (dim % 2 != 0) throw shape_error(std::string(op) + ": x " + x.shape().str() + ": the last extent must be even");
  if (!(base > 1.0)) throw value_error(std::string(op) + ": base " + std::to_string(base) + " must be > 1");
  tensor<T, S, B> out(x.shape());
  if (out.size() == 0) return out;
  kernels<B>::generate(out.size(), out.data(), fn::rope_rotate<T>{x.data(), seq, dim, offset, std::log(base), sign});
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

}  // namespace moekit
