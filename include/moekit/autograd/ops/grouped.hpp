// moekit/autograd/ops/grouped.hpp — differentiable grouped ops, the expert
// computations of an MoE layer. Backward runs over the same segments: dX is a
// grouped GEMM with the transposed weights, dW a grouped reduction GEMM, so no
// per-expert slice of a stacked weight is ever materialised.
#pragma once

#include "../../tensor/ops/grouped.hpp"
#include "../tape.hpp"

namespace moekit {

/// (A, k) rows grouped by `offsets` times stacked weights w (G, k, n): (A, n).
template <class T, class SX, class SW, class B>
auto grouped_matmul(const var<T, SX, B>& x, const var<T, SW, B>& w, const group_offsets<B>& offsets) {
  return record("grouped_matmul", grouped_matmul(x.value(), w.value(), offsets), [x, w, offsets](const auto& dy) {
    if (x.requires_grad()) x.accumulate(grouped_matmul<true>(dy, w.value(), offsets));          // dY·Wᵀ per group
    if (w.requires_grad()) w.accumulate(grouped_matmul_reduce(x.value(), dy, offsets, w.shape()));  // Xᵀ·dY per group
  }, x, w);
}

/// h[r] + b[g] for the rows r of each group g: h (A, n), b (G, n).
template <class T, class SH, class SB, class B>
var<T, SH, B> add_grouped_rows(const var<T, SH, B>& h, const var<T, SB, B>& b, const group_offsets<B>& offsets) {
  return record("add_grouped_rows", add_grouped_rows(h.value(), b.value(), offsets), [h, b, offsets](const auto& dy) {
    h.accumulate(dy);
    if (b.requires_grad()) b.accumulate(grouped_column_sums(dy, offsets, b.shape()));
  }, h, b);
}

/// f(h[r] + b[g]) for the rows r of each group g, one pass each way: the
/// fused form of an activation after add_grouped_rows. h (A, n), b (G, n);
/// df(z, dy) is the activation's backward (dz = dy · f'(z)), e.g.
/// grouped_bias_activation(h, b, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{}).
/// Backward keeps h and b, not h + b: it recomputes the sum on the fly.
template <class F, class DF, class T, class SH, class SB, class B>
var<T, SH, B> grouped_bias_activation(const var<T, SH, B>& h, const var<T, SB, B>& b, const group_offsets<B>& offsets,
                                      F f, DF df) {
  return record("grouped_bias_activation", grouped_bias_activation(h.value(), b.value(), offsets, f),
                [h, b, offsets, df](const auto& dy) {
                  auto [dz, db] = grouped_bias_activation_backward(h.value(), b.value(), dy, offsets, df,
                                                                   b.requires_grad());
                  if (b.requires_grad()) b.accumulate(db);
                  h.accumulate(dz);
                }, h, b);
}

}  // namespace moekit
