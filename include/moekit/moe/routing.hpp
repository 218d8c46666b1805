// moekit/moe/routing.hpp — the routing plan every router produces and every
// MoE layer consumes. Assignments (token, expert, gate) are stored grouped by
// expert, so expert e's rows are [offsets[e], offsets[e+1]): token-choice
// (top-k) and expert-choice routers, capacity dropping and expert sharing all
// reduce to this one layout.
#pragma once

#include <concepts>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/var.hpp"
#include "../core/config.hpp"
#include "../tensor/ops/grouped.hpp"

namespace moekit::moe {

/// One auxiliary loss term of a router: its name, weight and (unweighted) value.
struct aux_term {
  std::string name;
  double weight = 0;
  double value = 0;
};

template <class T = float, backend B = cpu>
struct routing {
  std::size_t tokens = 0;                  // T, rows of the layer input
  std::size_t experts = 0;                 // E
  tensor<index_t, shape<dyn>, B> token;    // (A) the token of each kept assignment, grouped by expert
  tensor<index_t, shape<dyn>, B> expert;   // (A) its expert, non-decreasing
  var<T, shape<dyn>, B> gate;              // (A) its combine weight; gradients reach the router
  offsets_tensor offsets;                  // (E + 1) segment bounds into the assignments
  var<T, scalar_shape, B> aux_loss;        // Σ weight · term, or undefined when no term is on
  std::vector<aux_term> aux_terms;         // for logging
  tensor<T, shape<dyn, dyn>, B> logits;    // (T, E) router logits, for routing statistics
  std::size_t dropped = 0;                 // assignments dropped by a capacity limit

  std::size_t assignments() const noexcept { return token.size(); }
  /// Tokens routed to expert e.
  std::size_t count(std::size_t e) const noexcept {
    return static_cast<std::size_t>(offsets[e + 1] - offsets[e]);
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
