// moekit/autograd/ops/combine.hpp — the gate-weighted combine of an MoE layer
// as one differentiable op: out[idx[i]] += scale[i] · src[i]. The unfused
// form, scatter_add_rows(mul_cols(src, scale), idx, rows), makes a scaled copy
// of src and records two nodes; here the scale is applied inside the
// scatter-add, and the backward gathers dy once for both gradients:
//   d src[i]   = scale[i] · dy[idx[i]]
//   d scale[i] = <src[i], dy[idx[i]]>
#pragma once

#include <cstddef>

#include "../../tensor/ops/index.hpp"
#include "../../tensor/ops/sums.hpp"
#include "../tape.hpp"

namespace moekit {

/// A zero (rows, D) tensor with out[idx[i]] += scale[i] · src[i]: src (M, D),
/// idx (M), scale (M). Differentiable in src and scale; indices outside
/// [0, rows) throw value_error. Repeated indices add up in the order of i.
template <class T, class S, class SI, class SS, class B>
var<T, set_axis_t<0, dyn, S>, B> weighted_scatter_add_rows(const var<T, S, B>& src, const tensor<index_t, SI, B>& idx,
                                                           std::size_t rows, const var<T, SS, B>& scale) {
  static_assert(S::rank() == 2, "weighted_scatter_add_rows: src must be (rows, D)");
  static_assert(SS::rank() == 1, "weighted_scatter_add_rows: scale must have rank 1, one weight per source row");
  if (scale.extent(0) != src.extent(0))
    detail::shape_mismatch("weighted_scatter_add_rows", src.shape().str(), " with scale ", scale.shape().str(),
                           "one weight per source row");
  auto out = detail::scatter_add_rows("weighted_scatter_add_rows", src.value(), idx, rows, scale.value().data());
  return record("weighted_scatter_add_rows", std::move(out), [src, idx, scale](const auto& dy) {
    // g = dy gathered back to the source rows: (M, D). Indices were checked in forward.
    auto g = detail::gather_rows("weighted_scatter_add_rows", dy, idx);
    if (scale.requires_grad()) scale.accumulate(row_dots(g, src.value(), scale.shape()));
    if (src.requires_grad()) {
      kernels<B>::map_cols(g.extent(0), g.extent(1), g.data(), fn::mul{}, g.data(), scale.value().data());  // in place
      src.accumulate(g);
    }
  }, src, scale);
}

}  // namespace moekit
