// moekit/moe/concepts.hpp — what a router and an expert are: everything
// moe::layer and moe::apply_experts use, each requirement with its reason.
// A type that misses one fails with a diagnostic naming the concept and the
// unsatisfied requirement (e.g. "r.route(x)" or "bank.experts()").
//
// Optional members have defaulted traits:
//   Router::experts_extent  the expert count at compile time (default dyn);
//   router.train(bool)      training-only behaviour such as noise (default: none);
//   bank.slots()            a slot-to-weight map (default: one weight set per slot).
#pragma once

#include <concepts>
#include <cstddef>

#include "../autograd/var.hpp"
#include "../nn/layer.hpp"
#include "routing.hpp"

namespace moekit::moe {

template <backend B>
struct expert_segments;  // dispatch.hpp: what a plan-aware bank receives

/// A router maps a (tokens, d_model) input to a routing plan.
template <class R, class In>
concept router =
    // Its parameters (the gate weights) are trained and saved with the layer's.
    parameterized<R> &&
    // route(x) makes the plan: which expert each token goes to, with which gate.
    requires(R& r, const In& x) {
      { r.route(x) } -> routing_plan;
    } &&
    // experts() is the number of router slots E; the bank must serve as many.
    requires(const R& r) {
      { r.experts() } -> std::convertible_to<std::size_t>;
    };

/// The router's expert count at compile time: R::experts_extent, else dyn.
template <class R>
inline constexpr std::size_t experts_extent_v = [] {
  if constexpr (requires { { R::experts_extent } -> std::convertible_to<std::size_t>; }) return std::size_t{R::experts_extent};
  else return dyn;
}();

/// Switches a router between training and evaluation when it has train(bool).
template <class R>
void set_training(R& r, bool on) {
  if constexpr (requires { r.train(on); }) r.train(on);
}

/// A bank that runs rows grouped by weight set given the segment offsets.
template <class Bank, class Rows, class B>
concept offsets_bank = requires(Bank& bank, const Rows& rows, const group_offsets<B>& offsets) { bank(rows, offsets); };

/// A plan-aware bank: also sees each row's token and router slot (and the
/// plan's sub-segments), e.g. attention among the tokens an expert selected.
template <class Bank, class Rows, class B>
concept plan_aware_bank = requires(Bank& bank, const Rows& rows, const expert_segments<B>& seg) { bank(rows, seg); };

/// A bank whose G weight sets serve its E slots through a map (slots()).
template <class Bank>
concept shares_weights = requires(const Bank& bank) {
  bank.slots().identity();
  bank.slots().map();
  { bank.weight_sets() } -> std::convertible_to<std::size_t>;
};

/// A bank of experts: `Rows` grouped by weight set in, the same rows out.
template <class Bank, class Rows, class B>
concept expert_bank =
    // Its weights are trained and saved with the layer's.
    parameterized<Bank> &&
    // experts() is the number of router slots it serves (checked against the router).
    requires(const Bank& bank) {
      { bank.experts() } -> std::convertible_to<std::size_t>;
    } &&
    // bank(rows, offsets) or bank(rows, segments) runs every expert on its rows.
    (offsets_bank<Bank, Rows, B> || plan_aware_bank<Bank, Rows, B>);

/// An expert specification: its width, and `bank<E, T, B>`, E experts' weights
/// stacked along a leading axis, run on rows grouped by expert as one grouped
/// GEMM per weight matrix. Checked on the cpu float instantiation.
template <class X>
concept expert =
    // d_model is the width of the rows the experts take and give back.
    requires {
      { X::d_model } -> std::convertible_to<std::size_t>;
    } &&
    // bank<E, T, B> is the stacked-weights type moe::layer owns.
    requires { typename X::template bank<2, float, cpu>; } &&
    expert_bank<typename X::template bank<2, float, cpu>, var<float, shape<dyn, X::d_model>, cpu>, cpu>;

}  // namespace moekit::moe
