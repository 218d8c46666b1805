// moekit/autograd/ops/dropout.hpp — differentiable inverted dropout. Backward
// multiplies by the saved mask; nothing else is kept.
#pragma once

#include "../../tensor/ops/dropout.hpp"
#include "../tape.hpp"

namespace moekit {

/// x * mask with mask = dropout_mask(g, x.shape(), p); x itself (and no draw
/// from g) when !training or p == 0.
template <class T, class S, class B>
var<T, S, B> dropout(const var<T, S, B>& x, std::type_identity_t<T> p, rng& g, bool training = true) {
  detail::check_dropout_p("dropout", p);
  if (!training || p == T(0)) return x;
  auto mask = dropout_mask<T, B>(g, x.shape(), p);
  return record("dropout", x.value() * mask, [x, mask](const auto& dy) { x.accumulate(dy * mask); }, x);
}

}  // namespace moekit
