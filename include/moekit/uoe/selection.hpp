// moekit/uoe/selection.hpp — Union-of-Experts data selection: which tokens of
// each sample every expert (an MLP slice or an attention head) processes.
//
// A router's softmax probabilities p (T, E), T = batch · seq tokens, become a
// selection of c slots per (expert, sample): row r = e · batch + b of
//   position (E·batch, c)   original positions s in [0, seq), ascending (temporal order);
//                           a padding slot (causal mode) has position seq
//   token    (E·batch·c)    flat token b · seq + s of each slot, expert-major
//   weight   (E·batch·c)    the combine weight of each slot
//   length   (E·batch)      filled slots of each row (causal mode; else every row is full)
//
// The rules, by mode (docs/uoe.md):
//   faithful / gated: each token marks its top-k experts; the score of token
//     (b, s) for expert e is p·mark / (Σ_b' p·mark at (b', s, e) + ε) — the
//     reference's normalisation over the batch axis —; each expert keeps, per
//     sample, the top-c patches of l_p tokens by their summed score (ties:
//     score descending, position ascending), then sorts them by position.
//     faithful weights every slot 1 (gates only select: the router gets no
//     gradient); gated weights slot (b, s, e) by p[b·seq + s, e].
//   causal: each token marks its top-k experts; expert e keeps, per sample,
//     the first c tokens that marked it, in arrival order (patches of 1 token).
//     Whether token t is kept depends only on tokens <= t. Weighted by p, as
//     gated; unfilled slots are padding: weight 0, position seq, slot >= length.
// Every step is a tensor op on p's backend: nothing is read back to the host.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/constant.hpp"
#include "../autograd/ops/index.hpp"
#include "../autograd/ops/layout.hpp"
#include "../core/host_device.hpp"
#include "../moe/aux_loss.hpp"
#include "../tensor/ops/creation.hpp"
#include "../tensor/ops/routing.hpp"
#include "../tensor/ops/top_k.hpp"

namespace moekit::uoe {

/// How gates act (docs/uoe.md: the reference's quirks, reproduced or fixed).
enum class mode {
  faithful,  // gates only select, every output weighted 1: the router is never trained (the reference)
  gated,     // each expert output weighted by its gate: the router trains
  causal,    // as gated, but token t's selection depends only on tokens <= t (arrival order)
};

inline const char* mode_name(mode m) {
  switch (m) {
    case mode::gated: return "gated";
    case mode::causal: return "causal";
    case mode::faithful: break;
  }
  return "faithful";
}

/// What a UoE router selects, and how.
struct selection_options {
  uoe::mode mode = uoe::mode::faithful;
  std::size_t top_k = 2;       // experts each token (or unit) marks
  double capacity = 0.5;       // data selection: fraction of each sample's patches an expert keeps
  std::size_t patch = 1;       // l_p: tokens per patch (1: token-wise)
  double epsilon = 1e-8;       // in the batch-axis normalisation
  double balance_weight = 0;   // gated / causal: Switch load-balance loss on the top-k marks (0: off)
};

/// The selection of c slots per (expert, sample); see the header comment.
template <class T, backend B>
struct selection {
  std::size_t experts = 0, batch = 0, seq = 0, slots = 0;  // E, batch, seq, c
  tensor<index_t, shape<dyn, dyn>, B> position;  // (E·batch, c) original positions, ascending; seq: padding
  tensor<index_t, shape<dyn>, B> token;          // (E·batch·c) flat tokens b·seq + s
  tensor<index_t, shape<dyn>, B> length;         // (E·batch) filled slots, or undefined when all are full
  var<T, shape<dyn>, B> weight;                  // (E·batch·c)
  var<T, scalar_shape, B> aux_loss;              // weighted load-balance loss, or undefined
  tensor<T, shape<dyn, dyn>, B> logits;          // (T, E) the router's logits, for statistics (set by uoe::router)

  std::size_t rows() const noexcept { return experts * batch; }
  std::size_t size() const noexcept { return experts * batch * slots; }
};

namespace fn {
/// (T, E) position i -> 1 where token i / E marked expert i % E among its k (idx (T, k)), else 0.
template <class T>
struct marked {
  const index_t* idx;
  std::size_t k, experts;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t t = i / experts;
    const auto e = static_cast<index_t>(i % experts);
    for (std::size_t j = 0; j < k; ++j)
      if (idx[t * k + j] == e) return T(1);
    return T(0);
  }
};

/// (E·batch, m) patch scores: position (r, p) -> Σ over the l_p tokens s of
/// patch p of ps[b, s, e] / (Σ_b' ps[b', s, e] + ε), r = e·batch + b, ps = p·mark (T, E).
template <class T>
struct patch_score {
  const T* ps;
  std::size_t batch, seq, experts, patch;
  T epsilon;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const std::size_t patches = seq / patch, r = i / patches, p = i % patches;
    const std::size_t e = r / batch, b = r % batch;
    T total = T(0);
    for (std::size_t s = p * patch; s < (p + 1) * patch; ++s) {
      T den = epsilon;
      for (std::size_t bb = 0; bb < batch; ++bb) den += ps[(bb * seq + s) * experts + e];
      total += ps[(b * seq + s) * experts + e] / den;
    }
    return total;
  }
};

/// Sort key of a kept patch: row · patches + patch (rows stay whole, patches ascend).
struct row_major_key {
  const index_t* idx;  // (rows, kept)
  std::size_t kept, patches;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    return static_cast<index_t>(i / kept * patches) + idx[i];
  }
};

/// (rows, c) positions from the sorted keys of the kept patches: slot j of row r
/// is token j % l_p of the row's (j / l_p)-th kept patch.
struct patch_position {
  const index_t* sorted;  // (rows · kept) row · patches + patch
  std::size_t kept, patches, patch;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    const std::size_t c = kept * patch, r = i / c, j = i % c;
    const index_t key = sorted[r * kept + j / patch];
    return (key - static_cast<index_t>(r * patches)) * static_cast<index_t>(patch) + static_cast<index_t>(j % patch);
  }
};

/// (E·batch, seq) index 1 where token (b, s) marked expert e (row r = e·batch + b).
struct marked_rows {
  const index_t* idx;  // (T, k)
  std::size_t k, batch, seq, experts;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    const std::size_t r = i / seq, s = i % seq, e = r / batch, b = r % batch, t = b * seq + s;
    for (std::size_t j = 0; j < k; ++j)
      if (idx[t * k + j] == static_cast<index_t>(e)) return 1;
    return 0;
  }
};

/// Causal slots: slot j of row r is the row's j-th marking token in arrival
/// order (binary search in the scan of the marks), or `seq` past the row's
/// marks: a padding slot, at a position no token has.
struct arrival_position {
  const index_t* chose;  // (rows, seq) 0/1
  const index_t* scan;   // (rows · seq) exclusive scan of chose
  std::size_t seq, slots;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    const std::size_t r = i / slots, base_at = r * seq;
    const index_t j = static_cast<index_t>(i % slots), base = scan[base_at];
    // Marks in [0, s] of row r: scan[base_at + s] + chose[base_at + s] − base.
    std::size_t lo = 0, hi = seq;  // first s with more than j marks in [0, s]
    while (lo < hi) {
      const std::size_t mid = (lo + hi) / 2;
      if (scan[base_at + mid] + chose[base_at + mid] - base > j) hi = mid;
      else lo = mid + 1;
    }
    return static_cast<index_t>(lo);  // seq when the row has <= j marks
  }
};

/// (rows) min(c, marks of row r).
struct arrival_length {
  const index_t* chose;
  const index_t* scan;
  std::size_t seq, slots;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t r) const {
    const std::size_t last = r * seq + seq - 1;
    const index_t marks = scan[last] + chose[last] - scan[r * seq];
    return marks < static_cast<index_t>(slots) ? marks : static_cast<index_t>(slots);
  }
};

/// (rows · c) slot -> b · seq + position, r = e · batch + b; a padding slot
/// (position seq) -> the sample's first token (its weight is 0).
struct slot_token {
  const index_t* position;
  std::size_t batch, seq, slots;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    const index_t s = position[i];
    return static_cast<index_t>((i / slots % batch) * seq) + (s < static_cast<index_t>(seq) ? s : 0);
  }
};

/// (rows · c) slot -> token · E + e: where its gate sits in p (T, E).
struct slot_gate_index {
  const index_t* token;
  std::size_t batch, slots, experts;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    return token[i] * static_cast<index_t>(experts) + static_cast<index_t>(i / slots / batch);
  }
};

/// (rows · c) slot -> 1 when j < length[r], else 0.
template <class T>
struct slot_filled {
  const index_t* length;
  std::size_t slots;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    return static_cast<index_t>(i % slots) < length[i / slots] ? T(1) : T(0);
  }
};
}  // namespace fn

/// Slots per (expert, sample): floor(capacity · seq / l_p) patches of l_p
/// tokens, at least one patch.
inline std::size_t slots_of(const selection_options& o, std::size_t seq) {
  const std::size_t patches = seq / o.patch;
  const auto kept = static_cast<std::size_t>(std::floor(o.capacity * static_cast<double>(patches) + 1e-9));
  return std::max<std::size_t>(1, std::min(kept, patches)) * o.patch;
}

/// Checks options against E experts and sequences of `seq` tokens; errors name `op`.
inline void check_selection(const char* op, const selection_options& o, std::size_t experts, std::size_t seq) {
  const std::string at = std::string(op) + ": ";
  if (o.top_k == 0 || o.top_k > experts)
    throw value_error(at + "top_k " + std::to_string(o.top_k) + " must be in [1, " + std::to_string(experts) + "]");
  if (!(o.capacity > 0) || o.capacity > 1)
    throw value_error(at + "capacity " + std::to_string(o.capacity) + " must be in (0, 1]");
  if (o.patch == 0 || (seq > 0 && seq % o.patch != 0))
    throw value_error(at + "patch length " + std::to_string(o.patch) + " must divide the sequence length " +
                      std::to_string(seq));
  if (o.mode == mode::causal && o.patch != 1)
    throw value_error(at + "causal mode selects single tokens (patch length 1, got " + std::to_string(o.patch) +
                      "): a patch's score would see its later tokens");
  if (!(o.epsilon >= 0)) throw value_error(at + "epsilon must be >= 0");
}

/// The selection of probabilities p (T, E) over `batch` samples of `seq`
/// tokens (T = batch · seq, sample-major), as `o` says.
template <class T, class S, class B>
selection<T, B> select_tokens(const var<T, S, B>& p, std::size_t batch, std::size_t seq, const selection_options& o,
                              const char* op = "uoe::select_tokens") {
  static_assert(S::rank() == 2, "uoe::select_tokens: p must be (tokens, experts)");
  const std::size_t experts = p.extent(1);
  if (batch * seq != p.extent(0))
    throw shape_error(std::string(op) + ": p " + p.shape().str() + " for " + std::to_string(batch) +
                      " samples of " + std::to_string(seq) + " tokens");
  check_selection(op, o, experts, seq);
  selection<T, B> sel;
  sel.experts = experts, sel.batch = batch, sel.seq = seq, sel.slots = slots_of(o, seq);
  const std::size_t rows = sel.rows(), c = sel.slots, tokens = batch * seq;
  const auto choice = top_k(p.value(), o.top_k).indices;  // (T, k) each token's marks
  if (o.mode == mode::causal) {
    auto chose = generate<index_t, B>(shape<dyn>{rows * seq}, fn::marked_rows{choice.data(), o.top_k, batch, seq, experts});
    auto scan = exclusive_scan(chose);                                                                  // (rows·seq)
    sel.position = generate<index_t, B>(shape<dyn, dyn>{rows, c}, fn::arrival_position{chose.data(), scan.data(), seq, c});
    sel.length = generate<index_t, B>(shape<dyn>{rows}, fn::arrival_length{chose.data(), scan.data(), seq, c});
  } else {
    const std::size_t patches = seq / o.patch, kept = c / o.patch;
    auto mark = generate<T, B>(shape<dyn>{tokens * experts}, fn::marked<T>{choice.data(), o.top_k, experts});
    auto ps = p.value().reshape(shape<dyn>{tokens * experts}) * mark;  // (T·E) p on the marks
    auto score = generate<T, B>(shape<dyn, dyn>{rows, patches},
                                fn::patch_score<T>{ps.data(), batch, seq, experts, o.patch, static_cast<T>(o.epsilon)});
    const auto best = top_k(score, kept).indices;  // (rows, kept) by score, ties to the earlier patch
    auto keys = generate<index_t, B>(shape<dyn>{rows * kept}, fn::row_major_key{best.data(), kept, patches});
    const auto sorted = sort_pairs(keys, arange<index_t, B>(rows * kept)).first;  // temporal order per row
    sel.position = generate<index_t, B>(shape<dyn, dyn>{rows, c}, fn::patch_position{sorted.data(), kept, patches, o.patch});
  }
  sel.token = generate<index_t, B>(shape<dyn>{rows * c}, fn::slot_token{sel.position.data(), batch, seq, c});
  if (o.mode == mode::faithful) {
    sel.weight = constant(ones<T, B>(shape<dyn>{rows * c}));  // gates only select
    return sel;
  }
  auto at = generate<index_t, B>(shape<dyn>{rows * c}, fn::slot_gate_index{sel.token.data(), batch, c, experts});
  auto gate = reshape(gather_rows(reshape(p, shape<dyn, 1>{tokens * experts}), at), shape<dyn>{rows * c});  // (rows·c)
  if (o.mode == mode::causal)
    gate = gate * constant(generate<T, B>(shape<dyn>{rows * c}, fn::slot_filled<T>{sel.length.data(), c}));
  sel.weight = gate;
  if (o.balance_weight > 0)
    sel.aux_loss = moe::load_balance_loss(p, moe::expert_counts(choice, experts), choice.size()) *
                   static_cast<T>(o.balance_weight);
  return sel;
}

}  // namespace moekit::uoe
