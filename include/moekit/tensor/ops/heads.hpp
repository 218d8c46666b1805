// moekit/tensor/ops/heads.hpp — the layout change between a model-width
// sequence and per-head sequences of multi-head attention:
//
//   split_heads(x, H):  (batch, seq, H·d_head) -> (batch·H, seq, d_head)
//   merge_heads(y, H):  (batch·H, seq, d_head) -> (batch, seq, H·d_head)
//
// Head h of batch row b is row b·H + h of the split tensor and owns features
// [h·d_head, (h+1)·d_head) of x, as torch's view(b, s, H, d).transpose(1, 2).
// Each is one gather pass (a generate over the output); merge_heads is the
// inverse of split_heads and each is the other's backward.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "../../core/host_device.hpp"
#include "../tensor.hpp"

namespace moekit {

/// Extent of one head of a model extent D split into H heads: D / H, or dyn when either is dyn.
template <std::size_t D, std::size_t H>
inline constexpr std::size_t head_extent_v = (D == dyn || H == dyn) ? dyn : D / H;

namespace fn {
/// out (batch·H, seq, d_head)[i] = x (batch, seq, H·d_head)[...].
template <class T>
struct split_heads_gather {
  const T* x;
  std::size_t seq, heads, head_dim;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t j = i % head_dim, t = (i / head_dim) % seq, r = i / (head_dim * seq);
    const std::size_t b = r / heads, h = r % heads;
    return x[((b * seq + t) * heads + h) * head_dim + j];
  }
};
/// out (batch, seq, H·d_head)[i] = y (batch·H, seq, d_head)[...].
template <class T>
struct merge_heads_gather {
  const T* y;
  std::size_t seq, heads, head_dim;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t width = heads * head_dim;
    const std::size_t c = i % width, t = (i / width) % seq, b = i / (width * seq);
    return y[((b * heads + c / head_dim) * seq + t) * head_dim + c % head_dim];
  }
};
}  // namespace fn

namespace detail {
/// The shape split_heads<H> gives for x of shape S (batch, seq, D).
template <class S, std::size_t H>
using split_heads_shape =
    shape<(S::static_extent(0) == dyn || H == dyn) ? dyn : S::static_extent(0) * H, S::static_extent(1),
          head_extent_v<S::static_extent(2), H>>;
/// The shape merge_heads<H> gives for y of shape S (batch·H, seq, d_head).
template <class S, std::size_t H>
using merge_heads_shape = shape<(S::static_extent(0) == dyn || H == dyn) ? dyn : S::static_extent(0) / H,
                                S::static_extent(1),
                                (S::static_extent(2) == dyn || H == dyn) ? dyn : S::static_extent(2) * H>;

inline void check_heads(const char* op, std::size_t static_heads, std::size_t heads, std::size_t divided,
                        const std::string& what, const std::string& x_shape) {
  if (heads == 0 || (static_heads != dyn && heads != static_heads) || divided % heads != 0)
    throw shape_error(std::string(op) + ": x " + x_shape + " into " + std::to_string(heads) + " heads: " + what +
                      " must be a multiple of the heads" +
                      (static_heads != dyn ? " (the call fixes " + std::to_string(static_heads) + " heads)"
                                           : std::string()));
}
}  // namespace detail

/// x (batch, seq, H·d_head) -> (batch·H, seq, d_head): head h of batch row b is
/// row b·H + h. `split_heads<H>(x)` fixes the heads at compile time (static
/// d_head where x's last extent is static).
template <std::size_t H = dyn, class T, class S, class B>
tensor<T, detail::split_heads_shape<S, H>, B> split_heads(const tensor<T, S, B>& x, std::size_t heads = H) {
  static_assert(S::rank() == 3, "split_heads: x must have rank 3 (batch, seq, heads·d_head)");
  static_assert(H != 0 && (S::static_extent(2) == dyn || H == dyn || S::static_extent(2) % H == 0),
                "split_heads: the last extent must be a multiple of the heads");
  using R = detail::split_heads_shape<S, H>;
  detail::check_heads("split_heads", H, heads, x.extent(2), "the last extent", x.shape().str());
  const std::size_t batch = x.extent(0), seq = x.extent(1), head_dim = x.extent(2) / heads;
  tensor<T, R, B> out(R::from_extents(std::array{batch * heads, seq, head_dim}, "split_heads"));
  if (out.size() != 0)
    kernels<B>::generate(out.size(), out.data(), fn::split_heads_gather<T>{x.data(), seq, heads, head_dim});
  return out;
}

/// y (batch·H, seq, d_head) -> (batch, seq, H·d_head), the inverse of split_heads.
template <std::size_t H = dyn, class T, class S, class B>
tensor<T, detail::merge_heads_shape<S, H>, B> merge_heads(const tensor<T, S, B>& y, std::size_t heads = H) {
  static_assert(S::rank() == 3, "merge_heads: y must have rank 3 (batch·heads, seq, d_head)");
  static_assert(H != 0 && (S::static_extent(0) == dyn || H == dyn || S::static_extent(0) % H == 0),
                "merge_heads: the first extent must be a multiple of the heads");
  using R = detail::merge_heads_shape<S, H>;
  detail::check_heads("merge_heads", H, heads, y.extent(0), "the first extent", y.shape().str());
  const std::size_t seq = y.extent(1), head_dim = y.extent(2);
  tensor<T, R, B> out(R::from_extents(std::array{y.extent(0) / heads, seq, heads * head_dim}, "merge_heads"));
  if (out.size() != 0)
    kernels<B>::generate(out.size(), out.data(), fn::merge_heads_gather<T>{y.data(), seq, heads, head_dim});
  return out;
}

}  // namespace moekit
