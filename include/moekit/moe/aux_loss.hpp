// moekit/moe/aux_loss.hpp — the routers' auxiliary losses, each a scalar var
// whose gradient reaches the router through the probabilities (or logits):
//   load_balance_loss  Switch/GShard: E · Σ_e f_e · P_e, f_e the fraction of
//                      assignments routed to e (no gradient), P_e the mean
//                      router probability of e.
//   z_loss             ST-MoE: mean over tokens of logsumexp(logits)².
//   sequence_balance_loss  DeepSeek/CoE: mean over sequences b of
//                      Σ_e ce[b, e] · mean_s P[b, s, e], ce[b, e] = count of e in
//                      sequence b / (S · k / E).
// And add_auxiliary_loss(y, aux): y unchanged, but backward also sends a
// gradient of 1 into aux, so a layer's aux losses join any loss built on y.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/logsumexp.hpp"
#include "../autograd/ops/math.hpp"
#include "../autograd/ops/reduce.hpp"

namespace moekit::moe {

namespace detail {
/// A constant var on x's tape (no gradient flows into it).
template <class T, class S, class B, class V>
var<T, S, B> constant_like(const V& x, tensor<T, S, B> value) {
  return var<T, S, B>(std::move(value), x.tape_ptr() ? x.tape_ptr() : tape::current(), nullptr);
}
}  // namespace detail

/// probs (T, E); counts (E): assignments per expert out of `assignments`.
template <class T, class S, class B>
var<T, scalar_shape, B> load_balance_loss(const var<T, S, B>& probs, const std::vector<std::size_t>& counts,
                                          std::size_t assignments) {
  const std::size_t e = probs.extent(1);
  tensor<T, shape<dyn>, B> f(shape<dyn>{e});  // (E) fraction routed to each expert
  for (std::size_t i = 0; i < e; ++i) f[i] = assignments ? T(counts[i]) / T(assignments) : T(0);
  auto mean_p = mean<0>(probs);  // (E)
  return sum(mean_p * detail::constant_like(probs, f)) * static_cast<T>(e);
}

/// logits (T, E): mean_t logsumexp(logits_t)².
template <class T, class S, class B>
var<T, scalar_shape, B> z_loss(const var<T, S, B>& logits) {
  auto lse = logsumexp_rows(logits);  // (T)
  return mean(lse * lse);
}

/// probs (T, E) with T = sequences · seq_len, token-major per sequence; counts_per_seq
/// (sequences · E) assignments of each expert within each sequence; k slots per token.
template <class T, class S, class B>
var<T, scalar_shape, B> sequence_balance_loss(const var<T, S, B>& probs, const std::vector<std::size_t>& counts_per_seq,
                                              std::size_t seq_len, std::size_t k) {
  const std::size_t e = probs.extent(1), seqs = probs.extent(0) / seq_len;
  auto p = reshape(probs, shape<dyn, dyn, dyn>{seqs, seq_len, e});  // (seqs, S, E)
  auto mean_p = mean<1>(p);                                          // (seqs, E)
  tensor<T, shape<dyn, dyn>, B> ce(shape<dyn, dyn>{seqs, e});        // (seqs, E)
  const T scale = static_cast<T>(e) / static_cast<T>(seq_len * k);
  for (std::size_t i = 0; i < seqs * e; ++i) ce[i] = static_cast<T>(counts_per_seq[i]) * scale;
  return sum(mean_p * detail::constant_like(probs, ce)) / static_cast<T>(seqs);
}

/// y, whose backward also feeds d(aux) = 1 (CoE's AddAuxiliaryLoss).
template <class T, class S, class B>
var<T, S, B> add_auxiliary_loss(const var<T, S, B>& y, const var<T, scalar_shape, B>& aux) {
  return record("add_auxiliary_loss", y.value(), [y, aux](const auto& dy) {
    y.accumulate(dy);
    aux.accumulate(ones<T, B>(scalar_shape{}));
  }, y, aux);
}

}  // namespace moekit::moe
