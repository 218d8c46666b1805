// moekit/tensor/ops/transpose.hpp — transpose(x): a materialised copy with the
// last two axes swapped, (M, N) -> (N, M) and (batch, M, N) -> (batch, N, M).
// Products never need it (matmul reads operands transposed); it is for layouts
// that must really change, such as expert-major <-> token-major.
#pragma once

#include <array>
#include <cstddef>
#include <utility>

#include "../tensor.hpp"

namespace moekit {

namespace detail {
template <class S>
struct transposed_shape {
  static_assert(S::rank() == 2 || S::rank() == 3, "transpose: needs rank 2 (M, N) or rank 3 (batch, M, N)");
};
template <std::size_t M, std::size_t N>
struct transposed_shape<shape<M, N>> {
  using type = shape<N, M>;
};
template <std::size_t Batch, std::size_t M, std::size_t N>
struct transposed_shape<shape<Batch, M, N>> {
  using type = shape<Batch, N, M>;
};
}  // namespace detail

/// S with its last two extents swapped.
template <class S>
using transposed_t = typename detail::transposed_shape<S>::type;

/// (M, N) -> (N, M), or (batch, M, N) -> (batch, N, M): a new tensor.
template <class T, class S, class B>
tensor<T, transposed_t<S>, B> transpose(const tensor<T, S, B>& x) {
  using R = transposed_t<S>;
  auto ext = x.shape().extents();
  std::swap(ext[S::rank() - 2], ext[S::rank() - 1]);
  tensor<T, R, B> out(R::from_extents(ext, "transpose"));
  const std::size_t rows = x.extent(S::rank() - 2), cols = x.extent(S::rank() - 1);
  if constexpr (S::rank() == 2) kernels<B>::transpose_2d(rows, cols, x.data(), out.data());
  else kernels<B>::transpose_2d_batched(x.extent(0), rows, cols, x.data(), out.data());
  return out;
}

}  // namespace moekit
