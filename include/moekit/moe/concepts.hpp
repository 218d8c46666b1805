// moekit/moe/concepts.hpp — what a router and an expert are. A type that does
// not model a concept fails with a diagnostic naming the concept and the
// unsatisfied requirement (e.g. "route(x)" or "bank<E, T, B>").
#pragma once

#include <cstddef>

#include "../autograd/var.hpp"
#include "../nn/layer.hpp"
#include "routing.hpp"

namespace moekit::moe {

/// A router maps a (tokens, d_model) input to a routing plan and has parameters.
template <class R, class In>
concept router = parameterized<R> && requires(R& r, const In& x) {
  { r.route(x) } -> routing_plan;
  { r.experts() } -> std::convertible_to<std::size_t>;
};

/// An expert specification: a layer whose weights stack along an expert axis.
/// `bank<E, T, B>` holds E experts' stacked weights and runs them on rows
/// grouped by expert (offsets, on B), as one grouped GEMM per weight matrix.
/// The requirements are checked on the cpu instantiation; a bank takes its
/// offsets on its own backend B (group_offsets<B>).
template <class X>
concept expert = requires {
  { X::d_model } -> std::convertible_to<std::size_t>;
  typename X::template bank<2, float, cpu>;
} && parameterized<typename X::template bank<2, float, cpu>> &&
requires(typename X::template bank<2, float, cpu>& bank, const var<float, shape<dyn, X::d_model>>& rows,
         const group_offsets<cpu>& offsets) {
  { bank(rows, offsets) };
};

}  // namespace moekit::moe
