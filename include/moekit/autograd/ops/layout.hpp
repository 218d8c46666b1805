// moekit/autograd/ops/layout.hpp — differentiable layout changes: transpose,
// reshape, concat and split. Each backward moves the gradient back through the
// inverse layout change; nothing here does arithmetic.
#pragma once

#include <array>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <vector>

#include "../../tensor/ops/concat.hpp"
#include "../../tensor/ops/creation.hpp"
#include "../../tensor/ops/transpose.hpp"
#include "../tape.hpp"

namespace moekit {

/// (M, N) -> (N, M) or (batch, M, N) -> (batch, N, M); the gradient is transposed back.
template <class T, class S, class B>
var<T, transposed_t<S>, B> transpose(const var<T, S, B>& x) {
  return record("transpose", transpose(x.value()), [x](const auto& dy) { x.accumulate(transpose(dy)); }, x);
}

/// The same values under shape `s` (storage shared, sizes must agree); the
/// gradient is reshaped back.
template <class T, class S, class S2, class B>
  requires shape_like<S2>
var<T, S2, B> reshape(const var<T, S, B>& x, const S2& s) {
  return record("reshape", x.value().reshape(s), [x](const auto& dy) { x.accumulate(dy.reshape(x.shape())); }, x);
}
/// Reshape to a fully static shape type: `reshape<shape<4, 8>>(x)`.
template <shape_like S2, class T, class S, class B>
  requires(S2::all_static())
var<T, S2, B> reshape(const var<T, S, B>& x) {
  return reshape(x, S2{});
}

/// a and b joined along Axis; each gets its slice of the gradient.
template <std::size_t Axis, class T, class SA, class SB, class B>
auto concat(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  return record("concat", concat<Axis>(a.value(), b.value()), [a, b](const auto& dy) {
    const std::size_t na = a.extent(Axis);
    if (a.requires_grad()) a.accumulate(detail::slice_copy<Axis>(dy, 0, na));
    if (b.requires_grad()) b.accumulate(detail::slice_copy<Axis>(dy, na, b.extent(Axis)));
  }, a, b);
}

namespace detail {
/// For recording an op over a run-time list of vars: the first part that has
/// a tape and the first that requires grad (parts[0] where none does), which
/// `record` treats exactly as it would the whole list.
template <class V>
std::array<const V*, 2> representatives(std::span<const V> parts) {
  std::array<const V*, 2> r{&parts[0], &parts[0]};
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (it->tape_ptr()) r[0] = &*it;
    if (it->requires_grad()) r[1] = &*it;
  }
  return r;
}
}  // namespace detail

/// Any number of parts of one shape type joined along Axis (at least one).
template <std::size_t Axis, class T, class S, class B>
var<T, set_axis_t<Axis, dyn, S>, B> concat(std::span<const var<T, S, B>> parts) {
  if (parts.empty()) throw value_error("concat: no vars to concatenate");
  std::vector<tensor<T, S, B>> values;
  values.reserve(parts.size());
  for (const auto& p : parts) values.push_back(p.value());
  const auto [with_tape, with_grad] = detail::representatives(parts);
  std::vector<var<T, S, B>> keep(parts.begin(), parts.end());
  return record("concat", concat<Axis>(std::span<const tensor<T, S, B>>(values)), [keep](const auto& dy) {
    std::size_t at = 0;
    for (const auto& p : keep) {
      if (p.requires_grad()) p.accumulate(detail::slice_copy<Axis>(dy, at, p.extent(Axis)));
      at += p.extent(Axis);
    }
  }, *with_tape, *with_grad);
}
template <std::size_t Axis, class T, class S, class B>
var<T, set_axis_t<Axis, dyn, S>, B> concat(const std::vector<var<T, S, B>>& parts) {
  return concat<Axis>(std::span<const var<T, S, B>>(parts));
}

/// x cut along Axis into consecutive parts of the given extents.
///
/// Backward: an identity node `whole` sits between x and the parts. Each part's
/// node runs once, with its complete gradient (its consumers were recorded
/// later, so they ran first), and copies it into its slice of whole's
/// gradient, a zero tensor the first of them creates. Parts that got no
/// gradient leave their slice zero; then `whole` passes the sum to x in one go.
template <std::size_t Axis, class T, class S, class B>
std::vector<var<T, set_axis_t<Axis, dyn, S>, B>> split(const var<T, S, B>& x, std::span<const std::size_t> sizes) {
  using P = set_axis_t<Axis, dyn, S>;
  auto values = split<Axis>(x.value(), sizes);
  auto whole = record("split", x.value(), [x](const auto& dy) { x.accumulate(dy); }, x);
  std::vector<var<T, P, B>> parts;
  parts.reserve(values.size());
  std::size_t at = 0;
  for (auto& v : values) {
    const std::size_t n = v.extent(Axis);
    parts.push_back(record("split", std::move(v), [whole, at, n](const auto& dy) {
      if (!whole.grad().defined()) whole.accumulate(zeros<T, B>(whole.shape()));
      // whole's gradient is the zero tensor made above, owned by its cell
      // alone: parts write disjoint slices of it in place.
      detail::copy_to_slice<B>(split_at(whole.shape(), Axis), at, n, dy.data(), whole.grad().data());
    }, whole));
    at += n;
  }
  return parts;
}
template <std::size_t Axis, class T, class S, class B>
std::vector<var<T, set_axis_t<Axis, dyn, S>, B>> split(const var<T, S, B>& x,
                                                       std::initializer_list<std::size_t> sizes) {
  return split<Axis>(x, std::span<const std::size_t>(sizes.begin(), sizes.size()));
}

}  // namespace moekit
