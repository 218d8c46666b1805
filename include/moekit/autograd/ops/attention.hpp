// moekit/autograd/ops/attention.hpp — scaled dot-product attention over heads
// already split (split_heads): q (rows, queries, d), k (rows, keys, d),
// v (rows, keys, d_v), rows = batch·heads,
//
//   softmax_masked(scale · q·kᵀ) · v                     -> (rows, queries, d_v)
//
// with scale 1/√d unless given, and an attention_mask (causal on given
// positions, key lengths, key padding; tensor/ops/attention_mask.hpp). Built on
// the differentiable ops bmm and masked_softmax, so it is differentiable in q,
// k and v. A query that sees no key gets zero weights and a zero output.
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <type_traits>

#include "arithmetic.hpp"
#include "attention_mask.hpp"
#include "matmul.hpp"

namespace moekit {

namespace detail {
template <class SQ, class SK, class SV>
void check_attention_operands(const SQ& q, const SK& k, const SV& v) {
  static_assert(SQ::rank() == 3 && SK::rank() == 3 && SV::rank() == 3,
                "scaled_dot_product_attention: q, k, v must have rank 3 (batch·heads, seq, d)");
  static_assert(extents_match<SQ::static_extent(0), SK::static_extent(0)>::value &&
                    extents_match<SK::static_extent(0), SV::static_extent(0)>::value,
                "scaled_dot_product_attention: q, k, v have different numbers of rows");
  static_assert(extents_match<SQ::static_extent(2), SK::static_extent(2)>::value,
                "scaled_dot_product_attention: q and k have different head extents");
  static_assert(extents_match<SK::static_extent(1), SV::static_extent(1)>::value,
                "scaled_dot_product_attention: k and v have different numbers of keys");
  if (q.extent(0) != k.extent(0) || k.extent(0) != v.extent(0) || q.extent(2) != k.extent(2) ||
      k.extent(1) != v.extent(1))
    throw shape_error("scaled_dot_product_attention: q " + q.str() + ", k " + k.str() + ", v " + v.str() +
                      ": need q (rows, queries, d), k (rows, keys, d), v (rows, keys, d_v)");
}
}  // namespace detail

/// softmax(scale·q·kᵀ, masked by `mask`)·v: q (rows, queries, d), k (rows,
/// keys, d), v (rows, keys, d_v) -> (rows, queries, d_v); scale defaults to 1/√d.
template <class T, class SQ, class SK, class SV, class B>
auto scaled_dot_product_attention(const var<T, SQ, B>& q, const var<T, SK, B>& k, const var<T, SV, B>& v,
                                  const attention_mask<B>& mask = {}, std::optional<double> scale = {}) {
  detail::check_attention_operands(q.shape(), k.shape(), v.shape());
  const double s = scale ? *scale : 1 / std::sqrt(static_cast<double>(q.extent(2)));
  // Scaling q instead of the scores gives the same scores for less work.
  auto scores = bmm<trans::b>(q * static_cast<T>(s), k);  // (rows, queries, keys)
  auto weights = masked_softmax(scores, mask);            // (rows, queries, keys)
  return bmm(weights, v);                                 // (rows, queries, d_v)
}

/// A device call given a host mask: the mask is checked on the host, then copied to B.
template <class T, class SQ, class SK, class SV, class B>
  requires(!std::is_same_v<B, cpu>)
auto scaled_dot_product_attention(const var<T, SQ, B>& q, const var<T, SK, B>& k, const var<T, SV, B>& v,
                                  const attention_mask<cpu>& mask, std::optional<double> scale = {}) {
  detail::check_attention_operands(q.shape(), k.shape(), v.shape());
  (void)detail::attention_mask_rule("scaled_dot_product_attention", mask, q.extent(0), q.extent(1), k.extent(1));
  return scaled_dot_product_attention(q, k, v, mask.template to<B>(), scale);
}

}  // namespace moekit
