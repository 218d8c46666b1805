// moekit/moe/cast_router.hpp — a router that computes in its own element type
// under a layer of another: cast_router<R> takes the layer's x (bf16, half,
// double, ...), casts it to R's type U (usually float) and routes it there.
// The plan's gates stay in U; apply_experts casts them where they meet the
// expert outputs, and the gradient flows back through both casts.
//
//   using router_t = moe::cast_router<moe::top_k_router<dyn, dyn, 2, float, cuda>>;
//   moe::layer<router_t, moe::ffn_expert<dyn, dyn>, bf16, cuda> mlp(router_t(g, {}, d, e), bank);
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "../autograd/ops/cast.hpp"
#include "concepts.hpp"

namespace moekit::moe {

/// Router: a router with a value_type (its element type U).
template <class Router>
class cast_router {
 public:
  static constexpr std::size_t experts_extent = experts_extent_v<Router>;

  /// The wrapped router, built from the same arguments.
  template <class... Args>
  explicit cast_router(Args&&... args) : r_(std::forward<Args>(args)...) {}

  /// x (T, D) of any element type -> the wrapped router's plan, computed in its type.
  template <class T, class S, class B>
  auto route(const var<T, S, B>& x) {
    using U = typename Router::value_type;
    if constexpr (std::is_same_v<T, U>) return r_.route(x);
    else return r_.route(cast<U>(x));
  }

  std::size_t experts() const { return r_.experts(); }
  void train(bool on = true) { set_training(r_, on); }
  Router& inner() noexcept { return r_; }

  template <class V>
  void parameters(V&& visit) {
    r_.parameters(visit);  // the wrapped router's names, unchanged ("weight")
  }

 private:
  Router r_;
};

}  // namespace moekit::moe
