// moekit/moe/dispatch.hpp — the public frame every MoE layer is built on:
//
//   plan_from_choice(ids, gates, E, capacity)       (T, k) choice -> routing plan
//   plan_from_assignments(T, E, token, expert, gate) (token, expert, gate) triples -> plan
//   by_sequence(plan, seq_len)                      each expert's rows in temporal order,
//                                                   with one sub-segment per sequence
//   apply_experts(bank, x, plan)                    gather rows in expert order, run the
//                                                   bank's grouped GEMMs, gate-weighted
//                                                   scatter-add back: (T, D) -> (T, D)
//
// A plan orders its assignments by expert; within an expert, a choice plan
// keeps slot-major order (all first choices, then all second choices, each in
// token order) and a triples plan keeps the triples' order. A capacity keeps
// the first `capacity` assignments of each expert in that order and drops the
// rest (Switch, GShard). Every step is a tensor op on the plan's backend: on a
// device nothing is read back to the host, except, with a capacity, the
// number of kept assignments (to size the plan).
//
// Banks with shared weights (G weight sets serving E router slots, see
// expert_bank.hpp) receive the plan regrouped by weight set: the rows of all
// slots that share weight set g form one segment, so each shared weight runs
// one grouped GEMM and its gradient sums over those slots. A plan-aware bank
// (taking expert_segments instead of offsets) also sees each row's token and
// router slot, and the plan's sub-segments.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "../autograd/ops/cast.hpp"
#include "../autograd/ops/combine.hpp"
#include "../autograd/ops/index.hpp"
#include "../autograd/ops/layout.hpp"
#include "../core/host_device.hpp"
#include "../tensor/ops/elementwise.hpp"
#include "../tensor/ops/index.hpp"
#include "../tensor/ops/routing.hpp"
#include "../tensor/ops/transpose.hpp"
#include "concepts.hpp"
#include "routing.hpp"

namespace moekit::moe {

namespace fn {
/// Position i -> keys[i] · scale + values[i] (sort keys of two levels).
struct compound_key {
  const index_t* major;
  const index_t* minor;
  index_t scale;
  index_t divisor;  // minor is divided by it first (1: as is)
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const { return major[i] * scale + minor[i] / divisor; }
};
/// Position i -> table[index[i]].
struct lookup {
  const index_t* table;
  const index_t* index;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const { return table[index[i]]; }
};
}  // namespace fn

namespace detail {

template <class B>
using indices = tensor<index_t, shape<dyn>, B>;

/// The plan's assignments reordered by a stable sort on `keys` (A), and the
/// sorted keys.
template <class T, class B>
std::pair<routing<T, B>, indices<B>> reordered(const routing<T, B>& plan, const indices<B>& keys) {
  auto [sorted, perm] = sort_pairs(keys, arange<index_t, B>(keys.size()));
  routing<T, B> out = plan;
  out.token = gather_rows(plan.token, perm);
  out.expert = gather_rows(plan.expert, perm);
  out.source = gather_rows(plan.source, perm);
  out.gate = reshape(gather_rows(reshape(plan.gate, shape<dyn, 1>{plan.assignments()}), perm),
                     shape<dyn>{plan.assignments()});
  return {std::move(out), std::move(sorted)};
}

/// (bins + 1) bounds of the runs of sorted keys in [0, bins).
template <class B>
group_offsets<B> run_offsets(const indices<B>& sorted_keys, std::size_t bins) {
  return exclusive_scan(histogram(sorted_keys, bins + 1));  // bin `bins` stays empty: the total
}

/// Orders a (T, k) choice into plan.token/expert/offsets/dropped and returns
/// each kept assignment's position t·k + j in the choice; errors name `op`.
template <class T, class SI, class B>
indices<B> order_choice(const char* op, routing<T, B>& plan, const tensor<index_t, SI, B>& ids, std::size_t capacity) {
  const std::size_t tokens = ids.extent(0), k = ids.extent(1), n = tokens * k, e = plan.experts;
  if constexpr (B::host_accessible)
    for (std::size_t i = 0; i < n; ++i)
      if (ids.data()[i] < 0 || static_cast<std::size_t>(ids.data()[i]) >= e)
        throw value_error(std::string(op) + ": expert " + std::to_string(ids.data()[i]) + " at position " +
                          std::to_string(i) + " is out of range [0, " + std::to_string(e) + ")");
  // Slot-major keys: position j·T + t holds token t's j-th expert.
  auto keys = transpose(ids).reshape(shape<dyn>{n});                  // (T·k)
  auto [sorted_experts, sorted_slots] = sort_pairs(keys, arange<index_t, B>(n));
  auto counts = histogram(sorted_experts, e + 1);                     // (E + 1), the last bin empty
  auto offsets = exclusive_scan(counts);                              // (E + 1)
  auto kept_offsets = offsets;
  std::size_t kept = n;
  if (capacity) {
    kept_offsets = exclusive_scan(map(counts, moekit::fn::with_scalar<moekit::fn::min, index_t>{
                                                  static_cast<index_t>(capacity)}));
    kept = static_cast<std::size_t>(kept_offsets.rows(e, e + 1).template to<cpu>()[0]);  // the one host read
  }
  auto places = assignment_layout(tokens, k, sorted_experts, sorted_slots, offsets, kept_offsets, capacity, kept);
  plan.offsets = kept_offsets;
  plan.dropped = n - kept;
  plan.token = std::move(places.token);
  plan.expert = std::move(places.expert);
  return std::move(places.source);
}

}  // namespace detail

/// A plan from a (T, k) choice: ids (T, k) in [0, experts) and gates (T, k),
/// ordered by (expert, slot, token); capacity > 0 keeps that many assignments
/// per expert. The plan keeps the choice as its per-(token, slot) view.
template <class T, class SI, class SG, class B>
routing<T, B> plan_from_choice(const tensor<index_t, SI, B>& ids, const var<T, SG, B>& gates, std::size_t experts,
                               std::size_t capacity = 0) {
  static_assert(SI::rank() == 2 && SG::rank() == 2, "plan_from_choice: ids and gates must be (tokens, k)");
  if (ids.extent(0) != gates.extent(0) || ids.extent(1) != gates.extent(1))
    moekit::detail::shape_mismatch("plan_from_choice", ids.shape().str(), " with gates ", gates.shape().str(),
                                   "one gate per choice");
  if (experts == 0) throw value_error("plan_from_choice: no experts");
  const std::size_t tokens = ids.extent(0), k = ids.extent(1);
  routing<T, B> plan;
  plan.tokens = tokens, plan.experts = experts, plan.k = k;
  plan.source = detail::order_choice("plan_from_choice", plan, ids, capacity);          // (A)
  plan.choice = ids.reshape(shape<dyn, dyn>{tokens, k});                                // (T, k)
  plan.choice_gate = reshape(gates, shape<dyn, dyn>{tokens, k});                        // (T, k)
  auto flat = reshape(gates, shape<dyn, 1>{tokens * k});                                // (T·k, 1)
  plan.gate = reshape(gather_rows(flat, plan.source), shape<dyn>{plan.source.size()});  // (A)
  return plan;
}

/// A plan from A triples: token (A) in [0, tokens), expert (A) in [0, experts)
/// and gate (A), ordered by expert and, within an expert, as given; capacity > 0
/// keeps the first that many of each expert.
template <class T, class S1, class S2, class SG, class B>
routing<T, B> plan_from_assignments(std::size_t tokens, std::size_t experts, const tensor<index_t, S1, B>& token,
                                    const tensor<index_t, S2, B>& expert, const var<T, SG, B>& gate,
                                    std::size_t capacity = 0) {
  static_assert(S1::rank() == 1 && S2::rank() == 1 && SG::rank() == 1,
                "plan_from_assignments: token, expert and gate must have rank 1");
  const std::size_t a = token.size();
  if (expert.size() != a || gate.size() != a)
    moekit::detail::shape_mismatch("plan_from_assignments", token.shape().str(), " with ",
                                   expert.shape().str() + " and " + gate.shape().str(), "one expert and gate per token");
  moekit::detail::check_indices("plan_from_assignments", token, tokens, [&] { return "the tokens"; });
  // The triples as a (A, 1) choice of pseudo-tokens i: then each kept
  // assignment's source is its triple i, and its token is token[i].
  routing<T, B> plan;
  plan.tokens = tokens, plan.experts = experts;
  plan.source = detail::order_choice("plan_from_assignments", plan, expert.reshape(shape<dyn, 1>{a}), capacity);
  plan.token = gather_rows(token.reshape(shape<dyn>{a}), plan.source);
  plan.gate = reshape(gather_rows(reshape(gate, shape<dyn, 1>{a}), plan.source), shape<dyn>{plan.source.size()});
  return plan;
}

/// The plan with each expert's assignments in token order (temporal order
/// within a sequence) and one sub-segment per (expert, sequence):
/// sub_offsets (E · (T / seq_len) + 1). Tokens are sequence-major, seq_len
/// consecutive tokens per sequence.
template <class T, class B>
routing<T, B> by_sequence(const routing<T, B>& plan, std::size_t seq_len) {
  if (seq_len == 0 || plan.tokens % seq_len != 0)
    throw value_error("by_sequence: seq_len " + std::to_string(seq_len) + " must divide the token count " +
                      std::to_string(plan.tokens));
  const std::size_t sequences = plan.tokens / seq_len, a = plan.assignments();
  if (static_cast<double>(plan.experts) * static_cast<double>(plan.tokens) >= 2147483647.0)
    throw value_error("by_sequence: experts × tokens exceeds the index range");
  const auto t = static_cast<index_t>(plan.tokens);
  auto keys = generate<index_t, B>(shape<dyn>{a}, fn::compound_key{plan.expert.data(), plan.token.data(), t, 1});
  auto out = detail::reordered(plan, keys).first;
  auto seg = generate<index_t, B>(shape<dyn>{a}, fn::compound_key{out.expert.data(), out.token.data(),
                                                                   static_cast<index_t>(sequences),
                                                                   static_cast<index_t>(seq_len)});
  out.sub_offsets = detail::run_offsets(seg, plan.experts * sequences);
  out.sub_segments_per_expert = sequences;
  return out;
}

/// What a plan-aware bank receives besides its rows: for each row, its token
/// and router slot, and the segment bounds of its weight sets.
template <backend B>
struct expert_segments {
  std::size_t tokens = 0;                  // T
  group_offsets<B> offsets;                // (G + 1) rows of weight set g: [offsets[g], offsets[g + 1])
  tensor<index_t, shape<dyn>, B> token;    // (A) the token of each row
  tensor<index_t, shape<dyn>, B> expert;   // (A) its router slot
  group_offsets<B> sub_offsets;            // finer bounds (see by_sequence), or undefined
  std::size_t sub_segments_per_expert = 0;
};

namespace detail {

/// Runs a bank on rows grouped as `seg` says: a plan-aware bank gets the
/// segments, any other bank the offsets.
template <class Bank, class V, class B>
auto run_bank(Bank& bank, const V& rows, const expert_segments<B>& seg) {
  if constexpr (requires { bank(rows, seg); }) return bank(rows, seg);
  else return bank(rows, seg.offsets);
}

template <class T, class S, class B, class V>
var<T, S, B> shape_as(const V& v, const var<T, S, B>& x) {
  if constexpr (std::is_same_v<typename V::shape_type, S>) return v;
  else return reshape(v, x.shape());
}

}  // namespace detail

/// The plan as `bank` runs it: regrouped by weight set when the bank shares
/// weights between slots (stable: slot order, then the plan's order; offsets
/// (G + 1)), else the plan itself. apply_experts does this first.
template <class Bank, class T, class B>
routing<T, B> by_weight_set(const Bank& bank, const routing<T, B>& plan) {
  if constexpr (shares_weights<Bank>) {
    if (!bank.slots().identity()) {
      if (plan.sub_offsets.defined())
        throw value_error("by_weight_set: a bank with shared weights takes plans without sub-segments");
      auto keys = generate<index_t, B>(shape<dyn>{plan.assignments()},
                                       fn::lookup{bank.slots().map().data(), plan.expert.data()});
      auto [out, sorted_sets] = detail::reordered(plan, keys);
      out.offsets = detail::run_offsets(sorted_sets, bank.weight_sets());  // (G + 1)
      return out;
    }
  }
  return plan;
}

/// x (T, D) -> (A, D): the token row of every assignment of `plan`, in the plan's order.
template <class T, class S, class TG, class B>
auto dispatch(const var<T, S, B>& x, const routing<TG, B>& plan) {
  return gather_rows(x, plan.token);
}

/// y (A, D) expert outputs -> (tokens, D): out[token[a]] += gate[a] · y[a], the
/// gate applied inside the scatter-add (one pass, one tape node) and cast to
/// y's type first when the router computes in another (an fp32 router under
/// a bf16 or fp64 layer).
template <class T, class S, class TG, class B>
auto combine(const var<T, S, B>& y, const routing<TG, B>& plan, std::size_t tokens) {
  if constexpr (std::is_same_v<T, TG>) return weighted_scatter_add_rows(y, plan.token, tokens, plan.gate);
  else return weighted_scatter_add_rows(y, plan.token, tokens, cast<T>(plan.gate));
}

/// x (T, D) -> Σ over each token's kept assignments of gate · expert(x_t):
/// dispatch, the bank on its segments, combine.
template <class Bank, class T, class S, class TG, class B>
var<T, S, B> apply_experts(Bank& bank, const var<T, S, B>& x, const routing<TG, B>& plan) {
  static_assert(S::rank() == 2, "apply_experts: x must be (tokens, d_model)");
  if (plan.tokens != x.extent(0))
    throw value_error("apply_experts: the plan routes " + std::to_string(plan.tokens) + " tokens, x has " +
                      std::to_string(x.extent(0)));
  if (plan.experts != bank.experts())
    throw value_error("apply_experts: the plan has " + std::to_string(plan.experts) + " experts, the bank " +
                      std::to_string(bank.experts()));
  const auto p = by_weight_set(bank, plan);
  const expert_segments<B> seg{p.tokens, p.offsets, p.token, p.expert, p.sub_offsets, p.sub_segments_per_expert};
  auto rows = dispatch(x, p);                                  // (A, D) grouped by weight set
  auto y = detail::run_bank(bank, rows, seg);                  // (A, D)
  return detail::shape_as(combine(y, p, x.extent(0)), x);      // (T, D)
}

/// x (T, D) through a bank of one weight set on every row (a shared expert).
template <class Bank, class T, class S, class B>
var<T, S, B> apply_to_all(Bank& bank, const var<T, S, B>& x) {
  const std::size_t tokens = x.extent(0);
  const expert_segments<B> seg{tokens, arange<index_t, B>(2, index_t{0}, static_cast<index_t>(tokens)),  // {0, T}
                               arange<index_t, B>(tokens), zeros<index_t, B>(shape<dyn>{tokens}), {}, 0};
  return detail::shape_as(detail::run_bank(bank, x, seg), x);
}

}  // namespace moekit::moe
