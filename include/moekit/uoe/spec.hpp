// moekit/uoe/spec.hpp — parameters and forward FLOPs per token of the UoE
// layers, counted from their shapes (2 FLOPs per multiply-add, matrix products
// only: norms, softmax, GELU, gathers and scatters are not counted), in
// moe::moe_cost's fields so they add up with moe::cost_of and coe::cost_of.
//
// A data selection keeps c = slots_of(select, seq) slots per (expert, sample),
// whatever the data, so the work per token is fixed by the shapes:
//
//   slots per token     = E · c / seq    (data selection; causal padding slots are computed too)
//                       = top_k          (UoME's expert selection)
//
//   uoe::uome (E slices of width Fe = F / E):
//     expert_flops = slots per token · 2 · 2·d·Fe     (W1 slice and W2 slice)
//     router_flops = 2·d·E
//   uoe::smha (H heads of dh = d / H, c slots per head and sample):
//     expert_flops = H·c/seq · 2 · 4·d·dh              (Wq, Wk, Wv, Wo of the head, per kept slot)
//                  + H·c²/seq · 2 · 2·dh               (q·kᵀ and weights·v over the c kept keys)
//     router_flops = 2·d·H
//
// With capacity 1 (c = seq), top_k = E and one patch per token a selection
// keeps everything, and the counts are the dense layer's: 4·d·F for the MLP,
// 8·d² + 4·seq·d for the attention (plus the router, which a dense layer has
// not). Per-token figures that are not whole numbers are rounded.
//
//   const auto mlp = uoe::cost_of(uoe::uome_options{.d_model = 64, .d_ff = 512, .experts = 4}, 64);
//   const auto att = uoe::cost_of(uoe::smha_options{.d_model = 64, .heads = 4}, 64);
//   mlp.expert_flops;   // 4 · 32 / 64 · 4 · 64 · 128 = 65536: the dense d -> 256 -> d MLP's
#pragma once

#include <cmath>
#include <cstddef>

#include "../moe/baselines.hpp"
#include "selection.hpp"
#include "smha.hpp"
#include "uome.hpp"

namespace moekit::uoe {

/// Expert slots each token pays for on average: E · c / seq for a data
/// selection over sequences of `seq` tokens (c = slots_of), top_k for an
/// expert selection.
inline double slots_per_token(std::size_t experts, const selection_options& s, std::size_t seq,
                              paradigm p = paradigm::data) {
  if (p == paradigm::expert) return static_cast<double>(s.top_k);
  if (seq == 0) return 0;
  return static_cast<double>(experts * slots_of(s, seq)) / static_cast<double>(seq);
}

namespace detail {
inline std::size_t rounded(double v) noexcept { return static_cast<std::size_t>(std::llround(v)); }
}  // namespace detail

/// A UoME over sequences of `seq` tokens. total_params: router (d·E + E),
/// the slices (2·d·F + F) and b2 (d); active_params: the router, b2 and the
/// slots per token's share of one slice each.
inline moe::moe_cost cost_of(const uome_options& o, std::size_t seq) noexcept {
  const std::size_t d = o.d_model, e = o.experts, fe = e ? o.d_ff / e : 0;
  const double slots = slots_per_token(e, o.select, seq, o.paradigm);
  const std::size_t router = d * e + e, slice = 2 * d * fe + fe;
  return {.total_params = router + e * slice + d,
          .active_params = router + detail::rounded(slots * static_cast<double>(slice)) + d,
          .expert_flops = detail::rounded(slots * static_cast<double>(2 * 2 * d * fe)),
          .router_flops = 2 * d * e};
}

/// Selective multi-head attention over sequences of `seq` tokens (see the
/// header comment); the scores and weighted values are in expert_flops.
/// total_params: router (d·H + H), Wq/Wk/Wv/Wo (4·d²), their biases (3·d + d).
inline moe::moe_cost cost_of(const smha_options& o, std::size_t seq) noexcept {
  const std::size_t d = o.d_model, h = o.heads, dh = h ? d / h : 0;
  if (seq == 0 || h == 0) return {};
  const double c = static_cast<double>(slots_of(o.select, seq)), per_token = static_cast<double>(h) * c / static_cast<double>(seq);
  const std::size_t router = d * h + h, head = 4 * d * dh + 3 * dh;
  const double flops = per_token * static_cast<double>(2 * 4 * d * dh) +
                       static_cast<double>(h) * c * c / static_cast<double>(seq) * static_cast<double>(2 * 2 * dh);
  return {.total_params = router + h * head + d,
          .active_params = router + detail::rounded(per_token * static_cast<double>(head)) + d,
          .expert_flops = detail::rounded(flops),
          .router_flops = 2 * d * h};
}

}  // namespace moekit::uoe
