// moekit/autograd/ops/sparse.hpp — differentiable CSR products (the graph::csr
// structure itself is a constant):
//
//   spmm(A, X)       dX = Aᵀ·dY                      (A's own values are constants)
//   spmm_transposed  dX = A·dY
//   spmm(A, V, X)    dX = Aᵀ_V·dY, dV[k] = <dY[i], X[j]> (an SDDMM)  for attention weights
//   sddmm(A, X, Y)   dX = A_dout·Y, dY = Aᵀ_dout·X  (two SpMMs with dout as entry values)
//   segment_softmax  dS = y·(dy − Σ_row y·dy)
//
// Aᵀ products run over the transposed structure A keeps, so every backward is
// row-parallel and deterministic.
#pragma once

#include <cstddef>

#include "../../tensor/ops/sparse.hpp"
#include "../tape.hpp"

namespace moekit {

/// Y = A·X with A's values (or 1): X (cols, D...) -> (rows, D...).
template <class T, class V, class S, class B>
auto spmm(const graph::csr<V, B>& a, const var<T, S, B>& x) {
  return record("spmm", spmm(a, x.value()), [a, x](const auto& dy) { x.accumulate(spmm_transposed(a, dy)); }, x);
}

/// Y = Aᵀ·X with A's values: X (rows, D...) -> (cols, D...); dX = A·dY.
template <class T, class V, class S, class B>
auto spmm_transposed(const graph::csr<V, B>& a, const var<T, S, B>& x) {
  return record("spmm_transposed", spmm_transposed(a, x.value()), [a, x](const auto& dy) {
    x.accumulate(spmm(a, dy));
  }, x);
}

/// Y = A·X with differentiable entry values (nnz) or (nnz, H) (see tensor/ops/sparse.hpp for heads).
template <class T, class V, class SV, class S, class B>
auto spmm(const graph::csr<V, B>& a, const var<T, SV, B>& values, const var<T, S, B>& x) {
  return record("spmm", spmm(a, values.value(), x.value()), [a, values, x](const auto& dy) {
    if (x.requires_grad()) x.accumulate(spmm_transposed(a, values.value(), dy));
    if (values.requires_grad()) {
      tensor<T, SV, B> dv(values.shape());  // dv[k, h] = <dY[i, h], X[j, h]>
      detail::sddmm_into("spmm", a, dy, x.value(), detail::value_heads(values.shape()), dv.data());
      values.accumulate(dv);
    }
  }, values, x);
}
/// Y = A·X with constant entry values.
template <class T, class V, class SV, class S, class B>
auto spmm(const graph::csr<V, B>& a, const tensor<T, SV, B>& values, const var<T, S, B>& x) {
  return record("spmm", spmm(a, values, x.value()), [a, values, x](const auto& dy) {
    x.accumulate(spmm_transposed(a, values, dy));
  }, x);
}

/// out[k] = <X[i], Y[j]> for every entry k = (i, j) of A -> (nnz).
template <class T, class V, class SX, class SY, class B>
auto sddmm(const graph::csr<V, B>& a, const var<T, SX, B>& x, const var<T, SY, B>& y) {
  return record("sddmm", sddmm(a, x.value(), y.value()), [a, x, y](const auto& dout) {
    if (x.requires_grad()) x.accumulate(spmm(a, dout, y.value()));
    if (y.requires_grad()) y.accumulate(spmm_transposed(a, dout, x.value()));
  }, x, y);
}
/// Per head: (nnz, heads).
template <class T, class V, class SX, class SY, class B>
auto sddmm(const graph::csr<V, B>& a, const var<T, SX, B>& x, const var<T, SY, B>& y, std::size_t heads) {
  return record("sddmm", sddmm(a, x.value(), y.value(), heads), [a, x, y](const auto& dout) {
    if (x.requires_grad()) x.accumulate(spmm(a, dout, y.value()));
    if (y.requires_grad()) y.accumulate(spmm_transposed(a, dout, x.value()));
  }, x, y);
}

/// Softmax of entry scores (nnz) or (nnz, H) over each row of A (each node's incoming edges).
template <class T, class V, class S, class B>
var<T, S, B> segment_softmax(const graph::csr<V, B>& a, const var<T, S, B>& scores) {
  auto y = segment_softmax(a, scores.value());
  return record("segment_softmax", y, [a, scores, y](const auto& dy) {
    scores.accumulate(segment_softmax_backward(a, y, dy));
  }, scores);
}

}  // namespace moekit
