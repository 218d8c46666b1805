// moekit/merge/merge.hpp — MC-SMoE's merge: every group of router slots of an
// expert bank becomes one weight set (moe::slot_map sharing), the router keeps
// its E slots, and a token routed to any member of a group is served by the
// group's merged weights:
//
//   frequency (MC-SMoE):  W_g = Σ_{e∈g} f_e·W_e / Σ_{e∈g} f_e
//   uniform (baseline):   W_g = mean_{e∈g} W_e
//
// A group whose members' usage sums to 0 takes their plain mean (the
// reference's + 1e-7 in the denominator would zero its weights instead).
// After the merge the bank holds G sets: count_parameters(), parameter_bytes()
// and a saved checkpoint shrink; moe::load_slot_maps re-creates the sharing
// in a fresh model before its weights are loaded.
//
//   mlp::moe_bottleneck_mlp<moe::token_choice_moe<>> model(...);
//   std::vector<moe::routing_stats> stats(merge::count_moe_layers(model));
//   for (auto& x : calibration) {
//     model(t.input(x));
//     merge::for_each_moe_layer(model, [&](std::size_t l, auto& layer) { stats[l].add(layer.last_routing()); });
//   }
//   auto groups = merge::group_experts(stats, {.average_groups = 4});
//   merge::merge_model(model, groups, stats);                 // frequency-weighted, every MoE layer
//   io::save_safetensors("merged.safetensors", model);        // G sets per layer on disk
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "../autograd/parameter_tree.hpp"
#include "../core/error.hpp"
#include "../moe/slot_map.hpp"
#include "../moe/stats.hpp"
#include "grouping.hpp"

namespace moekit::merge {

/// How the members of a group are weighted in their merged weights.
enum class weighting {
  frequency,  // by usage f_e (MC-SMoE)
  uniform,    // equally (plain averaging)
};

/// Merges the slots of `bank` by `labels` (E: slot -> group, every group in
/// [0, G) used): the bank then holds G weight sets, group g's the
/// `weighting` mean of its members' current weights. `usage` (E, finite,
/// >= 0) is needed for frequency weighting, ignored (may be empty) for uniform.
template <class Bank>
void merge_experts(Bank& bank, const std::vector<index_t>& labels, const std::vector<double>& usage,
                   weighting w = weighting::frequency) {
  const std::size_t e = bank.experts();
  if (labels.size() != e)
    throw value_error("merge::merge_experts: " + std::to_string(labels.size()) + " labels for a bank of " +
                      std::to_string(e) + " slots");
  if (w == weighting::frequency && usage.size() != e)
    throw value_error("merge::merge_experts: " + std::to_string(usage.size()) + " usage values for a bank of " +
                      std::to_string(e) + " slots");
  using map_type = std::remove_cvref_t<decltype(bank.slots())>;
  try {
    bank.share(map_type(labels), w == weighting::frequency ? usage : std::vector<double>(e, 1.0));
  } catch (const value_error& err) {
    throw value_error(std::string("merge::merge_experts: ") + err.what());
  }
}

template <class Bank>
void merge_experts(Bank& bank, const layer_grouping& grouping, const std::vector<double>& usage,
                   weighting w = weighting::frequency) {
  merge_experts(bank, grouping.labels, usage, w);
}

/// A MoE layer: a router and a bank of experts that can share weights.
template <class L>
concept moe_layer = requires(L& layer) {
  layer.router();
  layer.last_routing();
  layer.experts().share(layer.experts().slots());
};

/// f(index, layer) for every MoE layer under `model` (itself included), in
/// the depth-first order of its parameter tree: the order group_experts'
/// per-layer inputs and merge_model's groupings follow.
template <parameterized M, class F>
void for_each_moe_layer(M& model, F&& f) {
  std::size_t i = 0;
  auto visit = [&](const std::string&, auto& layer) {
    if constexpr (moe_layer<std::remove_cvref_t<decltype(layer)>>) f(i++, layer);
  };
  moe::detail::visit_layers(model, visit, "");
}

template <parameterized M>
std::size_t count_moe_layers(M& model) {
  std::size_t n = 0;
  for_each_moe_layer(model, [&](std::size_t, auto&) { ++n; });
  return n;
}

/// Merges the routed experts of every MoE layer l of `model` by groupings[l]
/// with usage[l] (frequency weighting; may be empty for uniform).
template <parameterized M>
void merge_model(M& model, const std::vector<layer_grouping>& groupings, const std::vector<std::vector<double>>& usage,
                 weighting w = weighting::frequency) {
  const std::size_t n = count_moe_layers(model);
  if (groupings.size() != n || (w == weighting::frequency && usage.size() != n))
    throw value_error("merge::merge_model: the model has " + std::to_string(n) + " MoE layers, given " +
                      std::to_string(groupings.size()) + " groupings and " + std::to_string(usage.size()) +
                      " usage vectors");
  for_each_moe_layer(model, [&](std::size_t l, auto& layer) {
    merge_experts(layer.experts(), groupings[l].labels, w == weighting::frequency ? usage[l] : std::vector<double>{}, w);
  });
}

/// The same with each layer's usage() from its routing statistics.
template <parameterized M>
void merge_model(M& model, const std::vector<layer_grouping>& groupings, const std::vector<moe::routing_stats>& stats,
                 weighting w = weighting::frequency) {
  std::vector<std::vector<double>> usage;
  for (const auto& s : stats) usage.push_back(s.usage());
  merge_model(model, groupings, usage, w);
}

/// Bytes of every parameter under `model` (element count × element size):
/// the memory its weights take, what a merge shrinks. count_parameters()
/// (autograd/parameter_tree.hpp) gives the element count.
template <parameterized M>
std::size_t parameter_bytes(M& model) {
  std::size_t n = 0;
  visit_parameters(model, [&](const std::string&, auto& p) {
    n += p.size() * sizeof(typename std::remove_cvref_t<decltype(p)>::value_type);
  });
  return n;
}

}  // namespace moekit::merge
