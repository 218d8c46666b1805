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
// add_aux_losses(plan, logits, scores, choice, options) adds the terms a
// router asks for to its plan (what top_k_router does; a custom router reuses it).
#pragma once

#include <cstddef>
#include <string>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/constant.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/logsumexp.hpp"
#include "../autograd/ops/math.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../core/host_device.hpp"
#include "../tensor/ops/creation.hpp"
#include "../tensor/ops/routing.hpp"
#include "routing.hpp"

namespace moekit::moe {

namespace detail {
/// Throws value_error naming `op` unless there are `n` counts.
template <class SC, class B>
void check_counts(const char* op, const tensor<index_t, SC, B>& counts, std::size_t n) {
  static_assert(SC::rank() == 1, "aux loss: counts must have rank 1");
  if (counts.size() != n)
    throw value_error(std::string(op) + ": " + std::to_string(counts.size()) + " counts, need " + std::to_string(n));
}

/// i -> counts[i] / total (0 when total is 0): the fraction of assignments.
template <class T>
struct count_fraction {
  const index_t* counts;
  T total;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const { return total != T(0) ? T(counts[i]) / total : T(0); }
};
/// i -> counts[i] · scale.
template <class T>
struct count_times {
  const index_t* counts;
  T scale;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const { return static_cast<T>(counts[i]) * scale; }
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
  auto f = generate<T, B>(shape<dyn>{e}, detail::count_fraction<T>{counts.data(), T(assignments)});  // (E) fraction routed
  auto mean_p = mean<0>(probs);                                                                       // (E)
  return sum(mean_p * constant(f)) * static_cast<T>(e);
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
  const T scale = static_cast<T>(e) / static_cast<T>(seq_len * k);
  auto ce = generate<T, B>(shape<dyn, dyn>{seqs, e}, detail::count_times<T>{counts_per_seq.data(), scale});  // (seqs, E)
  return sum(mean_p * constant(ce)) / static_cast<T>(seqs);
}

/// (E) assignments per expert of a top-k choice idx (T, k), counted on its backend.
template <class SI, class B>
tensor<index_t, shape<dyn>, B> expert_counts(const tensor<index_t, SI, B>& idx, std::size_t experts) {
  return histogram(idx, experts);
}

/// (sequences · E) assignments of each expert within each sequence of seq_len
/// consecutive tokens of a top-k choice idx (T, k): a histogram of the keys
/// sequence · E + expert, counted on idx's backend.
template <class SI, class B>
tensor<index_t, shape<dyn>, B> sequence_expert_counts(const tensor<index_t, SI, B>& idx, std::size_t experts,
                                                      std::size_t seq_len) {
  const std::size_t n = idx.size(), seqs = idx.extent(0) / seq_len;
  auto keys = generate<index_t, B>(shape<dyn>{n}, detail::sequence_expert_key{idx.data(), idx.extent(1) * seq_len, experts});  // (T·k)
  return histogram(keys, seqs * experts);
}

/// The auxiliary losses a router adds to its plan, by weight (0: off).
struct aux_loss_options {
  double load_balance_weight = 0;      // Switch load-balancing loss
  double z_loss_weight = 0;            // router z-loss
  double sequence_balance_weight = 0;  // sequence-level balance (needs seq_len)
  std::size_t seq_len = 0;             // tokens per sequence, for the sequence-level loss
};

/// Adds the terms `o` turns on to plan.aux_loss and plan.aux_terms, from the
/// router's logits (T, E), scores (T, E) (softmax or sigmoid of the logits)
/// and top-k choice idx (T, k). The terms stay where they were computed
/// (aux_term::value() reads one on demand): nothing is read back here.
template <class T, class B, class VL, class VS, class SI>
void add_aux_losses(routing<T, B>& plan, const VL& logits, const VS& scores, const tensor<index_t, SI, B>& idx,
                    const aux_loss_options& o, const char* router_name = "add_aux_losses") {
  auto add = [&](const char* name, double weight, const var<T, scalar_shape, B>& term) {
    plan.aux_terms.push_back({name, weight, term.value()});
    auto weighted = term * static_cast<T>(weight);
    plan.aux_loss = plan.aux_loss.value().defined() ? plan.aux_loss + weighted : weighted;
  };
  if (o.load_balance_weight > 0)
    add("load_balance", o.load_balance_weight, load_balance_loss(scores, expert_counts(idx, plan.experts), idx.size()));
  if (o.z_loss_weight > 0) add("z_loss", o.z_loss_weight, z_loss(logits));
  if (o.sequence_balance_weight > 0) {
    if (o.seq_len == 0 || plan.tokens % o.seq_len != 0)
      throw value_error(std::string(router_name) + ": sequence_balance_weight needs seq_len dividing the token count " +
                        std::to_string(plan.tokens));
    add("sequence_balance", o.sequence_balance_weight,
        sequence_balance_loss(scores, sequence_expert_counts(idx, plan.experts, o.seq_len), o.seq_len, idx.extent(1)));
  }
}

}  // namespace moekit::moe
