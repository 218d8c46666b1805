// moekit/moe/moe_layer.hpp — moe::layer<Router, Expert>: route, gather rows
// in expert order, one grouped GEMM per expert matrix over the segments,
// gate-weighted scatter-add back; plus optional always-on shared experts.
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
#include <utility>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/index.hpp"
#include "aux_loss.hpp"
#include "combine.hpp"
#include "concepts.hpp"
#include "expert_bank.hpp"

namespace moekit::moe {

template <class Router, expert Expert, class T = float, backend B = cpu>
class layer {
  static_assert(router<Router, var<T, shape<dyn, Expert::d_model>, B>>,
                "moe::layer: Router does not model moe::router (needs route(x) returning a moe::routing, "
                "experts() and parameters(visit))");

 public:
  static constexpr std::size_t d_model = Expert::d_model;
  using bank_type = typename Expert::template bank<Router::experts_extent, T, B>;
  using shared_type = typename Expert::template bank<1, T, B>;

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
    auto rows = dispatch(x, plan);                      // (A, D) in expert order
    auto y = experts_(rows, plan.offsets);              // (A, D)
    auto combined = combine(y, plan, x.extent(0));      // (T, D)
    auto out = shape_as(combined, x);
    if (shared_) {
      auto all = detail::equal_offsets<B>(1, x.extent(0));  // one group: every row
      out = out + shape_as((*shared_)(x, all), x);
    }
    if (plan.aux_loss.value().defined()) out = add_auxiliary_loss(out, plan.aux_loss);
    last_ = std::move(plan);
    return out;
  }

  Router& router() noexcept { return router_; }
  bank_type& experts() noexcept { return experts_; }
  /// The routing plan of the last forward (counts, aux terms, logits).
  const routing<T, B>& last_routing() const noexcept { return last_; }
  void train(bool on = true) { router_.train(on); }

  template <class V>
  void parameters(V&& visit) {
    visit("router", router_);
    visit("experts", experts_);
    if (shared_) visit("shared", *shared_);
  }

 private:
  // The combine's result has a dyn leading extent; give it x's shape type back.
  template <class V, class S>
  static var<T, S, B> shape_as(const V& v, const var<T, S, B>& x) {
    if constexpr (std::is_same_v<typename V::shape_type, S>) return v;
    else return reshape(v, x.shape());
  }

  Router router_;
  bank_type experts_;
  std::optional<shared_type> shared_;
  routing<T, B> last_;
};

}  // namespace moekit::moe
