// moekit/moe/aux_loss.hpp — the routers' auxiliary losses, each a scalar var
// whose gradient reaches the router through the probabilities (or logits):
//   load_balance_loss  Switch/GShard: E · Σ_e f_e · P_e, f_e the fraction of
//                      assignments routed to e (no gradient), P_e the mean
//                      router probability of e.
//   z_loss             ST-MoE: mean over tokens of logsumexp(logits)².
//   sequence_balance_loss  DeepSeek/CoE: mean over sequences b of
//                      Σ_e ce[b, e] · mean_s P[b, s, e], ce[b, e] = count of e in
//                      sequence b / (S · k / E).
// The counts are index tensors on the probabilities' backend (expert_counts,
// sequence_expert_counts count a top-k choice there), so on a device the
// losses are built without the host reading anything.
// And add_auxiliary_loss(y, aux): y unchanged, but backward also sends a
// gradient of 1 into aux, so a layer's aux losses join any loss built on y.
#pragma once

#include <cstddef>
#include <string>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/logsumexp.hpp"
#include "../autograd/ops/math.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../core/host_device.hpp"

namespace moekit::moe {

namespace detail {
/// A constant var on x's tape (no gradient flows into it).
template <class T, class S, class B, class V>
var<T, S, B> constant_like(const V& x, tensor<T, S, B> value) {
  return var<T, S, B>(std::move(value), x.tape_ptr() ? x.tape_ptr() : tape::current(), nullptr);
}

/// Throws value_error naming `op` unless there are `n` counts.
template <class SC, class B>
void check_counts(const char* op, const tensor<index_t, SC, B>& counts, std::size_t n) {
  static_assert(SC::rank() == 1, "aux loss: counts must have rank 1");
  if (counts.size() != n)
    throw value_error(std::string(op) + ": " + std::to_string(counts.size()) + " counts, need " + std::to_string(n));
}

/// count -> count / total (0 when total is 0): the fraction of assignments.
template <class T>
struct count_fraction {
  T total;
  MOEKIT_HOST_DEVICE T operator()(index_t c) const { return total != T(0) ? T(c) / total : T(0); }
};
/// count -> count · scale.
template <class T>
struct count_times {
  T scale;
  MOEKIT_HOST_DEVICE T operator()(index_t c) const { return static_cast<T>(c) * scale; }
};
/// Position i of a row-major (T, k) choice -> (i / (k · seq_len)) · E + idx[i]:
/// its sequence's block of E bins, then its expert.
struct sequence_expert_key {
  const index_t* idx;
  std::size_t per_sequence;  // k · seq_len positions per sequence
  std::size_t experts;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    return static_cast<index_t>(i / per_sequence * experts) + idx[i];
  }
};
}  // namespace detail

/// probs (T, E); counts (E): assignments per expert out of `assignments`.
template <class T, class S, class SC, class B>
var<T, scalar_shape, B> load_balance_loss(const var<T, S, B>& probs, const tensor<index_t, SC, B>& counts,
                                          std::size_t assignments) {
  const std::size_t e = probs.extent(1);
  detail::check_counts("load_balance_loss", counts, e);
  tensor<T, shape<dyn>, B> f(shape<dyn>{e});  // (E) fraction routed to each expert
  kernels<B>::map(e, f.data(), detail::count_fraction<T>{T(assignments)}, counts.data());
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
template <class T, class S, class SC, class B>
var<T, scalar_shape, B> sequence_balance_loss(const var<T, S, B>& probs, const tensor<index_t, SC, B>& counts_per_seq,
                                              std::size_t seq_len, std::size_t k) {
  const std::size_t e = probs.extent(1), seqs = probs.extent(0) / seq_len;
  detail::check_counts("sequence_balance_loss", counts_per_seq, seqs * e);
  auto p = reshape(probs, shape<dyn, dyn, dyn>{seqs, seq_len, e});  // (seqs, S, E)
  auto mean_p = mean<1>(p);                                          // (seqs, E)
  tensor<T, shape<dyn, dyn>, B> ce(shape<dyn, dyn>{seqs, e});        // (seqs, E)
  const T scale = static_cast<T>(e) / static_cast<T>(seq_len * k);
  kernels<B>::map(seqs * e, ce.data(), detail::count_times<T>{scale}, counts_per_seq.data());
  return sum(mean_p * detail::constant_like(probs, ce)) / static_cast<T>(seqs);
}

/// (E) assignments per expert of a top-k choice idx (T, k), counted on its backend.
template <class SI, class B>
tensor<index_t, shape<dyn>, B> expert_counts(const tensor<index_t, SI, B>& idx, std::size_t experts) {
  tensor<index_t, shape<dyn>, B> counts(shape<dyn>{experts});
  kernels<B>::histogram(idx.size(), idx.data(), experts, counts.data());
  return counts;
}

/// (sequences · E) assignments of each expert within each sequence of seq_len
/// consecutive tokens of a top-k choice idx (T, k): a histogram of the keys
/// sequence · E + expert, counted on idx's backend.
template <class SI, class B>
tensor<index_t, shape<dyn>, B> sequence_expert_counts(const tensor<index_t, SI, B>& idx, std::size_t experts,
                                                      std::size_t seq_len) {
  const std::size_t n = idx.size(), seqs = idx.extent(0) / seq_len;
  tensor<index_t, shape<dyn>, B> keys(shape<dyn>{n});  // (T·k)
  kernels<B>::generate(n, keys.data(), detail::sequence_expert_key{idx.data(), idx.extent(1) * seq_len, experts});
  tensor<index_t, shape<dyn>, B> counts(shape<dyn>{seqs * experts});
  kernels<B>::histogram(n, keys.data(), seqs * experts, counts.data());
  return counts;
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
