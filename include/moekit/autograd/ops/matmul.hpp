// moekit/autograd/ops/matmul.hpp — differentiable matmul and bmm, with either
// operand transposed. The backward products are themselves (b)matmuls with
// the transposes moved around, so no transposed copy is ever made.
#pragma once

#include "../../tensor/ops/matmul.hpp"
#include "../tape.hpp"

namespace moekit {

namespace detail {
/// dA and dB of C = op(A) op(B), for the product function `prod` (matmul or bmm).
template <trans Tr, class Prod, class VA, class VB, class DY>
void product_backward(Prod prod, const VA& a, const VB& b, const DY& dy) {
  constexpr auto N = trans::none, TA = trans::a, TB = trans::b, TT = trans::both;
  if (a.requires_grad()) {
    if constexpr (Tr == N) a.accumulate(prod.template operator()<TB>(dy, b.value()));        // dC·Bᵀ
    else if constexpr (Tr == TB) a.accumulate(prod.template operator()<N>(dy, b.value()));   // dC·B
    else if constexpr (Tr == TA) a.accumulate(prod.template operator()<TB>(b.value(), dy));  // B·dCᵀ
    else a.accumulate(prod.template operator()<TT>(b.value(), dy));                          // Bᵀ·dCᵀ
  }
  if (b.requires_grad()) {
    if constexpr (Tr == N) b.accumulate(prod.template operator()<TA>(a.value(), dy));        // Aᵀ·dC
    else if constexpr (Tr == TB) b.accumulate(prod.template operator()<TA>(dy, a.value()));  // dCᵀ·A
    else if constexpr (Tr == TA) b.accumulate(prod.template operator()<N>(a.value(), dy));   // A·dC
    else b.accumulate(prod.template operator()<TT>(dy, a.value()));                          // dCᵀ·Aᵀ
  }
}
struct matmul_fn {
  template <trans Tr, class X, class Y>
  auto operator()(const X& x, const Y& y) const { return matmul<Tr>(x, y); }
};
struct bmm_fn {
  template <trans Tr, class X, class Y>
  auto operator()(const X& x, const Y& y) const { return bmm<Tr>(x, y); }
};
}  // namespace detail

/// (M, K) x (K, N) -> (M, N), differentiable in both operands.
template <trans Tr = trans::none, class T, class SA, class SB, class B>
auto matmul(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  return record("matmul", matmul<Tr>(a.value(), b.value()), [a, b](const auto& dy) {
    detail::product_backward<Tr>(detail::matmul_fn{}, a, b, dy);
  }, a, b);
}

/// (batch, M, K) x (batch, K, N) -> (batch, M, N), differentiable in both operands.
template <trans Tr = trans::none, class T, class SA, class SB, class B>
auto bmm(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  return record("bmm", bmm<Tr>(a.value(), b.value()), [a, b](const auto& dy) {
    detail::product_backward<Tr>(detail::bmm_fn{}, a, b, dy);
  }, a, b);
}

}  // namespace moekit
