// moekit/uoe/router.hpp — the UoE router: a linear gate d -> E with bias (the
// reference's SwitchGate), softmax over the experts, and one of the two
// routing paradigms:
//
//   select(x, batch, seq)   data selection: each expert keeps c slots per
//                           sample (uoe::select_tokens; token- or patch-wise)
//   choose(x, batch, seq)   expert selection: each unit (a patch of l_p
//                           tokens; l_p = seq: a whole sample) chooses top_k
//                           of E experts from its mean-pooled features, and
//                           every token of the unit goes to them
//
// In faithful mode the gate values only select (weights 1), so the router's
// parameters never receive a gradient, as in the reference.
#pragma once

#include <cstddef>
#include <string>

#include "../autograd/ops/reduce.hpp"
#include "../autograd/ops/softmax.hpp"
#include "../autograd/ops/top_k.hpp"
#include "../moe/dispatch.hpp"
#include "../nn/linear.hpp"
#include "selection.hpp"

namespace moekit::uoe {

namespace fn {
/// Expert-selection triples, position a = (u · k + j) · l_p + i: token u · l_p + i,
/// its unit's j-th expert, and its gate's index u · k + j.
struct unit_token {
  std::size_t k, patch;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t a) const {
    return static_cast<index_t>(a / patch / k * patch + a % patch);
  }
};
struct unit_choice {
  std::size_t patch;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t a) const { return static_cast<index_t>(a / patch); }
};
}  // namespace fn

template <class T = float, backend B = cpu>
class router {
 public:
  router(rng& g, std::size_t d_model, std::size_t experts, selection_options o)
      : gate_(g, d_model, experts), options_(o) {
    if (experts == 0) throw value_error("uoe::router: no experts");
    check_selection("uoe::router", o, experts, 0);
  }

  std::size_t experts() const noexcept { return gate_.out_features(); }
  const selection_options& options() const noexcept { return options_; }
  selection_options& options() noexcept { return options_; }
  nn::linear<dyn, dyn, T, B>& gate() noexcept { return gate_; }

  /// Logits (T, E) of rows x (T, d).
  template <class S>
  var<T, shape<dyn, dyn>, B> logits(const var<T, S, B>& x) const {
    return reshape(gate_(x), shape<dyn, dyn>{x.extent(0), experts()});
  }

  /// Data selection over x (batch · seq, d).
  template <class S>
  selection<T, B> select(const var<T, S, B>& x, std::size_t batch, std::size_t seq) const {
    auto l = logits(x);  // (T, E)
    auto sel = select_tokens(softmax(l), batch, seq, options_, "uoe::router::select");
    sel.logits = l.value();
    return sel;
  }

  /// Expert selection over x (batch · seq, d): a moe::routing plan of
  /// (token, expert, gate) triples, each expert's tokens in temporal order.
  template <class S>
  moe::routing<T, B> choose(const var<T, S, B>& x, std::size_t batch, std::size_t seq) const {
    const std::size_t tokens = x.extent(0), d = x.extent(1), lp = options_.patch, k = options_.top_k, e = experts();
    if (batch * seq != tokens)
      throw shape_error("uoe::router::choose: x " + x.shape().str() + " for " + std::to_string(batch) +
                        " samples of " + std::to_string(seq) + " tokens");
    check_selection("uoe::router::choose", options_, e, seq);
    const std::size_t units = tokens / lp;
    auto pooled = lp == 1 ? reshape(x, shape<dyn, dyn>{tokens, d})
                          : mean<1>(reshape(x, shape<dyn, dyn, dyn>{units, lp, d}));  // (U, d)
    auto unit_logits = logits(pooled);                                                  // (U, E)
    auto p = softmax(unit_logits);                                                      // (U, E)
    auto [values, idx] = top_k(p, k);                                                   // (U, k)
    const std::size_t a = units * k * lp;
    auto token = generate<index_t, B>(shape<dyn>{a}, fn::unit_token{k, lp});            // (A)
    auto which = generate<index_t, B>(shape<dyn>{a}, fn::unit_choice{lp});              // (A) into (U·k)
    auto expert = gather_rows(idx.reshape(shape<dyn>{units * k}), which);               // (A)
    var<T, shape<dyn>, B> gate;
    if (options_.mode == mode::faithful) gate = constant(ones<T, B>(shape<dyn>{a}));
    else gate = reshape(gather_rows(reshape(values, shape<dyn, 1>{units * k}), which), shape<dyn>{a});
    auto plan = moe::plan_from_assignments(tokens, e, token, expert, gate);
    // Statistics read logits per token: each token gets its unit's.
    plan.logits = lp == 1 ? unit_logits.value()
                          : gather_rows(unit_logits.value(), generate<index_t, B>(shape<dyn>{tokens}, fn::unit_choice{lp}));
    if (options_.mode != mode::faithful && options_.balance_weight > 0) {
      auto term = moe::load_balance_loss(p, moe::expert_counts(idx, e), idx.size());
      plan.aux_terms.push_back({"load_balance", options_.balance_weight, term.value()});
      plan.aux_loss = term * static_cast<T>(options_.balance_weight);
    }
    return plan;
  }

  template <class V>
  void parameters(V&& visit) {
    gate_.parameters(visit);
  }

 private:
  nn::linear<dyn, dyn, T, B> gate_;  // (d, E) with bias
  selection_options options_;
};

}  // namespace moekit::uoe
