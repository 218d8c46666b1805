// moekit/coe/spec.hpp — a Chain-of-Experts layer from its sizes, as the
// reference builds it (ZihanWang314/CoE, modeling_coe.py): SwiGLU experts
// without biases, softmax top-K routers without bias, gates NOT renormalised,
// a sequence-level balance loss per router per iteration (alpha 0.001), an
// optional shared SwiGLU expert run every iteration. With iterations = 1 it is
// the reference's MoE baseline (same conventions), so MoE(K) and CoE(C, K)
// differ only in C:
//
//   rng g(0);
//   auto moe = coe::make_layer<float>(g, {.d_model = 128, .experts = 16, .expert_ff = 64, .top_k = 4,
//                                         .chain = {.iterations = 1}, .seq_len = 64});
//   auto coe = coe::make_layer<float>(g, {.d_model = 128, .experts = 16, .expert_ff = 64, .top_k = 2,
//                                         .chain = {.iterations = 2}, .seq_len = 64});
//   coe::cost_of(spec).expert_flops     // equal for the two above
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../moe/baselines.hpp"
#include "../moe/expert_bank.hpp"
#include "../moe/top_k.hpp"
#include "coe_layer.hpp"

namespace moekit::coe {

struct spec {
  std::size_t d_model = 0;
  std::size_t experts = 16;      // N routed experts (one pool for every iteration)
  std::size_t expert_ff = 0;     // hidden width of one routed expert
  std::size_t top_k = 2;         // K experts per token per iteration
  std::size_t shared_ff = 0;     // hidden width of the shared expert (0: none)
  options chain{};               // iterations C, norm placement, residuals
  bool shared_router = false;    // one router re-evaluated every iteration (the "noig" ablation)
  bool renormalize = false;      // the reference does not renormalise the K gates
  double sequence_balance_weight = 0.001;  // alpha of the seq-level aux loss (0: off)
  std::size_t seq_len = 0;       // tokens per sequence (needed when the aux loss is on)
};

/// The reference's layer type: top-K softmax routers over SwiGLU experts.
template <class T = float, backend B = cpu>
using reference_layer = layer<moe::top_k_router<dyn, dyn, dyn, T, B>, moe::swiglu_expert<dyn, dyn>, dyn, T, B>;

/// Parameters and forward FLOPs per token (moe::moe_cost's fields): every
/// iteration pays its router and K + shared experts; the norms' weights count
/// as parameters.
inline moe::moe_cost cost_of(const spec& s) noexcept {
  const std::size_t d = s.d_model, c = s.chain.iterations;
  const std::size_t routers = (s.shared_router ? 1 : c) * d * s.experts;
  const std::size_t expert = 3 * d * s.expert_ff, shared = 3 * d * s.shared_ff;
  const std::size_t norms = s.chain.norm == norm_placement::reference ? d
                            : s.chain.norm == norm_placement::pre_norm ? c * d
                                                                       : 0;
  return {.total_params = routers + s.experts * expert + shared + norms,
          .active_params = routers + std::min(s.experts, c * s.top_k) * expert + shared + norms,
          .expert_flops = c * 2 * (s.top_k * expert + shared),
          .router_flops = c * 2 * d * s.experts};
}

template <class T = float, backend B = cpu>
reference_layer<T, B> make_layer(rng& g, const spec& s) {
  if (s.d_model == 0 || s.experts == 0 || s.expert_ff == 0 || s.top_k == 0 || s.top_k > s.experts)
    throw value_error("coe::make_layer: d_model, experts, expert_ff must be >= 1 and top_k in [1, experts] (got " +
                      std::to_string(s.d_model) + ", " + std::to_string(s.experts) + ", " +
                      std::to_string(s.expert_ff) + ", " + std::to_string(s.top_k) + ")");
  if (s.sequence_balance_weight > 0 && s.seq_len == 0)
    throw value_error("coe::make_layer: the sequence-level balance loss needs seq_len");
  using layer_t = reference_layer<T, B>;
  const moe::top_k_options ro{.renormalize = s.renormalize, .sequence_balance_weight = s.sequence_balance_weight,
                              .seq_len = s.seq_len};
  std::vector<moe::top_k_router<dyn, dyn, dyn, T, B>> routers;
  for (std::size_t i = 0; i < (s.shared_router ? 1 : s.chain.iterations); ++i)
    routers.emplace_back(g, ro, s.d_model, s.experts, s.top_k);
  typename layer_t::bank_type bank(g, s.experts, s.d_model, s.expert_ff);
  std::optional<typename layer_t::shared_type> shared;
  if (s.shared_ff) shared.emplace(g, 1, s.d_model, s.shared_ff);
  return layer_t(std::move(routers), std::move(bank), std::move(shared), s.chain, s.d_model);
}

}  // namespace moekit::coe
