// moekit/dist/expert_parallel.hpp — dist::expert_parallel<Router, Expert>: the
// moe::layer of one rank among P, holding G/P of the G expert weight sets
// (G = E, or fewer for a merged bank) and a replica of the router and the
// shared experts. A forward routes this rank's tokens, exchanges per-set
// counts (one all-to-all), sends each row to the rank owning its weight set
// (one all-to-all-v), runs the local sets with the grouped GEMMs, sends the
// results back (one all-to-all-v) and combines them with the gates; backward
// runs the same path in reverse, so each rank's expert weights receive the
// gradient of every token routed to them, from every rank.
//
//   dist::environment mpi(argc, argv);
//   auto comm = dist::communicator::world();
//   rng g(seed);                                           // the same seed on every rank
//   moe::layer<router_t, expert_t> full(router_t(g, o), typename decltype(full)::bank_type(g));
//   auto ep = dist::expert_parallel<router_t, expert_t>::shard(comm, std::move(full));
//   auto y = ep(x_local);                                  // (T_local, D)
//
// Routing is local, as in GShard, Switch and DeepSpeed-MoE: each rank's
// tokens form one routing group, so capacity limits, expert choice and the
// router's aux loss act on a rank's tokens (P ranks with T tokens each equal
// one process running the layer on each rank's T tokens in turn). The
// router's and shared experts' gradients are per rank: all-reduce them with
// dist::synchronize_gradients before the optimizer step.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/auxiliary_loss.hpp"
#include "../moe/dispatch.hpp"
#include "../moe/moe_layer.hpp"
#include "communicator.hpp"
#include "exchange.hpp"

namespace moekit::dist {

namespace detail {
/// The slot -> weight-set map seen as a bank, for moe::by_weight_set.
template <backend B>
struct slot_view {
  const moe::slot_map<B>* m;
  const moe::slot_map<B>& slots() const noexcept { return *m; }
  std::size_t weight_sets() const noexcept { return m->weight_sets(); }
};

/// Rows [first, first + count) of every stacked parameter of `from`, as a
/// bank of `count` weight sets shaped like it. Local is constructed like
/// moekit's banks, (rng, sets, d_model, d_ff), and then overwritten.
template <class Local, class Full>
Local slice_bank(Full& from, std::size_t first, std::size_t count) {
  std::vector<std::size_t> extents;
  from.parameters([&](std::string_view, auto& p) {
    const auto e = p.shape().extents();
    if (extents.empty()) extents.assign(e.begin(), e.end());
  });
  if (extents.size() != 3)
    throw value_error("expert_parallel: the bank's first weight must be (sets, d_model, d_ff)");
  rng unused(0);
  Local out(unused, count, extents[1], extents[2]);
  // Both banks list the same weights in the same order: the i-th parameter
  // of `out` takes the rows of the i-th of `from` (same name and type, checked).
  struct setter {
    std::string name;
    const std::type_info* type;
    std::function<void(void*)> set;
  };
  std::vector<setter> setters;
  from.parameters([&](std::string_view name, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    auto ext = p.shape().extents();
    const std::size_t inner = p.size() / ext[0];
    auto rows = p.value().reshape(shape<dyn, dyn>{ext[0], inner}).rows(first, first + count).clone();  // (count, inner)
    ext[0] = count;
    setters.push_back({std::string(name), &typeid(P), [rows, ext](void* target) {
                         auto& q = *static_cast<P*>(target);
                         q = P(rows.reshape(P::shape_type::from_extents(ext, "expert_parallel")));
                       }});
  });
  std::size_t i = 0;
  out.parameters([&](std::string_view name, auto& q) {
    if (i >= setters.size() || setters[i].name != name || *setters[i].type != typeid(q))
      throw value_error("expert_parallel: the local bank's parameter '" + std::string(name) +
                        "' does not match the whole bank's");
    setters[i++].set(&q);
  });
  return out;
}
}  // namespace detail

template <class Router, moe::expert Expert, class T = float, backend B = cpu>
class expert_parallel {
 public:
  static constexpr bool is_expert_parallel = true;  // dist:: walkers treat "experts" as sharded
  static constexpr std::size_t d_model = Expert::d_model;
  using router_type = Router;
  using bank_type = typename Expert::template bank<dyn, T, B>;  // this rank's weight sets
  using shared_type = typename Expert::template bank<1, T, B>;
  using full_layer = moe::layer<Router, Expert, T, B>;
  using plan_type = typename full_layer::plan_type;

  /// A rank's part: the router (replicated), this rank's `local` weight sets
  /// (sets [rank·G/P, (rank+1)·G/P) of G), the shared experts (replicated)
  /// and the slot -> set map over all G sets (identity when G = E).
  expert_parallel(communicator comm, Router router, bank_type local, std::optional<shared_type> shared,
                  moe::slot_map<B> slots)
      : comm_(std::move(comm)), router_(std::move(router)), experts_(std::move(local)),
        shared_(std::move(shared)), slots_(std::move(slots)) {
    const std::size_t g = slots_.weight_sets(), p = comm_.ranks();
    if (slots_.slots() != router_.experts())
      throw value_error("expert_parallel: the router has " + std::to_string(router_.experts()) +
                        " experts, the slot map " + std::to_string(slots_.slots()));
    if (g % p != 0)
      throw value_error("expert_parallel: " + std::to_string(g) + " expert weight sets do not divide over " +
                        std::to_string(p) + " ranks (each rank must hold the same number)");
    if (experts_.weight_sets() != g / p)
      throw value_error("expert_parallel: rank " + std::to_string(comm_.rank()) + " holds " +
                        std::to_string(experts_.weight_sets()) + " weight sets, " + std::to_string(g / p) +
                        " expected (" + std::to_string(g) + " over " + std::to_string(p) + " ranks)");
  }

  /// This rank's part of a whole layer (the same on every rank, e.g. built
  /// from the same seed, or loaded from one checkpoint).
  static expert_parallel shard(communicator comm, full_layer full) {
    const std::size_t g = full.experts().weight_sets(), p = comm.ranks();
    if (g % p != 0)
      throw value_error("expert_parallel: " + std::to_string(g) + " expert weight sets do not divide over " +
                        std::to_string(p) + " ranks (each rank must hold the same number)");
    const std::size_t per = g / p, first = static_cast<std::size_t>(comm.rank()) * per;
    auto local = detail::slice_bank<bank_type>(full.experts(), first, per);
    moe::slot_map<B> slots = full.experts().slots();
    return expert_parallel(std::move(comm), std::move(full.router()), std::move(local), full.shared(),
                           std::move(slots));
  }

  /// x (T_local, D) -> (T_local, D).
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) {
    auto plan = router_.route(x);
    auto out = apply_experts(x, plan);                      // (T, D)
    if (shared_) out = out + moe::apply_to_all(*shared_, x);  // (T, D)
    out = add_auxiliary_loss(out, plan.aux_loss);
    last_ = std::move(plan);
    return out;
  }

  /// x (T_local, D) through the experts of `plan`, wherever they live.
  template <class S, class TG>
  var<T, S, B> apply_experts(const var<T, S, B>& x, const moe::routing<TG, B>& plan) {
    const auto p = moe::by_weight_set(detail::slot_view<B>{&slots_}, plan);  // grouped by set = by owner rank
    const auto offsets = p.offsets.template to<cpu>();  // (G + 1) host read: sizes the exchange
    const bool needs_grad = grad_enabled() && (x.requires_grad() || tape::current() != nullptr);
    const auto ex = exchange_plan<B>::make(comm_, std::span(offsets.data(), offsets.size()),
                                           experts_.weight_sets(), needs_grad, "expert_parallel");
    auto rows = moe::dispatch(x, p);                                                             // (A, D)
    auto received = exchange_rows(comm_, rows, ex.send_rows, ex.recv_rows, ex.needs_grad,
                                  "expert_parallel dispatch");                                   // (M, D)
    auto y = experts_(gather_rows(received, ex.order), ex.local_offsets);                        // (M, D) by local set
    auto back = exchange_rows(comm_, gather_rows(y, ex.inverse), ex.recv_rows, ex.send_rows, ex.needs_grad,
                              "expert_parallel combine");                                        // (A, D)
    return moe::detail::shape_as(moe::combine(back, p, x.extent(0)), x);                        // (T, D)
  }

  const communicator& comm() const noexcept { return comm_; }
  Router& router() noexcept { return router_; }
  bank_type& experts() noexcept { return experts_; }
  const std::optional<shared_type>& shared() const noexcept { return shared_; }
  const moe::slot_map<B>& slots() const noexcept { return slots_; }
  /// The first global weight set this rank holds.
  std::size_t first_set() const noexcept { return static_cast<std::size_t>(comm_.rank()) * experts_.weight_sets(); }
  std::size_t weight_sets() const noexcept { return slots_.weight_sets(); }  // G, over all ranks
  const plan_type& last_routing() const noexcept { return last_; }
  void train(bool on = true) { moe::set_training(router_, on); }

  template <class V>
  void parameters(V&& visit) {
    visit("router", router_);
    visit("experts", experts_);
    if (shared_) visit("shared", *shared_);
  }
  /// The global slot map, under the name a single-process layer saves it.
  template <class V>
  void buffers(V&& visit) {
    if (!slots_.identity()) visit("experts.slot_map", slots_.map());
  }

 private:
  communicator comm_;
  Router router_;
  bank_type experts_;
  std::optional<shared_type> shared_;
  moe::slot_map<B> slots_;  // (E) slot -> global weight set
  plan_type last_;
};

/// The expert-parallel counterpart of a moe::layer type.
template <class Layer>
struct sharded_of;
template <class Router, class Expert, class T, class B>
struct sharded_of<moe::layer<Router, Expert, T, B>> {
  using type = expert_parallel<Router, Expert, T, B>;
};
template <class Layer>
using sharded_t = typename sharded_of<Layer>::type;

}  // namespace moekit::dist
