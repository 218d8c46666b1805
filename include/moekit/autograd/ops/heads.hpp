// moekit/autograd/ops/heads.hpp — differentiable split_heads / merge_heads
// (tensor/ops/heads.hpp): (batch, seq, H·d_head) <-> (batch·H, seq, d_head).
// Each is the other's backward; the nodes keep nothing but the head count.
#pragma once

#include "../../tensor/ops/heads.hpp"
#include "../tape.hpp"

namespace moekit {

/// x (batch, seq, H·d_head) -> (batch·H, seq, d_head); head h of batch row b is row b·H + h.
template <std::size_t H = dyn, class T, class S, class B>
var<T, detail::split_heads_shape<S, H>, B> split_heads(const var<T, S, B>& x, std::size_t heads = H) {
  return record("split_heads", split_heads<H>(x.value(), heads), [x, heads](const auto& dy) {
    x.accumulate(merge_heads<H>(dy, heads));
  }, x);
}

/// y (batch·H, seq, d_head) -> (batch, seq, H·d_head), the inverse of split_heads.
template <std::size_t H = dyn, class T, class S, class B>
var<T, detail::merge_heads_shape<S, H>, B> merge_heads(const var<T, S, B>& y, std::size_t heads = H) {
  return record("merge_heads", merge_heads<H>(y.value(), heads), [y, heads](const auto& dy) {
    y.accumulate(split_heads<H>(dy, heads));
  }, y);
}

}  // namespace moekit
