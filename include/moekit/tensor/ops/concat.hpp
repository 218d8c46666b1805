// moekit/tensor/ops/concat.hpp — concat<Axis> and its inverse split<Axis>.
// Seen around Axis as (outer, n, inner), a part is `outer` contiguous blocks of
// n * inner elements, so both are strided block copies (kernels<B>::copy_blocks).
#pragma once

#include <array>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "../tensor.hpp"

namespace moekit {

/// Concatenating SA and SB along Axis needs every other static extent to agree;
/// a failing static_assert shows the axis and both shapes.
template <std::size_t Axis, class SA, class SB>
struct concat_extents_match {
  static_assert(ranks_match<SA::rank(), SB::rank()>::value, "concat: ranks differ");
  static_assert(Axis < SA::rank(), "concat: axis out of range");
  static constexpr bool value = [] {
    for (std::size_t i = 0; i < SA::rank(); ++i)
      if (i != Axis && !(SA::static_extent(i) == dyn || SB::static_extent(i) == dyn ||
                         SA::static_extent(i) == SB::static_extent(i)))
        return false;
    return true;
  }();
};

namespace detail {

/// Extent of the result along the concatenated axis: the sum when both are static.
constexpr std::size_t concat_extent(std::size_t a, std::size_t b) noexcept {
  return a == dyn || b == dyn ? dyn : a + b;
}

/// Result of concat<Axis>(SA, SB): joined extents, summed along Axis.
template <std::size_t Axis, class SA, class SB>
using concat_shape_t =
    set_axis_t<Axis, concat_extent(SA::static_extent(Axis), SB::static_extent(Axis)), typename joined<SA, SB>::type>;

/// Throws unless a and b agree on every extent but Axis.
template <class SA, class SB>
void check_concat_extents(std::size_t axis, const SA& a, const SB& b) {
  for (std::size_t i = 0; i < SA::rank(); ++i)
    if (i != axis && a.extent(i) != b.extent(i))
      shape_mismatch("concat", a.str(), " and ", b.str(),
                     "extents differ on axis " + std::to_string(i) + " (concatenating along axis " +
                         std::to_string(axis) + ")");
}

/// Copies `part` (n along the axis) into `whole`, viewed as (outer, total, inner), at offset `at`.
template <class B, class T>
void copy_to_slice(const axis_split& whole, std::size_t at, std::size_t n, const T* part, T* dst) {
  kernels<B>::copy_blocks(whole.outer, n * whole.inner, part, n * whole.inner, dst + at * whole.inner,
                          whole.n * whole.inner);
}
/// The inverse: the slice [at, at + n) of `whole` into a contiguous part.
template <class B, class T>
void copy_from_slice(const axis_split& whole, std::size_t at, std::size_t n, const T* src, T* part) {
  kernels<B>::copy_blocks(whole.outer, n * whole.inner, src + at * whole.inner, whole.n * whole.inner, part,
                          n * whole.inner);
}

/// Elements [at, at + n) of x along Axis, as a new tensor.
template <std::size_t Axis, class T, class S, class B>
tensor<T, set_axis_t<Axis, dyn, S>, B> slice_copy(const tensor<T, S, B>& x, std::size_t at, std::size_t n) {
  using R = set_axis_t<Axis, dyn, S>;
  auto ext = x.shape().extents();
  ext[Axis] = n;
  tensor<T, R, B> out(R::from_extents(ext, "split"));
  copy_from_slice<B>(split_at(x.shape(), Axis), at, n, x.data(), out.data());
  return out;
}

}  // namespace detail

/// a and b joined along Axis; every other extent must agree. The result's
/// extent along Axis is static when both inputs' are.
template <std::size_t Axis, class T, class SA, class SB, class B>
tensor<T, detail::concat_shape_t<Axis, SA, SB>, B> concat(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) {
  static_assert(concat_extents_match<Axis, SA, SB>::value, "concat: extents other than the axis differ");
  using R = detail::concat_shape_t<Axis, SA, SB>;
  detail::check_concat_extents(Axis, a.shape(), b.shape());
  auto ext = a.shape().extents();
  ext[Axis] += b.extent(Axis);
  tensor<T, R, B> out(R::from_extents(ext, "concat"));
  const auto whole = split_at(out.shape(), Axis);
  detail::copy_to_slice<B>(whole, 0, a.extent(Axis), a.data(), out.data());
  detail::copy_to_slice<B>(whole, a.extent(Axis), b.extent(Axis), b.data(), out.data());
  return out;
}

/// Any number of parts of one shape type joined along Axis (at least one part).
template <std::size_t Axis, class T, class S, class B>
tensor<T, set_axis_t<Axis, dyn, S>, B> concat(std::span<const tensor<T, S, B>> parts) {
  using R = set_axis_t<Axis, dyn, S>;
  if (parts.empty()) throw value_error("concat: no tensors to concatenate");
  auto ext = parts[0].shape().extents();
  ext[Axis] = 0;
  for (const auto& p : parts) {
    detail::check_concat_extents(Axis, parts[0].shape(), p.shape());
    ext[Axis] += p.extent(Axis);
  }
  tensor<T, R, B> out(R::from_extents(ext, "concat"));
  const auto whole = split_at(out.shape(), Axis);
  std::size_t at = 0;
  for (const auto& p : parts) {
    detail::copy_to_slice<B>(whole, at, p.extent(Axis), p.data(), out.data());
    at += p.extent(Axis);
  }
  return out;
}
template <std::size_t Axis, class T, class S, class B>
tensor<T, set_axis_t<Axis, dyn, S>, B> concat(const std::vector<tensor<T, S, B>>& parts) {
  return concat<Axis>(std::span<const tensor<T, S, B>>(parts));
}

namespace detail {
/// Throws unless `sizes` add up to x's extent along `axis`.
template <class S>
void check_split_sizes(const S& x, std::size_t axis, std::span<const std::size_t> sizes) {
  std::size_t total = 0;
  for (std::size_t n : sizes) total += n;
  if (total != x.extent(axis))
    throw shape_error("split: sizes sum to " + std::to_string(total) + " but " + x.str() + " has extent " +
                      std::to_string(x.extent(axis)) + " on axis " + std::to_string(axis));
}
}  // namespace detail

/// x cut along Axis into consecutive parts of the given extents (new tensors);
/// the sizes must add up to x's extent along Axis.
template <std::size_t Axis, class T, class S, class B>
std::vector<tensor<T, set_axis_t<Axis, dyn, S>, B>> split(const tensor<T, S, B>& x,
                                                          std::span<const std::size_t> sizes) {
  static_assert(Axis < S::rank(), "split: axis out of range");
  detail::check_split_sizes(x.shape(), Axis, sizes);
  std::vector<tensor<T, set_axis_t<Axis, dyn, S>, B>> parts;
  parts.reserve(sizes.size());
  std::size_t at = 0;
  for (std::size_t n : sizes) {
    parts.push_back(detail::slice_copy<Axis>(x, at, n));
    at += n;
  }
  return parts;
}
template <std::size_t Axis, class T, class S, class B>
std::vector<tensor<T, set_axis_t<Axis, dyn, S>, B>> split(const tensor<T, S, B>& x,
                                                          std::initializer_list<std::size_t> sizes) {
  return split<Axis>(x, std::span<const std::size_t>(sizes.begin(), sizes.size()));
}

}  // namespace moekit
