// moekit/tensor/ops/sparse.hpp — products of a CSR matrix (tensor/csr.hpp) with
// dense tensors, the forward ops of graph neural networks:
//
//   spmm(A, X)          Y = A·X                      X (cols, D...) -> (rows, D...)
//   spmm(A, V, X)       the same with entry values V  V (nnz) or (nnz, H) for H heads
//   spmm_transposed     Y = Aᵀ·X                      (the backward of spmm)
//   sddmm(A, X, Y)      out[k] = <X[row k], Y[col k]> (nnz), or (nnz, H) per head
//   segment_softmax     softmax over each row's entries (each node's incoming edges)
//
// With H heads the dense rows are split into H blocks of D/H columns, head h
// of entry k weighting block h (see backend/cpu/sparse.hpp).
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>

#include "../csr.hpp"
#include "../tensor.hpp"
#include "elementwise.hpp"
#include "index.hpp"

namespace moekit {

namespace detail {

/// Heads of a values tensor: 1 for (nnz), H for (nnz, H).
template <class SV>
std::size_t value_heads(const SV& s) {
  static_assert(SV::rank() == 1 || SV::rank() == 2, "sparse: entry values must be (nnz) or (nnz, heads)");
  if constexpr (SV::rank() == 2) return s.extent(1);
  else return 1;
}

/// Checks entry values (nnz[, H]) and that H divides the dense row width; returns H.
template <class T, class SV, class B>
std::size_t check_values(const char* op, std::size_t nnz, const tensor<T, SV, B>& v, std::size_t width) {
  if (v.extent(0) != nnz)
    throw shape_error(std::string(op) + ": values " + v.shape().str() + " for " + std::to_string(nnz) +
                      " stored entries");
  const std::size_t heads = value_heads(v.shape());
  if (heads == 0 || width % heads != 0)
    throw shape_error(std::string(op) + ": values " + v.shape().str() + ": " + std::to_string(heads) +
                      " heads do not divide the row width " + std::to_string(width));
  return heads;
}

/// The dense operand's rows must match `n` (A's columns for A·X, rows for Aᵀ·X).
template <class T, class S, class B>
void check_dense_rows(const char* op, const std::string& a, const char* sep, const tensor<T, S, B>& x, std::size_t n) {
  static_assert(S::rank() >= 1, "sparse: the dense operand needs at least one axis");
  if (x.extent(0) != n) shape_mismatch(op, a, sep, x.shape().str(), "rows of the dense operand differ");
}

/// Y = A·X (transposed: Aᵀ·X) with `values` (null: A's own, or 1) over `heads` heads.
template <bool Transposed, class T, class V, class S, class B>
tensor<T, set_axis_t<0, dyn, S>, B> spmm(const char* op, const csr<V, B>& a, const T* values,
                                        std::size_t heads, const tensor<T, S, B>& x) {
  const std::size_t n_in = Transposed ? a.rows() : a.cols(), n_out = Transposed ? a.cols() : a.rows();
  check_dense_rows(op, Transposed ? "Aᵀ " + a.str() : "A " + a.str(), " x ", x, n_in);
  auto ext = x.shape().extents();
  ext[0] = n_out;
  using R = set_axis_t<0, dyn, S>;
  tensor<T, R, B> y(R::from_extents(ext, op));
  const std::size_t width = row_size(x.shape());
  const auto& s = a.structure();
  if constexpr (Transposed)
    kernels<B>::spmm_csr(n_out, heads, width / heads, s.t_row_ptr.data(), s.t_col.data(), values, s.t_perm.data(),
                         x.data(), y.data());
  else
    kernels<B>::spmm_csr(n_out, heads, width / heads, s.row_ptr.data(), s.col.data(), values,
                         static_cast<const index_t*>(nullptr), x.data(), y.data());
  return y;
}

/// The values spmm(A, X) uses: A's own (which must be T), or none (all 1).
template <class T, class V, class B>
const T* own_values(const char* op, const csr<V, B>& a) {
  if (!a.has_values()) return nullptr;
  if constexpr (std::is_same_v<T, V>) return a.values().data();
  else throw value_error(std::string(op) + ": A's values and X have different element types; use A.cast<T>()");
}

/// sddmm into out (nnz·heads values).
template <class T, class V, class SX, class SY, class B>
void sddmm_into(const char* op, const csr<V, B>& a, const tensor<T, SX, B>& x, const tensor<T, SY, B>& y,
                std::size_t heads, T* out) {
  check_dense_rows(op, "A " + a.str(), " with X ", x, a.rows());
  check_dense_rows(op, "A " + a.str(), " with Y ", y, a.cols());
  const std::size_t width = row_size(x.shape());
  if (row_size(y.shape()) != width)
    shape_mismatch(op, x.shape().str(), " with ", y.shape().str(), "X and Y rows differ in width");
  if (heads == 0 || width % heads != 0)
    throw shape_error(std::string(op) + ": " + std::to_string(heads) + " heads do not divide the row width " +
                      std::to_string(width));
  const auto& s = a.structure();
  kernels<B>::sddmm_csr(a.rows(), heads, width / heads, s.row_ptr.data(), s.col.data(), x.data(), y.data(), out);
}

/// Entry scores must be (nnz) or (nnz, H).
template <class T, class V, class S, class B>
std::size_t check_scores(const char* op, const csr<V, B>& a, const tensor<T, S, B>& s) {
  if (s.extent(0) != a.nnz())
    throw shape_error(std::string(op) + ": scores " + s.shape().str() + " for A " + a.str());
  return value_heads(s.shape());
}

}  // namespace detail

/// Y = A·X with A's values (or 1 where A has none): X (cols, D...) -> (rows, D...).
template <class T, class V, class S, class B>
tensor<T, set_axis_t<0, dyn, S>, B> spmm(const csr<V, B>& a, const tensor<T, S, B>& x) {
  return detail::spmm<false>("spmm", a, detail::own_values<T>("spmm", a), 1, x);
}
/// Y = A·X with entry values V (nnz) or (nnz, H), replacing A's own.
template <class T, class V, class SV, class S, class B>
tensor<T, set_axis_t<0, dyn, S>, B> spmm(const csr<V, B>& a, const tensor<T, SV, B>& values,
                                         const tensor<T, S, B>& x) {
  const std::size_t heads = detail::check_values("spmm", a.nnz(), values, detail::row_size(x.shape()));
  return detail::spmm<false>("spmm", a, values.data(), heads, x);
}

/// Y = Aᵀ·X with A's values: X (rows, D...) -> (cols, D...).
template <class T, class V, class S, class B>
tensor<T, set_axis_t<0, dyn, S>, B> spmm_transposed(const csr<V, B>& a, const tensor<T, S, B>& x) {
  return detail::spmm<true>("spmm_transposed", a, detail::own_values<T>("spmm_transposed", a), 1, x);
}
/// Y = Aᵀ·X with entry values (nnz) or (nnz, H).
template <class T, class V, class SV, class S, class B>
tensor<T, set_axis_t<0, dyn, S>, B> spmm_transposed(const csr<V, B>& a, const tensor<T, SV, B>& values,
                                                    const tensor<T, S, B>& x) {
  const std::size_t heads = detail::check_values("spmm_transposed", a.nnz(), values, detail::row_size(x.shape()));
  return detail::spmm<true>("spmm_transposed", a, values.data(), heads, x);
}

/// out[k] = <X[i], Y[j]> for every stored entry k = (i, j) of A: X (rows, D...),
/// Y (cols, D...) -> (nnz). A's values are not used.
template <class T, class V, class SX, class SY, class B>
tensor<T, shape<dyn>, B> sddmm(const csr<V, B>& a, const tensor<T, SX, B>& x, const tensor<T, SY, B>& y) {
  tensor<T, shape<dyn>, B> out(shape<dyn>{a.nnz()});
  detail::sddmm_into("sddmm", a, x, y, 1, out.data());
  return out;
}
/// Per head: out[k, h] = <X[i, block h], Y[j, block h]> -> (nnz, heads).
template <class T, class V, class SX, class SY, class B>
tensor<T, shape<dyn, dyn>, B> sddmm(const csr<V, B>& a, const tensor<T, SX, B>& x, const tensor<T, SY, B>& y,
                                    std::size_t heads) {
  tensor<T, shape<dyn, dyn>, B> out(shape<dyn, dyn>{a.nnz(), heads});
  detail::sddmm_into("sddmm", a, x, y, heads, out.data());
  return out;
}

/// Softmax of scores (nnz) or (nnz, H) over the entries of each row of A (per
/// head): attention weights over each node's incoming edges.
template <class T, class V, class S, class B>
tensor<T, S, B> segment_softmax(const csr<V, B>& a, const tensor<T, S, B>& scores) {
  const std::size_t heads = detail::check_scores("segment_softmax", a, scores);
  tensor<T, S, B> out(scores.shape());
  kernels<B>::segment_softmax_csr(a.rows(), heads, a.row_ptr().data(), scores.data(), out.data());
  return out;
}
/// Gradient of the scores given y = segment_softmax(A, scores) and dy.
template <class T, class V, class S, class S2, class B>
tensor<T, S, B> segment_softmax_backward(const csr<V, B>& a, const tensor<T, S, B>& y,
                                         const tensor<T, S2, B>& dy) {
  const std::size_t heads = detail::check_scores("segment_softmax_backward", a, y);
  (void)elementwise_result("segment_softmax_backward", y.shape(), dy.shape());
  tensor<T, S, B> dx(y.shape());
  kernels<B>::segment_softmax_csr_backward(a.rows(), heads, a.row_ptr().data(), y.data(), dy.data(), dx.data());
  return dx;
}

}  // namespace moekit
