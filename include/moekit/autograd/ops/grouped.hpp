// moekit/autograd/ops/grouped.hpp — differentiable grouped ops, the expert
// computations of an MoE layer. Backward runs over the same segments: dX is a
// grouped GEMM with the transposed weights, dW a grouped reduction GEMM, so no
// per-expert slice of a stacked weight is ever materialised.
#pragma once

#include "../../tensor/ops/grouped.hpp"
#include "../tape.hpp"

namespace moekit {

namespace detail {
/// w's gradient += Xᵀ·D per group, summed straight into a gradient already
/// there (an expert weight's after the first step) as a beta = 1 GEMM.
template <class T, class SW, class SX, class SD, class B>
void accumulate_grouped_reduce(const var<T, SW, B>& w, const tensor<T, SX, B>& x, const tensor<T, SD, B>& d,
                               const group_offsets<B>& offsets) {
  w.accumulate_with([&] { return grouped_matmul_reduce(x, d, offsets, w.shape()); },
                    [&](auto& grad) { grouped_matmul_reduce_add_into(x, d, offsets, grad); });
}
}  // namespace detail

/// (A, k) rows grouped by `offsets` times stacked weights w (G, k, n): (A, n).
template <class T, class SX, class SW, class B>
auto grouped_matmul(const var<T, SX, B>& x, const var<T, SW, B>& w, const group_offsets<B>& offsets) {
  return record("grouped_matmul", grouped_matmul(x.value(), w.value(), offsets), [x, w, offsets](const auto& dy) {
    if (x.requires_grad()) x.accumulate(grouped_matmul<true>(dy, w.value(), offsets));          // dY·Wᵀ per group
    if (w.requires_grad()) detail::accumulate_grouped_reduce(w, x.value(), dy, offsets);          // Xᵀ·dY per group
  }, x, w);
}

namespace detail {
/// z = x·W_g (+ b_g) and f(z), with what the backward keeps: {kept, f(z)}.
/// kept is f'(z) when df has a slope and `slope` is asked for (a backward will
/// run, on the CPU: the forward's loop computes f and f' together, and the
/// backward is one product, dz = f'(z)·dh; fused_map_pair says why not on
/// other backends), else z itself (the backward applies df(z, dh)).
template <class F, class DF, class T, class SX, class SW, class SB, class B>
auto activation_keeping(const tensor<T, SX, B>& x, const tensor<T, SW, B>& w, const tensor<T, SB, B>* b,
                        const group_offsets<B>& offsets, F f, DF df, bool slope) {
  if constexpr (fn::has_slope<DF>)
    if (slope) return grouped_matmul_activation(x, w, b, offsets, f, fn::slope_of<DF>{df});
  return grouped_matmul_activation(x, w, b, offsets, f);
}

/// grouped_matmul_activation with the bias optional (b null: none).
template <class F, class DF, class T, class SX, class SW, class SB, class B>
auto grouped_matmul_activation(const var<T, SX, B>& x, const var<T, SW, B>& w, const var<T, SB, B>* b,
                               const group_offsets<B>& offsets, F f, DF df) {
  const bool slope = fn::has_slope<DF> && fused_map_pair<B> && (b ? will_record(x, w, *b) : will_record(x, w));
  auto [z, y] = activation_keeping(x.value(), w.value(), b ? &b->value() : nullptr, offsets, f, df, slope);  // (A, n)
  auto backward = [x, w, b = b ? *b : var<T, SB, B>{}, offsets, z = std::move(z), df, slope](const auto& dy) {
    const auto dz = slope ? zip("grouped_matmul_activation backward", z, dy, fn::mul{})   // (A, n): f'(z) · dy
                          : zip("grouped_matmul_activation backward", z, dy, df);
    if (x.requires_grad()) x.accumulate(grouped_matmul<true>(dz, w.value(), offsets));          // dZ·Wᵀ per group
    if (w.requires_grad()) accumulate_grouped_reduce(w, x.value(), dz, offsets);                  // Xᵀ·dZ per group
    if (b.requires_grad()) b.accumulate(grouped_column_sums(dz, offsets, b.shape()));
  };
  if (b) return record("grouped_matmul_activation", std::move(y), std::move(backward), x, w, *b);
  return record("grouped_matmul_activation", std::move(y), std::move(backward), x, w);
}

/// grouped_ffn with the bias optional (b null: none).
template <class F, class DF, class T, class SX, class SW1, class SB, class SW2, class B>
auto grouped_ffn(const var<T, SX, B>& x, const var<T, SW1, B>& w1, const var<T, SB, B>* b, const var<T, SW2, B>& w2,
                 const group_offsets<B>& offsets, F f, DF df) {
  const bool slope =
      fn::has_slope<DF> && fused_map_pair<B> && (b ? will_record(x, w1, *b, w2) : will_record(x, w1, w2));
  auto [z, h] = activation_keeping(x.value(), w1.value(), b ? &b->value() : nullptr, offsets, f, df, slope);  // (A, F)
  auto y = grouped_matmul(h, w2.value(), offsets);                                                            // (A, D)
  auto backward = [x, w1, b = b ? *b : var<T, SB, B>{}, w2, offsets, z = std::move(z), h = std::move(h), df,
                   slope](const auto& dy) {
    // (A, F): f'(z)·dY·W2ᵀ, f'(z) kept or from z
    const auto dz = slope ? grouped_matmul_activation_backward(dy, w2.value(), z, offsets, fn::mul{})
                          : grouped_matmul_activation_backward(dy, w2.value(), z, offsets, df);
    if (w2.requires_grad()) accumulate_grouped_reduce(w2, h, dy, offsets);             // Hᵀ·dY per group
    if (x.requires_grad()) x.accumulate(grouped_matmul<true>(dz, w1.value(), offsets));  // dZ·W1ᵀ per group
    if (w1.requires_grad()) accumulate_grouped_reduce(w1, x.value(), dz, offsets);     // Xᵀ·dZ per group
    if (b.requires_grad()) b.accumulate(grouped_column_sums(dz, offsets, b.shape()));
  };
  if (b) return record("grouped_ffn", std::move(y), std::move(backward), x, w1, *b, w2);
  return record("grouped_ffn", std::move(y), std::move(backward), x, w1, w2);
}
}  // namespace detail

/// f(x·W_g + b_g) for the rows of each group g, as one op: the bias and the
/// activation run in the grouped GEMM's output pass (on the CPU, in float).
/// The backward keeps f'(z), computed in the same pass, when df has a slope
/// (fn::gelu_fast_backward, fn::silu_fast_backward), else z = x·W_g + b_g.
/// x (A, k), w (G, k, n), b (G, n); df(z, dy) is f's backward, e.g.
/// fn::gelu_fast{}, fn::gelu_fast_backward{}.
template <class F, class DF, class T, class SX, class SW, class SB, class B>
auto grouped_matmul_activation(const var<T, SX, B>& x, const var<T, SW, B>& w, const var<T, SB, B>& b,
                               const group_offsets<B>& offsets, F f, DF df) {
  return detail::grouped_matmul_activation(x, w, &b, offsets, f, df);
}
/// The same without a bias: f(x·W_g).
template <class F, class DF, class T, class SX, class SW, class B>
auto grouped_matmul_activation(const var<T, SX, B>& x, const var<T, SW, B>& w, const group_offsets<B>& offsets, F f,
                               DF df) {
  return detail::grouped_matmul_activation(x, w, static_cast<const var<T, shape<dyn, dyn>, B>*>(nullptr), offsets, f,
                                           df);
}

/// f(x·W1_g + b1_g)·W2_g for the rows of each group g: a two-matrix expert FFN
/// as one op, equal to grouped_matmul(grouped_matmul_activation(...), w2).
/// Its backward applies df (or multiplies by the kept f'(z), as
/// grouped_matmul_activation does) in the output pass of the GEMM that gives
/// the hidden layer's gradient (dY·W2ᵀ, on the CPU in float) instead of a
/// pass of its own. x (A, k), w1 (G, k, F), b1 (G, F), w2 (G, F, n): (A, n).
template <class F, class DF, class T, class SX, class SW1, class SB, class SW2, class B>
auto grouped_ffn(const var<T, SX, B>& x, const var<T, SW1, B>& w1, const var<T, SB, B>& b1,
                 const var<T, SW2, B>& w2, const group_offsets<B>& offsets, F f, DF df) {
  return detail::grouped_ffn(x, w1, &b1, w2, offsets, f, df);
}
/// The same without a bias: f(x·W1_g)·W2_g.
template <class F, class DF, class T, class SX, class SW1, class SW2, class B>
auto grouped_ffn(const var<T, SX, B>& x, const var<T, SW1, B>& w1, const var<T, SW2, B>& w2,
                 const group_offsets<B>& offsets, F f, DF df) {
  return detail::grouped_ffn(x, w1, static_cast<const var<T, shape<dyn, dyn>, B>*>(nullptr), w2, offsets, f, df);
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
