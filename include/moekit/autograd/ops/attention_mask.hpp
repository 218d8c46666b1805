// moekit/autograd/ops/attention_mask.hpp — differentiable masking of attention
// scores (rows, queries, keys) by an attention_mask (tensor/ops/attention_mask.hpp:
// causal on given positions, key lengths, key padding flags). The nodes keep
// the mask (handles) or the softmax output, never the scores.
#pragma once

#include "../../tensor/ops/attention_mask.hpp"
#include "../tape.hpp"

namespace moekit {

/// scores with hidden entries set to −inf (rows that see no key unchanged);
/// the gradient passes where visible and is 0 where hidden. Follow it by
/// softmax and zero the empty rows with attention_row_keep, or use masked_softmax.
template <class T, class S, class B>
var<T, S, B> mask_scores(const var<T, S, B>& scores, const attention_mask<B>& mask) {
  return record("mask_scores", mask_scores(scores.value(), mask), [scores, mask](const auto& dy) {
    scores.accumulate(mask_scores_backward(dy, mask));
  }, scores);
}

/// Softmax over the keys with hidden keys weighted 0; a query that sees no key
/// gets zero weights (not NaN) and passes no gradient. The node keeps the output.
template <class T, class S, class B>
var<T, S, B> masked_softmax(const var<T, S, B>& scores, const attention_mask<B>& mask) {
  auto y = masked_softmax(scores.value(), mask);
  return record("masked_softmax", y, [scores, y](const auto& dy) {
    scores.accumulate(masked_softmax_backward(y, dy));
  }, scores);
}

}  // namespace moekit
