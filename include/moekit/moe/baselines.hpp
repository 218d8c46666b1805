// moekit/moe/baselines.hpp — the baseline MoEs, each a drop-in replacement of
// a dense FFN d → ff → d (GELU, biases) with the same ACTIVE expert weights per
// token, so a comparison changes only how the FFN's capacity is split:
//
//   baseline        experts     expert width  routing                   capacity            load balance
//   switch_top1     E           ff            top-1, softmax            1.25 (drops)        0.01
//   gshard_top2     E           ff / 2        top-2, softmax, renorm.   2.0 (see below)     0.01
//   expert_choice   E           ff / 2        each expert its top c     cf = 2: c = 2T / E  — (balanced by construction)
//   deepseek        m·E         ff / m        top-(m − s), softmax      dropless            0.01
//                   + s shared experts of ff / m, always on (one bank of width s·ff / m)
//
// Active expert weights per token (matrices only): the dense FFN has 2·d·ff.
//   Switch:   1 expert  · 2·d·ff                   = 2·d·ff
//   GShard:   2 experts · 2·d·(ff/2)               = 2·d·ff
//   EC:       cf = 2 experts per token on average · 2·d·(ff/2) = 2·d·ff
//             (exact in total: E experts · c tokens = 2T assignments)
//   DeepSeek: (m − s) routed + s shared, each 2·d·(ff/m) = 2·d·ff
// What is not matched: the router's d·E weights (every token pays them) and
// the second-layer biases, one d-vector per active expert (k·(F + d) bias
// entries instead of ff + d).
//
// GShard's capacity: with capacity_factor 2.0 each expert keeps up to
// ceil(2 · T · k / E) assignments, twice its fair share of the T·k
// assignments (the GShard paper's 2N/E corresponds to 1.0 here), so drops are
// rare but an expert that gets more than twice its share still drops, as in GShard.
//
//   rng g(0);
//   auto ffn = moe::make_switch<float>(g, {.d_model = 128, .d_ff = 512});   // (T, 128) -> (T, 128)
//   auto cost = moe::cost_of(moe::baseline_layout_of(moe::baseline::switch_top1, {.d_model = 128, .d_ff = 512}));
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "../core/error.hpp"
#include "expert_bank.hpp"
#include "expert_choice.hpp"
#include "moe_layer.hpp"
#include "top_k.hpp"

namespace moekit::moe {

enum class baseline { switch_top1, gshard_top2, expert_choice, deepseek };

/// The dense FFN a baseline replaces, and how to split it.
struct baseline_spec {
  std::size_t d_model = 0;         // d: the FFN's input and output width
  std::size_t d_ff = 0;            // ff: the dense FFN's hidden width (active width to match)
  std::size_t experts = 8;         // E (DeepSeek: before the fine split)
  std::size_t granularity = 4;     // m: DeepSeek's fine experts per coarse expert
  std::size_t shared_experts = 1;  // s: DeepSeek's always-on experts (each ff / m wide)
};

/// The resolved sizes and settings of one baseline.
struct baseline_layout {
  baseline kind = baseline::switch_top1;
  std::string name;
  std::size_t d_model = 0, experts = 0;
  std::size_t k = 0;                // top-k (expert choice: 0)
  double capacity_factor = 0;       // 0: dropless
  double load_balance_weight = 0;   // Switch load-balancing loss weight
  std::size_t expert_ff = 0;        // hidden width of one routed expert
  std::size_t shared_ff = 0;        // hidden width of the shared bank (0: none)
  double active_experts = 0;        // routed experts per token (expert choice: on average)
};

inline const char* baseline_name(baseline b) noexcept {
  switch (b) {
    case baseline::switch_top1: return "switch";
    case baseline::gshard_top2: return "gshard";
    case baseline::expert_choice: return "expert_choice";
    case baseline::deepseek: return "deepseek";
  }
  return "?";
}

namespace detail {
inline std::size_t split_width(const char* what, std::size_t ff, std::size_t parts) {
  if (parts == 0 || ff % parts != 0 || ff / parts == 0)
    throw value_error(std::string("baseline_layout_of: ") + what + ": d_ff = " + std::to_string(ff) +
                      " must be a positive multiple of " + std::to_string(parts));
  return ff / parts;
}
}  // namespace detail

/// The sizes of baseline `b` matching the dense FFN of `s` (see the table above).
inline baseline_layout baseline_layout_of(baseline b, const baseline_spec& s) {
  if (s.d_model == 0 || s.d_ff == 0 || s.experts == 0)
    throw value_error("baseline_layout_of: d_model, d_ff and experts must be >= 1");
  baseline_layout l{.kind = b, .name = baseline_name(b), .d_model = s.d_model, .experts = s.experts};
  switch (b) {
    case baseline::switch_top1:
      l.k = 1, l.capacity_factor = 1.25, l.load_balance_weight = 0.01, l.expert_ff = s.d_ff;
      break;
    case baseline::gshard_top2:
      if (s.experts < 2) throw value_error("baseline_layout_of: gshard needs >= 2 experts");
      l.k = 2, l.capacity_factor = 2.0, l.load_balance_weight = 0.01;
      l.expert_ff = detail::split_width("gshard", s.d_ff, 2);
      break;
    case baseline::expert_choice:
      l.capacity_factor = 2.0, l.expert_ff = detail::split_width("expert_choice", s.d_ff, 2);
      break;
    case baseline::deepseek:
      if (s.shared_experts >= s.granularity)
        throw value_error("baseline_layout_of: deepseek: shared_experts = " + std::to_string(s.shared_experts) +
                          " must be below granularity = " + std::to_string(s.granularity));
      l.experts = s.experts * s.granularity;
      l.k = s.granularity - s.shared_experts, l.load_balance_weight = 0.01;
      l.expert_ff = detail::split_width("deepseek", s.d_ff, s.granularity);
      l.shared_ff = l.expert_ff * s.shared_experts;
      break;
  }
  l.active_experts = b == baseline::expert_choice ? l.capacity_factor : static_cast<double>(l.k);
  return l;
}

/// Parameters and forward FLOPs of one FFN replacement, per token.
struct moe_cost {
  std::size_t total_params = 0;   // router + every expert + shared bank (weights and biases)
  std::size_t active_params = 0;  // used per token: router + active experts + shared (expert choice: on average)
  std::size_t expert_flops = 0;   // forward FLOPs per token in the expert matrices (2 per multiply-add)
  std::size_t router_flops = 0;   // forward FLOPs per token of the router's d × E product
};

/// A dense FFN d → ff → d with biases (the reference the baselines match).
inline moe_cost dense_ffn_cost(std::size_t d, std::size_t ff) noexcept {
  const std::size_t p = 2 * d * ff + ff + d;
  return {p, p, 4 * d * ff, 0};
}

inline moe_cost cost_of(const baseline_layout& l) noexcept {
  const std::size_t d = l.d_model;
  const auto expert = [d](std::size_t f) { return 2 * d * f + f + d; };  // w1, b1, w2, b2
  const std::size_t router = d * l.experts, shared = l.shared_ff ? expert(l.shared_ff) : 0;
  const double active = l.active_experts * static_cast<double>(expert(l.expert_ff));
  const double active_matrix = l.active_experts * static_cast<double>(2 * d * l.expert_ff) +
                               static_cast<double>(2 * d * l.shared_ff);
  return {router + l.experts * expert(l.expert_ff) + shared,
          router + static_cast<std::size_t>(active + 0.5) + shared,
          2 * static_cast<std::size_t>(active_matrix + 0.5), 2 * router};
}

/// The layer types of the baselines (GELU FFN experts with biases, sizes at run time).
using baseline_expert = ffn_expert<dyn, dyn, activation::gelu, true>;
template <class T = float, backend B = cpu>
using token_choice_moe = layer<top_k_router<dyn, dyn, dyn, T, B>, baseline_expert, T, B>;
template <class T = float, backend B = cpu>
using expert_choice_moe = layer<expert_choice_router<dyn, dyn, T, B>, baseline_expert, T, B>;

/// A top-k baseline (Switch, GShard, DeepSeek) from its layout.
template <class T = float, backend B = cpu>
token_choice_moe<T, B> make_token_choice(rng& g, const baseline_layout& l) {
  if (l.kind == baseline::expert_choice) throw value_error("make_token_choice: expert_choice is not a top-k baseline");
  using moe_t = token_choice_moe<T, B>;
  top_k_router<dyn, dyn, dyn, T, B> router(
      g, {.capacity_factor = l.capacity_factor, .load_balance_weight = l.load_balance_weight}, l.d_model, l.experts, l.k);
  typename moe_t::bank_type bank(g, l.experts, l.d_model, l.expert_ff);
  std::optional<typename moe_t::shared_type> shared;
  if (l.shared_ff) shared.emplace(g, 1, l.d_model, l.shared_ff);
  return moe_t(std::move(router), std::move(bank), std::move(shared));
}

template <class T = float, backend B = cpu>
token_choice_moe<T, B> make_switch(rng& g, const baseline_spec& s) {
  return make_token_choice<T, B>(g, baseline_layout_of(baseline::switch_top1, s));
}
template <class T = float, backend B = cpu>
token_choice_moe<T, B> make_gshard(rng& g, const baseline_spec& s) {
  return make_token_choice<T, B>(g, baseline_layout_of(baseline::gshard_top2, s));
}
template <class T = float, backend B = cpu>
token_choice_moe<T, B> make_deepseek(rng& g, const baseline_spec& s) {
  return make_token_choice<T, B>(g, baseline_layout_of(baseline::deepseek, s));
}
template <class T = float, backend B = cpu>
expert_choice_moe<T, B> make_expert_choice(rng& g, const baseline_spec& s) {
  const auto l = baseline_layout_of(baseline::expert_choice, s);
  using moe_t = expert_choice_moe<T, B>;
  expert_choice_router<dyn, dyn, T, B> router(g, {.capacity_factor = l.capacity_factor}, l.d_model, l.experts);
  return moe_t(std::move(router), typename moe_t::bank_type(g, l.experts, l.d_model, l.expert_ff));
}

}  // namespace moekit::moe
