// moekit/autograd/ops/matmul.hpp — differentiable matmul and bmm, with either
// operand transposed. The backward products are themselves (b)matmuls with
// the transposes moved around, so no transposed copy is ever made, and they
// sum into a gradient already there (a parameter's) as beta = 1 GEMMs.
#pragma once

#include "../../tensor/ops/matmul.hpp"
#include "../tape.hpp"

namespace moekit {

namespace detail {
/// v's gradient += prod<P>(x, y): summed straight into v's gradient where it
/// may be written (var::accumulate_with), else a new product.
template <trans P, class Prod, class V, class X, class Y>
void accumulate_product(Prod prod, const V& v, const X& x, const Y& y) {
  v.accumulate_with([&] { return prod.template operator()<P>(x, y); },
                    [&](auto& grad) { prod.template add_into<P>(x, y, grad); });
}

/// dA and dB of C = op(A) op(B), for the product function `prod` (matmul or bmm).
template <trans Tr, class Prod, class VA, class VB, class DY>
void product_backward(Prod prod, const VA& a, const VB& b, const DY& dy) {
  constexpr auto N = trans::none, TA = trans::a, TB = trans::b, TT = trans::both;
  if (a.requires_grad()) {
    if constexpr (Tr == N) accumulate_product<TB>(prod, a, dy, b.value());        // dC·Bᵀ
    else if constexpr (Tr == TB) accumulate_product<N>(prod, a, dy, b.value());   // dC·B
    else if constexpr (Tr == TA) accumulate_product<TB>(prod, a, b.value(), dy);  // B·dCᵀ
    else accumulate_product<TT>(prod, a, b.value(), dy);                          // Bᵀ·dCᵀ
  }
  if (b.requires_grad()) {
    if constexpr (Tr == N) accumulate_product<TA>(prod, b, a.value(), dy);        // Aᵀ·dC
    else if constexpr (Tr == TB) accumulate_product<TA>(prod, b, dy, a.value());  // dCᵀ·A
    else if constexpr (Tr == TA) accumulate_product<N>(prod, b, a.value(), dy);   // A·dC
    else accumulate_product<TT>(prod, b, dy, a.value());                          // dCᵀ·Aᵀ
  }
}
struct matmul_fn {
  template <trans Tr, class X, class Y>
  auto operator()(const X& x, const Y& y) const { return matmul<Tr>(x, y); }
  template <trans Tr, class X, class Y, class O>
  void add_into(const X& x, const Y& y, O& out) const { matmul_add_into<Tr>(x, y, out); }
};
struct bmm_fn {
  template <trans Tr, class X, class Y>
  auto operator()(const X& x, const Y& y) const { return bmm<Tr>(x, y); }
  template <trans Tr, class X, class Y, class O>
  void add_into(const X& x, const Y& y, O& out) const { bmm_add_into<Tr>(x, y, out); }
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
