// moekit/tensor/ops/matmul.hpp — matrix products, plain and batched, with
// either operand transposed. The inner extents are checked at compile time
// when both are static, else once at run time.
#pragma once

#include <cstddef>
#include <string>

#include "../tensor.hpp"

namespace moekit {

/// Which operands of a product are read transposed.
enum class trans { none, a, b, both };

namespace detail {
constexpr bool trans_a(trans t) noexcept { return t == trans::a || t == trans::both; }
constexpr bool trans_b(trans t) noexcept { return t == trans::b || t == trans::both; }

/// Extents (rows, inner) of op(A) and (inner, cols) of op(B) for the last two axes.
template <trans Tr, class SA, class SB>
struct product_dims {
  static constexpr std::size_t ra = SA::rank(), rb = SB::rank();
  static constexpr std::size_t m = trans_a(Tr) ? ra - 1 : ra - 2, ka = trans_a(Tr) ? ra - 2 : ra - 1;
  static constexpr std::size_t kb = trans_b(Tr) ? rb - 1 : rb - 2, n = trans_b(Tr) ? rb - 2 : rb - 1;
  static_assert(inner_dims_match<SA::static_extent(ka), SB::static_extent(kb)>::value,
                "matmul: inner dimensions differ");

  static void check(const char* op, const SA& a, const SB& b) {
    if (a.extent(ka) != b.extent(kb))
      shape_mismatch(op, a.str(), " x ", b.str(),
                     "inner dimensions " + std::to_string(a.extent(ka)) + " != " + std::to_string(b.extent(kb)));
  }
};
}  // namespace detail

/// (M, K) x (K, N) -> (M, N); `Tr` reads A and/or B transposed (their stored
/// shapes are then (K, M) and (N, K)).
template <trans Tr = trans::none, class T, class SA, class SB, class B>
auto matmul(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) {
  static_assert(ranks_match<SA::rank(), 2>::value && ranks_match<SB::rank(), 2>::value,
                "matmul: operands must have rank 2 (use bmm for batches)");
  using dims = detail::product_dims<Tr, SA, SB>;
  using R = shape<SA::static_extent(dims::m), SB::static_extent(dims::n)>;
  dims::check("matmul", a.shape(), b.shape());
  const std::size_t m = a.extent(dims::m), k = a.extent(dims::ka), n = b.extent(dims::n);
  tensor<T, R, B> out(R::from_extents(std::array{m, n}));
  kernels<B>::gemm(detail::trans_a(Tr), detail::trans_b(Tr), m, n, k, T(1), a.data(), a.extent(1), b.data(),
                   b.extent(1), T(0), out.data(), n);
  return out;
}

/// out += op(A)·op(B) in place, out (M, N) (the beta = 1 GEMM: a weight
/// gradient summed into the one already there).
template <trans Tr = trans::none, class T, class SA, class SB, class SO, class B>
void matmul_add_into(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b, tensor<T, SO, B>& out) {
  static_assert(SA::rank() == 2 && SB::rank() == 2 && SO::rank() == 2, "matmul_add_into: operands must have rank 2");
  using dims = detail::product_dims<Tr, SA, SB>;
  dims::check("matmul_add_into", a.shape(), b.shape());
  const std::size_t m = a.extent(dims::m), k = a.extent(dims::ka), n = b.extent(dims::n);
  if (out.extent(0) != m || out.extent(1) != n)
    detail::shape_mismatch("matmul_add_into", out.shape().str(), " += product ", shape<dyn, dyn>{m, n}.str(),
                           "the sum's shape differs");
  kernels<B>::gemm(detail::trans_a(Tr), detail::trans_b(Tr), m, n, k, T(1), a.data(), a.extent(1), b.data(),
                   b.extent(1), T(1), out.data(), n);
}

/// Batched: (batch, M, K) x (batch, K, N) -> (batch, M, N).
template <trans Tr = trans::none, class T, class SA, class SB, class B>
auto bmm(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b) {
  static_assert(ranks_match<SA::rank(), 3>::value && ranks_match<SB::rank(), 3>::value,
                "bmm: operands must have rank 3");
  static_assert(extents_match<SA::static_extent(0), SB::static_extent(0)>::value, "bmm: batch extents differ");
  using dims = detail::product_dims<Tr, SA, SB>;
  using R = shape<detail::join_extent(SA::static_extent(0), SB::static_extent(0)), SA::static_extent(dims::m),
                  SB::static_extent(dims::n)>;
  if (a.extent(0) != b.extent(0))
    detail::shape_mismatch("bmm", a.shape().str(), " x ", b.shape().str(), "batch extents differ");
  dims::check("bmm", a.shape(), b.shape());
  const std::size_t batch = a.extent(0), m = a.extent(dims::m), k = a.extent(dims::ka), n = b.extent(dims::n);
  tensor<T, R, B> out(R::from_extents(std::array{batch, m, n}));
  kernels<B>::gemm_strided_batched(detail::trans_a(Tr), detail::trans_b(Tr), m, n, k, T(1), a.data(), a.extent(2),
                                   a.extent(1) * a.extent(2), b.data(), b.extent(2), b.extent(1) * b.extent(2), T(0),
                                   out.data(), n, m * n, batch);
  return out;
}

/// out += bmm(A, B) in place, out (batch, M, N).
template <trans Tr = trans::none, class T, class SA, class SB, class SO, class B>
void bmm_add_into(const tensor<T, SA, B>& a, const tensor<T, SB, B>& b, tensor<T, SO, B>& out) {
  static_assert(SA::rank() == 3 && SB::rank() == 3 && SO::rank() == 3, "bmm_add_into: operands must have rank 3");
  using dims = detail::product_dims<Tr, SA, SB>;
  dims::check("bmm_add_into", a.shape(), b.shape());
  const std::size_t batch = a.extent(0), m = a.extent(dims::m), k = a.extent(dims::ka), n = b.extent(dims::n);
  if (b.extent(0) != batch || out.extent(0) != batch || out.extent(1) != m || out.extent(2) != n)
    detail::shape_mismatch("bmm_add_into", out.shape().str(), " += product of ", a.shape().str() + " and " +
                           b.shape().str(), "batch or result extents differ");
  kernels<B>::gemm_strided_batched(detail::trans_a(Tr), detail::trans_b(Tr), m, n, k, T(1), a.data(), a.extent(2),
                                   a.extent(1) * a.extent(2), b.data(), b.extent(2), b.extent(1) * b.extent(2), T(1),
                                   out.data(), n, m * n, batch);
}

}  // namespace moekit
