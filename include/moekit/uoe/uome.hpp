// moekit/uoe/uome.hpp — UoME, the union of MLP experts: a dense MLP d -> F -> d
// cut into E tensor-parallel slices (uoe::mlp_slices), each slice an expert,
// routed by a uoe::router in one of two paradigms:
//
//   data selection    each expert keeps c of each sample's tokens (or patches)
//   expert selection  each token / patch / sample picks top_k of the E experts
//
//   rows = x reshaped                                (batch·seq, d)
//   plan = router.select (as triples) or .choose     (token, expert, weight)
//   y    = apply_experts(slices, rows, plan) + b2    gather, grouped GEMMs, weighted scatter-add
//
// With every expert and every token (top_k = E, capacity 1, faithful) the
// union is the dense MLP exactly: Σ_e act(x·W1_e + b1_e)·W2_e + b2. A token
// no expert kept gets b2 only. The router's balance loss (gated, causal) rides
// on y's backward.
//
//   uoe::uome<> mlp(g, {.d_model = 64, .d_ff = 256, .experts = 4,
//                       .select = {.mode = uoe::mode::gated, .top_k = 2, .capacity = 0.5}});
//   auto y = mlp(x);   // x (batch, seq, 64) -> (batch, seq, 64)
//
// Parameter names: "router.weight", "router.bias", "experts.w1", "experts.b1",
// "experts.w2", "bias".
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "../autograd/ops/auxiliary_loss.hpp"
#include "../moe/dispatch.hpp"
#include "mlp_slices.hpp"
#include "router.hpp"

namespace moekit::uoe {

/// Who chooses: experts choose their tokens, or tokens (units) their experts.
enum class paradigm { data, expert };

struct uome_options {
  std::size_t d_model = 64, d_ff = 256, experts = 4;
  uoe::paradigm paradigm = paradigm::data;
  selection_options select{};
};

namespace fn {
/// Slot i of a selection -> its expert i / (batch · c).
struct slot_expert {
  std::size_t per_expert;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const { return static_cast<index_t>(i / per_expert); }
};
}  // namespace fn

/// A data selection as a moe::routing plan of (token, expert, weight) triples.
template <class T, class B>
moe::routing<T, B> plan_of(const selection<T, B>& sel) {
  const std::size_t n = sel.size();
  auto expert = generate<index_t, B>(shape<dyn>{n}, fn::slot_expert{sel.batch * sel.slots});
  auto plan = moe::plan_from_assignments(sel.batch * sel.seq, sel.experts, sel.token, expert, sel.weight);
  plan.aux_loss = sel.aux_loss;
  plan.logits = sel.logits;
  return plan;
}

template <class T = float, backend B = cpu, moe::activation Act = moe::activation::gelu>
class uome {
 public:
  /// The layer takes (batch, seq, d): its routing needs the samples.
  static constexpr bool takes_sequences = true;

  uome(rng& g, const uome_options& o)
      : router_(g, o.d_model, o.experts, o.select),
        experts_(g, o.d_model, o.d_ff, o.experts),
        bias_(nn::init_bias<T, B>(g, shape<dyn>{o.d_model}, o.d_ff, nn::init::pytorch_default)),
        options_(o) {}
  /// From a router and given slices (uoe::decompose).
  uome(router<T, B> r, mlp_slices<T, B, Act> slices, tensor<T, shape<dyn>, B> bias, const uome_options& o)
      : router_(std::move(r)), experts_(std::move(slices)), bias_(std::move(bias)), options_(o) {
    if (router_.experts() != experts_.experts())
      throw value_error("uoe::uome: the router has " + std::to_string(router_.experts()) + " experts, the slices " +
                        std::to_string(experts_.experts()));
  }

  /// x (batch, seq, d) -> (batch, seq, d).
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& x) {
    static_assert(S::rank() == 3, "uoe::uome: x must be (batch, seq, d_model)");
    const std::size_t batch = x.extent(0), seq = x.extent(1), d = x.extent(2);
    if (d != experts_.d_model())
      throw shape_error("uoe::uome: x " + x.shape().str() + ": last extent differs from d_model " +
                        std::to_string(experts_.d_model()));
    auto rows = reshape(x, shape<dyn, dyn>{batch * seq, d});                             // (T, d)
    last_ = options_.paradigm == paradigm::data ? plan_of(router_.select(rows, batch, seq))
                                                : router_.choose(rows, batch, seq);
    auto y = add_rows(moe::apply_experts(experts_, rows, last_), bias_);               // (T, d)
    return reshape(add_auxiliary_loss(y, last_.aux_loss), x.shape());                  // (batch, seq, d)
  }

  /// The last forward's plan (for routing statistics; its vars live on that tape).
  const moe::routing<T, B>& last_routing() const noexcept { return last_; }
  router<T, B>& router_layer() noexcept { return router_; }
  mlp_slices<T, B, Act>& experts() noexcept { return experts_; }
  auto& bias() noexcept { return bias_; }
  const uome_options& options() const noexcept { return options_; }
  void train(bool = true) noexcept {}

  template <class V>
  void parameters(V&& visit) {
    visit("router", router_);
    visit("experts", experts_);
    visit("bias", bias_);
  }

 private:
  router<T, B> router_;
  mlp_slices<T, B, Act> experts_;
  parameter<T, shape<dyn>, B> bias_;  // (d) b2, once per token
  uome_options options_;
  moe::routing<T, B> last_;
};

}  // namespace moekit::uoe
