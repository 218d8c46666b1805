// moekit/moe/combine.hpp — the two permutation steps around the experts of a
// routing plan: dispatch gathers each assignment's token row in expert order,
// combine adds the gate-weighted expert outputs back into their tokens' rows.
#pragma once

#include <cstddef>

#include "../autograd/ops/combine.hpp"
#include "../autograd/ops/index.hpp"
#include "routing.hpp"

namespace moekit::moe {

/// x (T, D) -> (A, D): the token row of every assignment of `plan`, grouped by expert.
template <class T, class S, class B>
auto dispatch(const var<T, S, B>& x, const routing<T, B>& plan) {
  return gather_rows(x, plan.token);
}

/// y (A, D) expert outputs -> (tokens, D): out[token[a]] += gate[a] · y[a],
/// the gate applied inside the scatter-add (one pass, one tape node).
template <class T, class S, class B>
auto combine(const var<T, S, B>& y, const routing<T, B>& plan, std::size_t tokens) {
  return weighted_scatter_add_rows(y, plan.token, tokens, plan.gate);
}

}  // namespace moekit::moe
