// moekit/moe/moe_layer.hpp — moe::layer<Router, Expert>: route, then
// apply_experts (gather rows in expert order, one grouped GEMM per expert
// matrix over the segments, gate-weighted scatter-add back; dispatch.hpp),
// plus optional always-on shared experts and the router's auxiliary loss.
// Backward runs through the same permutation (scatter-add <-> gather) and
// grouped GEMMs, and reaches x, every expert weight and the router.
//
//   using router_t = moe::top_k_router<256, 8, 1>;
//   using switch_mlp = moe::layer<router_t, moe::ffn_expert<256, 1024>>;
//   switch_mlp mlp(router_t(g, {.capacity_factor = 1.25, .load_balance_weight = 0.01}), switch_mlp::bank_type(g));
//   auto y = mlp(x);   // (tokens, 256); the router's aux loss rides on y's backward
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>

#include "../autograd/ops/auxiliary_loss.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "concepts.hpp"
#include "dispatch.hpp"
#include "expert_bank.hpp"

namespace moekit::moe {

template <class Router, expert Expert, class T = float, backend B = cpu>
class layer {
  static_assert(router<Router, var<T, shape<dyn, Expert::d_model>, B>>,
                "moe::layer: Router does not model moe::router (needs route(x) returning a moe::routing, "
                "experts() and parameters(visit))");

 public:
  static constexpr std::size_t d_model = Expert::d_model;
  using router_type = Router;
  using bank_type = typename Expert::template bank<experts_extent_v<Router>, T, B>;
  using shared_type = typename Expert::template bank<1, T, B>;
  using plan_type = decltype(std::declval<Router&>().route(std::declval<const var<T, shape<dyn, d_model>, B>&>()));

  /// A layer from a router and its experts; `shared`: an always-on expert
  /// applied to every token (DeepSeek-style shared experts; give it width
  /// n_shared · d_ff for n_shared shared experts).
  layer(Router router, bank_type experts, std::optional<shared_type> shared = std::nullopt)
      : router_(std::move(router)), experts_(std::move(experts)), shared_(std::move(shared)) {
    if (experts_.experts() != router_.experts())
      throw value_error("moe::layer: router has " + std::to_string(router_.experts()) + " experts, bank has " +
                        std::to_string(experts_.experts()));
  }

  /// x (T, D) -> (T, D). On a device the host reads nothing back while the
  /// layer runs when the router is dropless; a capacity factor costs one read
  /// (the number of kept assignments, to size the plan).
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) {
    auto plan = router_.route(x);
    auto out = apply_experts(experts_, x, plan);            // (T, D)
    if (shared_) out = out + apply_to_all(*shared_, x);     // (T, D)
    out = add_auxiliary_loss(out, plan.aux_loss);           // the router's balance terms ride on out's backward
    last_ = std::move(plan);
    return out;
  }

  Router& router() noexcept { return router_; }
  const Router& router() const noexcept { return router_; }
  bank_type& experts() noexcept { return experts_; }
  const bank_type& experts() const noexcept { return experts_; }
  /// The always-on expert, if any.
  const std::optional<shared_type>& shared() const noexcept { return shared_; }
  /// The routing plan of the last forward (counts, aux terms, logits, per-slot
  /// view); its vars live on that forward's tape (see routing::observed()).
  const plan_type& last_routing() const noexcept { return last_; }
  void train(bool on = true) { set_training(router_, on); }

  template <class V>
  void parameters(V&& visit) {
    visit("router", router_);
    visit("experts", experts_);
    if (shared_) visit("shared", *shared_);
  }

 private:
  Router router_;
  bank_type experts_;
  std::optional<shared_type> shared_;
  plan_type last_;
};

}  // namespace moekit::moe
