// moekit/merge/grouping.hpp — MC-SMoE's expert grouping: which router slots
// of each MoE layer end up sharing one merged weight set.
//
//   std::vector<moe::routing_stats> stats = ...;      // one per MoE layer, over a calibration set
//   auto groups = merge::group_experts(stats, {.average_groups = 8});
//   groups[l].labels;    // (E) slot -> group in [0, groups[l].groups)
//   groups[l].dominant;  // (G) group i's dominant (most used) expert
//
// The algorithm is the reference's global path (paper notes §1.5), per layer
// l with usage f[l] (E) and similarity S[l] (E·E, row-major, e.g. the
// router-logit similarity of moe/stats.hpp or weight_similarity below):
//
//   1. Group counts. Every expert of a non-merged layer and the most used
//      expert of every layer (argmax f[l], lowest index on ties) are forced;
//      the other entries rank by f. With a global budget the
//      total = average_groups · #merged + Σ_{non-merged} E_l highest-ranked
//      entries over all layers are kept, and k_l is the number kept in layer
//      l: the budget moves groups to layers whose usage is spread out. Ties
//      are broken by one stable order — forced first, then f descending,
//      then layer ascending, then expert ascending — so Σ_l k_l == total
//      exactly (the reference's strict "> threshold" count falls short of the
//      budget on ties). Without a global budget every merged layer gets
//      average_groups groups, every non-merged layer E_l.
//   2. Dominant experts: the k_l most used experts of the layer (f
//      descending, lower index on ties); group i is the i-th of them.
//   3. Every other expert, in descending f (lower index on ties), joins the
//      dominant expert it is most similar to, S[l][e·E + d] (ties: the lower
//      group index, i.e. the more used dominant expert, as the reference's
//      argmax over its usage-ordered list). With a capacity, a group that
//      holds `capacity` members (its dominant expert included) takes no more.
//
// Baselines: random_grouping (same group counts, random members, seeded) and
// weight_similarity (cosine of the experts' flattened weights instead of
// their router logits).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../moe/slot_map.hpp"
#include "../moe/stats.hpp"

namespace moekit::merge {

/// One layer's grouping of its E router slots into G groups.
struct layer_grouping {
  std::vector<index_t> labels;    // (E) slot -> group in [0, groups)
  std::vector<index_t> dominant;  // (G) group i's dominant expert (empty for a random grouping)
  std::size_t groups = 0;         // G

  /// The slot map that makes a bank share weights by this grouping.
  template <backend B = cpu>
  moe::slot_map<B> slots() const {
    return moe::slot_map<B>(labels);
  }
};

struct grouping_options {
  /// Groups per merged layer, on average over the merged layers (global
  /// budget) or exactly (per layer). In [1, E_l] for every merged layer.
  std::size_t average_groups = 8;
  /// Which layers are merged; empty: all. A layer not merged keeps E groups.
  std::vector<bool> merged_layers = {};
  /// One budget over all layers (MC-SMoE's adaptive counts); false: a fixed
  /// count per layer.
  bool global_budget = true;
  /// Most members a group may hold, its dominant expert included; 0: no limit.
  std::size_t capacity = 0;
};

namespace detail {

inline void check_finite(const char* op, const std::string& what, const std::vector<double>& v, bool non_negative) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]) || (non_negative && v[i] < 0))
      throw value_error(std::string(op) + ": " + what + "[" + std::to_string(i) +
                        "] = " + std::to_string(v[i]) + (non_negative ? " (must be finite and >= 0)" : " (must be finite)"));
}

/// Experts of one layer by usage, descending, lower index first on ties.
inline std::vector<std::size_t> by_usage(const std::vector<double>& f) {
  std::vector<std::size_t> order(f.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return f[a] > f[b]; });
  return order;
}

/// A weight as double (bf16 and half convert through float).
template <class T>
double as_double(T v) {
  if constexpr (std::is_floating_point_v<T>) return static_cast<double>(v);
  else return static_cast<double>(static_cast<float>(v));
}

inline bool is_merged(const grouping_options& o, std::size_t l) { return o.merged_layers.empty() || o.merged_layers[l]; }

inline void check_usage(const char* op, const std::vector<std::vector<double>>& usage, const grouping_options& o) {
  if (usage.empty()) throw value_error(std::string(op) + ": no layers");
  if (!o.merged_layers.empty() && o.merged_layers.size() != usage.size())
    throw value_error(std::string(op) + ": merged_layers has " + std::to_string(o.merged_layers.size()) +
                      " entries for " + std::to_string(usage.size()) + " layers");
  for (std::size_t l = 0; l < usage.size(); ++l) {
    if (usage[l].empty()) throw value_error(std::string(op) + ": layer " + std::to_string(l) + " has no experts");
    check_finite(op, "layer " + std::to_string(l) + ": usage", usage[l], true);
    if (is_merged(o, l) && (o.average_groups == 0 || o.average_groups > usage[l].size()))
      throw value_error(std::string(op) + ": average_groups " + std::to_string(o.average_groups) +
                        " is not in [1, " + std::to_string(usage[l].size()) + "] (layer " + std::to_string(l) + ")");
  }
}

}  // namespace detail

/// Groups per layer (k_l) from the usage of each layer (see the header).
inline std::vector<std::size_t> group_counts(const std::vector<std::vector<double>>& usage, const grouping_options& o = {}) {
  detail::check_usage("merge::group_counts", usage, o);
  const std::size_t layers = usage.size();
  std::vector<std::size_t> k(layers, 0);
  if (!o.global_budget) {
    for (std::size_t l = 0; l < layers; ++l) k[l] = detail::is_merged(o, l) ? o.average_groups : usage[l].size();
    return k;
  }
  struct entry {
    bool forced;
    double f;
    std::size_t layer, expert;
  };
  std::vector<entry> all;
  std::size_t total = 0;
  for (std::size_t l = 0; l < layers; ++l) {
    const bool merged = detail::is_merged(o, l);
    total += merged ? o.average_groups : usage[l].size();
    const std::size_t top = detail::by_usage(usage[l]).front();
    for (std::size_t e = 0; e < usage[l].size(); ++e) all.push_back({!merged || e == top, usage[l][e], l, e});
  }
  // Forced first, then f descending; stable: layer, then expert ascending on ties.
  std::stable_sort(all.begin(), all.end(), [](const entry& a, const entry& b) {
    if (a.forced != b.forced) return a.forced;
    return !a.forced && a.f > b.f;
  });
  for (std::size_t i = 0; i < total; ++i) ++k[all[i].layer];
  return k;
}

/// One layer grouped into `groups` groups: dominant experts by usage f (E),
/// members by similarity s (E·E, row-major), see the header. `capacity`:
/// most members per group (0: no limit; needs capacity·groups >= E).
inline layer_grouping group_layer(const std::vector<double>& f, const std::vector<double>& s, std::size_t groups,
                                  std::size_t capacity = 0) {
  const char* op = "merge::group_layer";
  const std::size_t e = f.size();
  if (e == 0) throw value_error(std::string(op) + ": no experts");
  if (s.size() != e * e)
    throw value_error(std::string(op) + ": similarity has " + std::to_string(s.size()) + " entries, expected " +
                      std::to_string(e) + "·" + std::to_string(e));
  if (groups == 0 || groups > e)
    throw value_error(std::string(op) + ": " + std::to_string(groups) + " groups for " + std::to_string(e) + " experts");
  if (capacity > 0 && capacity * groups < e)
    throw value_error(std::string(op) + ": " + std::to_string(groups) + " groups of at most " +
                      std::to_string(capacity) + " members cannot hold " + std::to_string(e) + " experts");
  detail::check_finite(op, "usage", f, true);
  detail::check_finite(op, "similarity", s, false);

  const auto order = detail::by_usage(f);
  layer_grouping r;
  r.groups = groups;
  r.labels.assign(e, -1);
  r.dominant.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(groups));
  std::vector<std::size_t> members(groups, 1);
  for (std::size_t i = 0; i < groups; ++i) r.labels[order[i]] = static_cast<index_t>(i);
  for (std::size_t n = groups; n < e; ++n) {
    const std::size_t x = order[n];
    std::size_t best = groups;
    for (std::size_t i = 0; i < groups; ++i) {
      if (capacity > 0 && members[i] >= capacity) continue;
      const auto d = static_cast<std::size_t>(r.dominant[i]);
      if (best == groups || s[x * e + d] > s[x * e + static_cast<std::size_t>(r.dominant[best])]) best = i;
    }
    r.labels[x] = static_cast<index_t>(best);
    ++members[best];
  }
  return r;
}

/// Every layer grouped: usage[l] (E_l), similarity[l] (E_l·E_l). Counts by
/// group_counts(usage, o); a non-merged layer's grouping is the identity
/// (group e = slot e, its similarity is not read).
inline std::vector<layer_grouping> group_experts(const std::vector<std::vector<double>>& usage,
                                                 const std::vector<std::vector<double>>& similarity,
                                                 const grouping_options& o = {}) {
  if (similarity.size() != usage.size())
    throw value_error("merge::group_experts: " + std::to_string(usage.size()) + " usage vectors, " +
                      std::to_string(similarity.size()) + " similarity matrices");
  const auto k = group_counts(usage, o);
  std::vector<layer_grouping> out;
  out.reserve(usage.size());
  for (std::size_t l = 0; l < usage.size(); ++l) {
    if (!detail::is_merged(o, l)) {  // every expert its own group, in slot order
      layer_grouping id;
      id.groups = usage[l].size();
      id.labels.resize(id.groups), id.dominant.resize(id.groups);
      std::iota(id.labels.begin(), id.labels.end(), index_t{0});
      std::iota(id.dominant.begin(), id.dominant.end(), index_t{0});
      out.push_back(std::move(id));
      continue;
    }
    try {
      out.push_back(group_layer(usage[l], similarity[l], k[l], o.capacity));
    } catch (const value_error& err) {
      throw value_error("merge::group_experts: layer " + std::to_string(l) + ": " + err.what());
    }
  }
  return out;
}

/// From each layer's routing statistics: usage() and logit_similarity().
inline std::vector<layer_grouping> group_experts(const std::vector<moe::routing_stats>& stats,
                                                 const grouping_options& o = {}) {
  std::vector<std::vector<double>> f, s;
  for (const auto& st : stats) f.push_back(st.usage()), s.push_back(st.logit_similarity());
  return group_experts(f, s, o);
}

/// A random grouping of `experts` slots into `groups` non-empty groups, drawn
/// from g: a shuffle's first `groups` slots found the groups (group i holds
/// the i-th), every other slot joins a uniformly drawn group. No dominant experts.
inline layer_grouping random_layer_grouping(std::size_t experts, std::size_t groups, rng& g) {
  if (groups == 0 || groups > experts)
    throw value_error("merge::random_grouping: " + std::to_string(groups) + " groups for " + std::to_string(experts) +
                      " experts");
  auto draw = [&](std::size_t n) {  // in [0, n)
    return static_cast<std::size_t>((std::uint64_t{g.next_u32()} * n) >> 32);
  };
  std::vector<std::size_t> perm(experts);
  std::iota(perm.begin(), perm.end(), std::size_t{0});
  for (std::size_t i = experts - 1; i > 0; --i) std::swap(perm[i], perm[draw(i + 1)]);
  layer_grouping r;
  r.groups = groups;
  r.labels.assign(experts, 0);
  for (std::size_t i = 0; i < experts; ++i) r.labels[perm[i]] = static_cast<index_t>(i < groups ? i : draw(groups));
  return r;
}

/// Random groupings with the group counts of `like` (e.g. group_experts'
/// result), seeded: the same seed gives the same groupings.
inline std::vector<layer_grouping> random_grouping(const std::vector<layer_grouping>& like, std::uint64_t seed) {
  rng g(seed);
  std::vector<layer_grouping> out;
  out.reserve(like.size());
  for (const auto& l : like) out.push_back(random_layer_grouping(l.labels.size(), l.groups, g));
  return out;
}

/// (E·E, row-major) (cos(w_i, w_j) + 1) / 2 of the experts' weights, w_s all
/// the bank's parameters of slot s's weight set, flattened and concatenated:
/// the "weight" similarity basis. A zero vector has cosine 0 with everything
/// (similarity 0.5) and 1 with itself, as logit_similarity.
template <class Bank>
std::vector<double> weight_similarity(Bank& bank) {
  const auto sets_of = bank.slots().host();  // (E) slot -> set
  const std::size_t e = sets_of.size(), g = bank.weight_sets();
  std::vector<double> gram(g * g, 0.0);
  bank.parameters([&](std::string_view, auto& p) {
    const auto host = p.value().template to<cpu>();
    const std::size_t inner = host.size() / g;
    const auto* d = host.data();
    for (std::size_t a = 0; a < g; ++a)
      for (std::size_t b = a; b < g; ++b) {
        double dot = 0;
        for (std::size_t i = 0; i < inner; ++i)
          dot += detail::as_double(d[a * inner + i]) * detail::as_double(d[b * inner + i]);
        gram[a * g + b] += dot;
        if (a != b) gram[b * g + a] += dot;
      }
  });
  std::vector<double> s(e * e, 0.5);
  for (std::size_t i = 0; i < e; ++i)
    for (std::size_t j = 0; j < e; ++j) {
      const auto a = static_cast<std::size_t>(sets_of[i]), b = static_cast<std::size_t>(sets_of[j]);
      const double norms = std::sqrt(gram[a * g + a] * gram[b * g + b]);
      if (i == j) s[i * e + j] = 1.0;
      else if (norms > 0) s[i * e + j] = (gram[a * g + b] / norms + 1.0) / 2.0;
    }
  return s;
}

}  // namespace moekit::merge
