// moekit/moe/routing.hpp — the routing plan every router produces and every
// MoE layer consumes. Assignments (token, expert, gate) are stored grouped by
// expert, so expert e's rows are [offsets[e], offsets[e+1]): token-choice
// (top-k) and expert-choice routers, capacity dropping and expert sharing all
// reduce to this one layout. Every tensor of a plan lives on the router's
// backend; on a device the host reads none of them while a layer runs, only
// the observers below (count, counts, aux_term::value) copy them back.
#pragma once

#include <concepts>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/var.hpp"
#include "../core/config.hpp"
#include "../core/host_device.hpp"
#include "../tensor/ops/grouped.hpp"

namespace moekit::moe {

/// One auxiliary loss term of a router: its name, weight and (unweighted)
/// value, kept where the router computed it.
template <class T = float, backend B = cpu>
struct aux_term {
  std::string name;
  double weight = 0;
  tensor<T, scalar_shape, B> term;  // the unweighted value (the term's forward value)

  /// The unweighted value on the host. For a device plan this copies it back
  /// and waits for the device: read it for logging, after the step.
  double value() const { return static_cast<double>(term.template to<cpu>()[0]); }
};

template <class T = float, backend B = cpu>
struct routing {
  using value_type = T;
  using backend_type = B;

  std::size_t tokens = 0;                  // T, rows of the layer input
  std::size_t experts = 0;                 // E, router slots
  std::size_t k = 0;                       // slots per token when made from a (T, k) choice, else 0
  tensor<index_t, shape<dyn>, B> token;    // (A) the token of each kept assignment, grouped by expert
  tensor<index_t, shape<dyn>, B> expert;   // (A) its expert, non-decreasing
  tensor<index_t, shape<dyn>, B> source;   // (A) where it came from: t·k + j in a (T, k) choice, i among triples
  var<T, shape<dyn>, B> gate;              // (A) its combine weight; gradients reach the router
  group_offsets<B> offsets;                // (E + 1) segment bounds into the assignments
  // Finer segments inside each expert's (e.g. one per expert and sequence, see
  // moe::by_sequence), or undefined: (E · per_expert + 1) bounds.
  group_offsets<B> sub_offsets;
  std::size_t sub_segments_per_expert = 0;
  // The per-(token, slot) view, kept for plans made from a (T, k) choice:
  // choice(t, j) is the expert of token t's j-th slot and choice_gate(t, j)
  // its gate, dropped slots included (source says which assignments were kept).
  tensor<index_t, shape<dyn, dyn>, B> choice;  // (T, k)
  var<T, shape<dyn, dyn>, B> choice_gate;      // (T, k)
  var<T, scalar_shape, B> aux_loss;        // Σ weight · term, or undefined when no term is on
  std::vector<aux_term<T, B>> aux_terms;   // for logging
  tensor<T, shape<dyn, dyn>, B> logits;    // (T, E) router logits, for routing statistics
  std::size_t dropped = 0;                 // assignments dropped by a capacity limit

  std::size_t assignments() const noexcept { return token.size(); }

  /// The plan with its gates and aux loss cut from the tape they were routed
  /// on (the same values, no tape). A layer's last_routing() is the live plan:
  /// its gates and aux loss can be backpropagated while the forward's tape
  /// lives; to re-order or combine a kept plan after that tape is reset or
  /// gone, take observed() of it first.
  routing observed() const {
    routing out = *this;
    auto cut = [](const auto& v) { return std::remove_cvref_t<decltype(v)>(v.value(), nullptr, nullptr); };
    out.gate = cut(gate);
    out.choice_gate = cut(choice_gate);
    out.aux_loss = cut(aux_loss);
    return out;
  }
  /// Tokens routed to expert e (host plans; see counts() for any backend).
  std::size_t count(std::size_t e) const noexcept
    requires(B::host_accessible)
  {
    return static_cast<std::size_t>(offsets[e + 1] - offsets[e]);
  }
  /// (E) tokens routed to each expert, on the host. A device plan copies its
  /// offsets back (and waits for the device): an observer's read, not the layer's.
  std::vector<std::size_t> counts() const {
    const auto host = offsets.template to<cpu>();
    std::vector<std::size_t> c(experts, 0);
    for (std::size_t e = 0; e < experts && e + 1 < host.size(); ++e)
      c[e] = static_cast<std::size_t>(host[e + 1] - host[e]);
    return c;
  }
};

namespace detail {
template <class P>
struct is_routing : std::false_type {};
template <class T, class B>
struct is_routing<routing<T, B>> : std::true_type {};

}  // namespace detail

/// A routing plan (moe::routing<T, B>).
template <class P>
concept routing_plan = detail::is_routing<std::remove_cvref_t<P>>::value;

}  // namespace moekit::moe
