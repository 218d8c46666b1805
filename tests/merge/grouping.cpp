// MC-SMoE grouping and merging (merge/grouping.hpp, merge/merge.hpp) and the
// weighted share() of the expert banks (moe/expert_bank.hpp). Pinned:
// - group counts under the global budget on a hand-computed 3-layer example
//   (E = 6): groups move to the layer whose usage is spread out, every layer
//   keeps its argmax, non-merged layers keep E groups (identity), the counts
//   sum to the budget, including on ties (stable order: layer, then expert);
// - members join their most similar dominant expert; ties (usage, argmax,
//   similarity) and the member capacity follow the documented rules;
// - random grouping: the given counts, every group non-empty, seeded;
// - weight similarity on weights with known cosines;
// - share(map, weights) against a host weighted mean (FFN with biases and
//   SwiGLU, zero-weight groups, re-sharing a shared bank), and its errors;
// - merging identical experts leaves a moe::layer's outputs and gradients
//   unchanged; a frequency (or uniform) merge equals a layer built by hand
//   from the averaged weights;
// - a merged moe_bottleneck_mlp saves a smaller checkpoint that reloads
//   through moe::load_slot_maps with G sets and bitwise equal outputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include <moekit.hpp>
#include <moekit/merge/grouping.hpp>
#include <moekit/merge/merge.hpp>
#include <moekit/mlp/moe_bottleneck_mlp.hpp>
#include <moekit/moe.hpp>

#include "../support/temp_dir.hpp"

using namespace moekit;

namespace {

using labels_t = std::vector<index_t>;

// E·E similarity: 1 on the diagonal, 0.5 elsewhere, then the given symmetric entries.
std::vector<double> similarity(std::size_t e, std::initializer_list<std::tuple<std::size_t, std::size_t, double>> set) {
  std::vector<double> s(e * e, 0.5);
  for (std::size_t i = 0; i < e; ++i) s[i * e + i] = 1.0;
  for (auto [i, j, v] : set) s[i * e + j] = s[j * e + i] = v;
  return s;
}

// The hand example: layer 0 concentrated, layer 1 spread out, layer 2 in between.
const std::vector<std::vector<double>> usage3 = {
    {0.70, 0.10, 0.08, 0.06, 0.04, 0.02},
    {0.20, 0.18, 0.17, 0.16, 0.15, 0.14},
    {0.05, 0.50, 0.25, 0.10, 0.06, 0.04},
};
const std::vector<std::vector<double>> sim3 = {
    similarity(6, {}),
    // dominant experts (k = 3) are 0, 1, 2: 3 -> 2, 4 -> 0, 5 -> 1.
    similarity(6, {{3, 2, 0.9}, {4, 0, 0.8}, {5, 1, 0.7}}),
    // dominant experts (k = 2) are 1, 2: 3 -> 2, 4 -> 1, 0 ties (-> group 0), 5 -> 1 (capacity: 2).
    similarity(6, {{3, 2, 0.9}, {4, 1, 0.8}, {0, 1, 0.6}, {0, 2, 0.6}, {5, 1, 0.9}, {5, 2, 0.6}}),
};

double max_abs_diff(const double* a, const double* b, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
template <class T, class S>
double max_abs_diff(const tensor<T, S>& a, const tensor<T, S>& b) {
  REQUIRE(a.size() == b.size());
  return max_abs_diff(a.data(), b.data(), a.size());
}

using router_d = moe::top_k_router<dyn, dyn, dyn, double>;
using ffn_d = moe::ffn_expert<dyn, dyn>;  // GELU, biases
using swiglu_d = moe::swiglu_expert<dyn, dyn>;
template <class X>
using grp_layer_of = moe::layer<router_d, X, double>;
template <class X>
using grp_bank_of = typename X::template bank<dyn, double, cpu>;
constexpr std::size_t grp_d = 5, grp_f = 4, grp_e = 6, grp_t = 16;

template <class X>
grp_layer_of<X> make_layer(std::uint64_t seed) {
  rng g(seed);
  router_d router(g, {}, grp_d, grp_e, 2);
  router.parameters([&](std::string_view, auto& w) { w.value() = normal<double>(g, w.shape(), 0.0, 2.0); });
  return grp_layer_of<X>(std::move(router), grp_bank_of<X>(g, grp_e, grp_d, grp_f));
}

// Every parameter of a bank per slot: name -> (E · inner), slot s holding its current set.
template <class Bank>
std::map<std::string, std::vector<double>> per_slot(Bank& bank) {
  const auto sets = bank.slots().host();
  std::map<std::string, std::vector<double>> out;
  bank.parameters([&](std::string_view name, auto& p) {
    const std::size_t inner = p.size() / p.extent(0);
    auto& v = out[std::string(name)];
    for (index_t set : sets) v.insert(v.end(), p.value().data() + set * inner, p.value().data() + (set + 1) * inner);
  });
  return out;
}

// Σ_{s→g} w_s·v_s / Σ_{s→g} w_s per group (plain mean when the weights sum to 0): (G · inner).
std::vector<double> weighted_mean(const std::vector<double>& slots, const labels_t& map, const std::vector<double>& w) {
  const std::size_t e = map.size(), inner = slots.size() / e;
  const std::size_t g = static_cast<std::size_t>(*std::max_element(map.begin(), map.end())) + 1;
  std::vector<double> sum(g * inner, 0.0), total(g, 0.0), count(g, 0.0);
  for (std::size_t s = 0; s < e; ++s) total[map[s]] += w[s], count[map[s]] += 1;
  for (std::size_t s = 0; s < e; ++s) {
    const double c = total[map[s]] > 0 ? w[s] / total[map[s]] : 1.0 / count[map[s]];
    for (std::size_t i = 0; i < inner; ++i) sum[map[s] * inner + i] += c * slots[s * inner + i];
  }
  return sum;
}

struct run_result {
  tensor<double, shape<dyn, dyn>> y, dx;
  std::map<std::string, std::vector<double>> grads;
};
template <class L>
run_result grp_run(L& layer, const tensor<double, shape<dyn, dyn>>& x, const tensor<double, shape<dyn, dyn>>& dy) {
  visit_parameters(layer, [](const std::string&, auto& p) { p.zero_grad(); });
  tape t;
  auto xv = t.variable(x);
  auto y = layer(xv);
  t.backward(y, dy);
  run_result r{y.value().clone(), xv.grad().clone(), {}};
  visit_parameters(layer, [&](const std::string& name, auto& p) {
    r.grads.emplace(name, std::vector<double>(p.grad().data(), p.grad().data() + p.size()));
  });
  return r;
}

}  // namespace

TEST_CASE("group_counts: the global budget follows usage; every layer keeps its argmax", "[merge][grouping]") {
  // All merged, 2 groups on average: total 6. Forced: the argmax of each layer
  // (L0 e0, L1 e0, L2 e1); then by usage: L2 e2 (.25), L1 e1 (.18), L1 e2 (.17).
  CHECK(merge::group_counts(usage3, {.average_groups = 2}) == std::vector<std::size_t>{1, 3, 2});
  // A fixed count per layer.
  CHECK(merge::group_counts(usage3, {.average_groups = 2, .global_budget = false}) == std::vector<std::size_t>{2, 2, 2});
  // Layer 2 not merged: total 2·2 + 6 = 10, its 6 entries forced, then L1 e1, L1 e2.
  CHECK(merge::group_counts(usage3, {.average_groups = 2, .merged_layers = {true, true, false}}) ==
        std::vector<std::size_t>{1, 3, 6});
  // Layer 0 not merged: total 6 + 4 = 10: forced 6 + L1 e0 + L2 e1, then L2 e2, L1 e1.
  CHECK(merge::group_counts(usage3, {.average_groups = 2, .merged_layers = {false, true, true}}) ==
        std::vector<std::size_t>{6, 2, 2});
  // The smallest budget keeps exactly the argmax of every layer; the largest keeps all.
  CHECK(merge::group_counts(usage3, {.average_groups = 1}) == std::vector<std::size_t>{1, 1, 1});
  CHECK(merge::group_counts(usage3, {.average_groups = 6}) == std::vector<std::size_t>{6, 6, 6});
  // Usage that does not sum to 1 (e.g. top-2 selection frequencies, above 1):
  // the forced entries still come first.
  const std::vector<std::vector<double>> big = {{5, 4, 3}, {0.5, 0.25, 0.25}};
  CHECK(merge::group_counts(big, {.average_groups = 1, .merged_layers = {true, false}}) ==
        std::vector<std::size_t>{1, 3});
  CHECK(merge::group_counts(big, {.average_groups = 2}) == std::vector<std::size_t>{3, 1});
  for (std::size_t avg = 1; avg <= 6; ++avg) {
    const auto k = merge::group_counts(usage3, {.average_groups = avg});
    CHECK(std::accumulate(k.begin(), k.end(), std::size_t{0}) == 3 * avg);
  }
}

TEST_CASE("group_counts: ties at the threshold break by layer, then expert; the budget is met", "[merge][grouping]") {
  // Sorted entries: 1, 1 (forced), then four .25 ties: L0 e1, L0 e2, L1 e1, L1 e2.
  // Total 4 keeps L0 e1 and L0 e2 (the reference's "> threshold" would keep only 2 entries).
  const std::vector<std::vector<double>> tied = {{0.5, 0.25, 0.25, 0}, {0.5, 0.25, 0.25, 0}};
  CHECK(merge::group_counts(tied, {.average_groups = 2}) == std::vector<std::size_t>{3, 1});
  CHECK(merge::group_counts(tied, {.average_groups = 3}) == std::vector<std::size_t>{3, 3});
  // Argmax ties: the lower index is forced, and is the first dominant expert.
  const std::vector<std::vector<double>> flat = {{0, 0.375, 0.375, 0.25}, {0.25, 0.25, 0.25, 0.25}};
  const auto g = merge::group_experts(flat, {similarity(4, {}), similarity(4, {})}, {.average_groups = 1});
  CHECK(g[0].dominant == labels_t{1});
  CHECK(g[1].dominant == labels_t{0});
  CHECK(g[0].labels == labels_t{0, 0, 0, 0});
}

TEST_CASE("group_experts: dominant experts by usage, members to the most similar dominant expert", "[merge][grouping]") {
  const auto g = merge::group_experts(usage3, sim3, {.average_groups = 2});
  REQUIRE(g.size() == 3);
  CHECK(g[0].groups == 1);
  CHECK(g[0].dominant == labels_t{0});
  CHECK(g[0].labels == labels_t{0, 0, 0, 0, 0, 0});
  CHECK(g[1].groups == 3);
  CHECK(g[1].dominant == labels_t{0, 1, 2});
  CHECK(g[1].labels == labels_t{0, 1, 2, 2, 0, 1});
  CHECK(g[2].groups == 2);
  CHECK(g[2].dominant == labels_t{1, 2});
  CHECK(g[2].labels == labels_t{0, 0, 1, 1, 0, 0});  // expert 0 ties: the lower group (the more used dominant)

  // Every member's group is the dominant expert it is most similar to.
  for (std::size_t l = 0; l < 3; ++l)
    for (std::size_t e = 0; e < grp_e; ++e) {
      const auto own = static_cast<std::size_t>(g[l].dominant[static_cast<std::size_t>(g[l].labels[e])]);
      for (index_t d : g[l].dominant) CHECK(sim3[l][e * grp_e + own] >= sim3[l][e * grp_e + static_cast<std::size_t>(d)]);
    }

  // From routing statistics: the same as from usage() and logit_similarity().
  rng r(5);
  moe::top_k_router<6, 6, 1> router(r);
  std::vector<moe::routing_stats> stats(2);
  tape t;
  stats[0].add(router.route(t.input(normal<float>(r, shape<dyn, 6>{40}))));
  stats[1].add(router.route(t.input(normal<float>(r, shape<dyn, 6>{40}, 0.f, 3.f))));
  const auto a = merge::group_experts(stats, {.average_groups = 3});
  const auto b = merge::group_experts({stats[0].usage(), stats[1].usage()},
                                      {stats[0].logit_similarity(), stats[1].logit_similarity()}, {.average_groups = 3});
  for (std::size_t l = 0; l < 2; ++l) CHECK(a[l].labels == b[l].labels);
  CHECK(a[0].groups + a[1].groups == 6);

  // A non-merged layer is the identity grouping, and a fixed count groups as group_layer.
  const auto n = merge::group_experts(usage3, sim3, {.average_groups = 2, .merged_layers = {true, true, false}});
  CHECK(n[2].groups == 6);
  CHECK(n[2].labels == labels_t{0, 1, 2, 3, 4, 5});
  CHECK(n[2].dominant == labels_t{0, 1, 2, 3, 4, 5});
  CHECK(n[1].labels == g[1].labels);
  const auto fixed = merge::group_experts(usage3, sim3, {.average_groups = 2, .global_budget = false});
  CHECK(fixed[1].labels == merge::group_layer(usage3[1], sim3[1], 2).labels);
  CHECK(fixed[1].labels == labels_t{0, 1, 0, 0, 0, 1});  // 2 ties groups 0/1 (0.5 each): group 0
  CHECK(g[1].slots().weight_sets() == 3);
}

TEST_CASE("group_layer: member order and capacity", "[merge][grouping]") {
  // Without capacity expert 5 joins group 0 (.9); group 0 is full (1, 4, 0) with capacity 3.
  CHECK(merge::group_layer(usage3[2], sim3[2], 2).labels == labels_t{0, 0, 1, 1, 0, 0});
  CHECK(merge::group_layer(usage3[2], sim3[2], 2, 3).labels == labels_t{0, 0, 1, 1, 0, 1});
  // Usage ties: dominant experts 1 (.5) then 0 (lower index among the .25s); members
  // 2 and 3 (tied) both prefer expert 1's group; capacity 2: 2 (lower index) comes first.
  const std::vector<double> f = {0.25, 0.5, 0.25, 0.25};
  const auto s = similarity(4, {{2, 1, 0.9}, {3, 1, 0.9}});
  const auto r = merge::group_layer(f, s, 2, 2);
  CHECK(r.dominant == labels_t{1, 0});
  CHECK(r.labels == labels_t{1, 0, 0, 1});
  CHECK(merge::group_layer(f, s, 2).labels == labels_t{1, 0, 0, 0});
  // One group per expert: each its own group, numbered by usage.
  CHECK(merge::group_layer(f, s, 4).labels == labels_t{1, 0, 2, 3});
}

TEST_CASE("random_grouping: the given counts, every group used, seeded", "[merge][grouping]") {
  std::vector<merge::layer_grouping> like(3);
  like[0].labels.assign(8, 0), like[0].groups = 3;
  like[1].labels.assign(6, 0), like[1].groups = 6;
  like[2].labels.assign(5, 0), like[2].groups = 1;
  for (std::uint64_t seed : {1, 2, 3, 4, 5}) {
    const auto r = merge::random_grouping(like, seed);
    REQUIRE(r.size() == 3);
    for (std::size_t l = 0; l < 3; ++l) {
      CHECK(r[l].groups == like[l].groups);
      CHECK(r[l].labels.size() == like[l].labels.size());
      CHECK(r[l].dominant.empty());
      std::vector<int> members(r[l].groups, 0);
      for (index_t x : r[l].labels) {
        REQUIRE(x >= 0);
        REQUIRE(static_cast<std::size_t>(x) < r[l].groups);
        ++members[static_cast<std::size_t>(x)];
      }
      for (int m : members) CHECK(m > 0);
      REQUIRE_NOTHROW(r[l].slots());
    }
    CHECK(merge::random_grouping(like, seed)[0].labels == r[0].labels);
  }
  // Different seeds give different groupings of 8 experts into 3 groups.
  std::vector<labels_t> seen;
  for (std::uint64_t seed = 0; seed < 6; ++seed) seen.push_back(merge::random_grouping(like, seed)[0].labels);
  std::sort(seen.begin(), seen.end());
  CHECK(std::unique(seen.begin(), seen.end()) - seen.begin() > 1);
  REQUIRE_THROWS_WITH(merge::random_grouping({merge::layer_grouping{{0, 0}, {}, 3}}, 0),
                      Catch::Contains("random_grouping") && Catch::Contains("3 groups for 2 experts"));
}

TEST_CASE("weight_similarity: (cos + 1) / 2 of the flattened weight sets", "[merge][grouping]") {
  rng g(9);
  grp_bank_of<ffn_d> bank(g, 4, grp_d, grp_f);
  // Slot 1 = 2 · slot 0, slot 2 = -slot 0, slot 3 = 0.
  bank.parameters([&](std::string_view, auto& p) {
    const std::size_t inner = p.size() / 4;
    double* d = p.value().data();
    for (std::size_t i = 0; i < inner; ++i) d[inner + i] = 2 * d[i], d[2 * inner + i] = -d[i], d[3 * inner + i] = 0;
  });
  auto s = merge::weight_similarity(bank);
  REQUIRE(s.size() == 16);
  CHECK(s[0 * 4 + 1] == Approx(1.0));
  CHECK(s[0 * 4 + 2] == Approx(0.0).margin(1e-12));
  CHECK(s[1 * 4 + 2] == Approx(0.0).margin(1e-12));
  CHECK(s[0 * 4 + 3] == 0.5);
  CHECK(s[3 * 4 + 3] == 1.0);
  // A general pair, by hand over all four parameters.
  rng g2(10);
  grp_bank_of<ffn_d> other(g2, 4, grp_d, grp_f);
  const auto w = per_slot(other);
  double dot = 0, n0 = 0, n1 = 0;
  const std::size_t inner_total = [&] {
    std::size_t n = 0;
    for (auto& [name, v] : w) n += v.size() / 4;
    return n;
  }();
  CHECK(inner_total == grp_d * grp_f + grp_f + grp_f * grp_d + grp_d);
  for (auto& [name, v] : w) {
    const std::size_t inner = v.size() / 4;
    for (std::size_t i = 0; i < inner; ++i) {
      dot += v[i] * v[inner + i];
      n0 += v[i] * v[i], n1 += v[inner + i] * v[inner + i];
    }
  }
  s = merge::weight_similarity(other);
  CHECK(s[1] == Approx((dot / std::sqrt(n0 * n1) + 1) / 2));
  CHECK(s[4] == s[1]);
  // A shared bank: slots of one set are identical (similarity 1).
  other.share(moe::slot_map<cpu>(labels_t{0, 1, 0, 2}));
  s = merge::weight_similarity(other);
  CHECK(s[0 * 4 + 2] == Approx(1.0));
  CHECK(s[0 * 4 + 1] != Approx(1.0));
}

TEMPLATE_TEST_CASE("share(map, weights): the weighted mean of the slots' sets", "[merge][share]", ffn_d, swiglu_d) {
  rng g(21);
  grp_bank_of<TestType> bank(g, 5, grp_d, grp_f);
  const auto before = per_slot(bank);
  // Group 0: slots 0 (w 1) and 2 (w 3); group 1: slots 1 and 3, weights 0 (plain mean); group 2: slot 4.
  const labels_t map = {0, 1, 0, 1, 2};
  const std::vector<double> w = {1, 0, 3, 0, 2};
  bank.share(moe::slot_map<cpu>(map), w);
  REQUIRE(bank.weight_sets() == 3);
  REQUIRE(bank.experts() == 5);
  std::size_t checked = 0;
  bank.parameters([&](std::string_view name, auto& p) {
    const auto expected = weighted_mean(before.at(std::string(name)), map, w);
    REQUIRE(p.size() == expected.size());
    INFO(name);
    CHECK(max_abs_diff(p.value().data(), expected.data(), expected.size()) < 1e-14);
    ++checked;
  });
  CHECK(checked == (std::is_same_v<TestType, ffn_d> ? 4u : 3u));
  // Spot check of the formula: group 0 of the first matrix = (1·W0 + 3·W2) / 4.
  const auto& w1 = before.begin()->second;
  const std::size_t inner = w1.size() / 5;
  const auto expected0 = (1 * w1[0] + 3 * w1[2 * inner]) / 4;
  bank.parameters([&, done = false](std::string_view name, auto& p) mutable {
    if (done || name != before.begin()->first) return;
    CHECK(p.value().data()[0] == Approx(expected0));
    done = true;
  });

  // Re-sharing a shared bank weights the slots' current sets.
  const auto mid = per_slot(bank);
  const labels_t all = {0, 0, 0, 0, 0};
  const std::vector<double> w2 = {0.5, 1, 0.25, 2, 1};
  bank.share(moe::slot_map<cpu>(all), w2);
  REQUIRE(bank.weight_sets() == 1);
  bank.parameters([&](std::string_view name, auto& p) {
    const auto expected = weighted_mean(mid.at(std::string(name)), all, w2);
    CHECK(max_abs_diff(p.value().data(), expected.data(), expected.size()) < 1e-14);
  });

  // share(map) is share(map, equal weights).
  rng g3(22);
  grp_bank_of<TestType> a(g3, 5, grp_d, grp_f);
  auto b = a;
  a.share(moe::slot_map<cpu>(map));
  b.share(moe::slot_map<cpu>(map), std::vector<double>(5, 7.0));
  const auto pa = per_slot(a), pb = per_slot(b);
  for (auto& [name, v] : pa) CHECK(max_abs_diff(v.data(), pb.at(name).data(), v.size()) < 1e-14);
}

TEST_CASE("share(map, weights) and merge_experts reject bad weights and sizes", "[merge][share][errors]") {
  rng g(23);
  grp_bank_of<ffn_d> bank(g, 4, grp_d, grp_f);
  const moe::slot_map<cpu> m(labels_t{0, 1, 0, 1});
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(bank.share(m, {1, -1, 1, 1}),
                      Catch::Contains("share") && Catch::Contains("slot 1") && Catch::Contains(">= 0"));
  REQUIRE_THROWS_WITH(bank.share(m, {1, 1, nan, 1}), Catch::Contains("share") && Catch::Contains("slot 2"));
  REQUIRE_THROWS_WITH(bank.share(m, {1, 1, 1, inf}), Catch::Contains("share") && Catch::Contains("slot 3"));
  REQUIRE_THROWS_WITH(bank.share(m, {1, 1, 1}), Catch::Contains("share") && Catch::Contains("3 slot weights for 4 slots"));
  REQUIRE_THROWS_WITH(bank.share(moe::slot_map<cpu>(labels_t{0, 0, 0}), {1, 1, 1}),
                      Catch::Contains("share") && Catch::Contains("3 slots"));
  CHECK(bank.weight_sets() == 4);  // untouched

  REQUIRE_THROWS_WITH(merge::merge_experts(bank, labels_t{0, 1, 0}, {1, 1, 1}),
                      Catch::Contains("merge_experts") && Catch::Contains("3 labels for a bank of 4 slots"));
  REQUIRE_THROWS_WITH(merge::merge_experts(bank, labels_t{0, 1, 0, 1}, {1, 1}),
                      Catch::Contains("merge_experts") && Catch::Contains("2 usage values"));
  REQUIRE_THROWS_WITH(merge::merge_experts(bank, labels_t{0, 1, 0, 1}, {1, 1, -2, 1}),
                      Catch::Contains("merge_experts") && Catch::Contains("slot 2"));
  REQUIRE_THROWS_WITH(merge::merge_experts(bank, labels_t{0, 2, 0, 2}, {1, 1, 1, 1}),
                      Catch::Contains("merge_experts") && Catch::Contains("serves no slot"));
  CHECK(bank.weight_sets() == 4);
  merge::merge_experts(bank, labels_t{0, 1, 0, 1}, {}, merge::weighting::uniform);  // uniform needs no usage
  CHECK(bank.weight_sets() == 2);
}

TEST_CASE("grouping rejects bad inputs", "[merge][grouping][errors]") {
  using Catch::Contains;
  REQUIRE_THROWS_WITH(merge::group_counts({}), Contains("group_counts") && Contains("no layers"));
  REQUIRE_THROWS_WITH(merge::group_counts(usage3, {.average_groups = 7}),
                      Contains("average_groups 7") && Contains("[1, 6]"));
  REQUIRE_THROWS_WITH(merge::group_counts(usage3, {.average_groups = 0}), Contains("average_groups 0"));
  REQUIRE_THROWS_WITH(merge::group_counts(usage3, {.merged_layers = {true}}),
                      Contains("merged_layers has 1 entries for 3 layers"));
  REQUIRE_THROWS_WITH(merge::group_counts({{0.5, -0.1}}, {.average_groups = 1}),
                      Contains("layer 0: usage[1]") && Contains(">= 0"));
  REQUIRE_THROWS_WITH(merge::group_experts(usage3, {sim3[0]}, {.average_groups = 2}),
                      Contains("group_experts") && Contains("3 usage vectors, 1 similarity"));
  REQUIRE_THROWS_WITH(merge::group_experts(usage3, {sim3[0], sim3[1], {0.5}}, {.average_groups = 2}),
                      Contains("layer 2") && Contains("similarity has 1 entries, expected 6·6"));
  REQUIRE_THROWS_WITH(merge::group_layer(usage3[0], sim3[0], 0), Contains("group_layer") && Contains("0 groups for 6"));
  REQUIRE_THROWS_WITH(merge::group_layer(usage3[0], sim3[0], 2, 2), Contains("cannot hold 6 experts"));
  auto bad = sim3[0];
  bad[7] = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(merge::group_layer(usage3[0], bad, 2), Contains("similarity[7]"));
  // A global budget that leaves a layer too few groups for the capacity.
  REQUIRE_THROWS_WITH(merge::group_experts(usage3, sim3, {.average_groups = 2, .capacity = 3}),
                      Contains("layer 0") && Contains("cannot hold"));
}

TEMPLATE_TEST_CASE("merging identical experts leaves a moe::layer's outputs and gradients unchanged",
                   "[merge][merge_experts]", ffn_d, swiglu_d) {
  rng g(31);
  const auto x = normal<double>(g, shape<dyn, dyn>{grp_t, grp_d});
  const auto dy = normal<double>(g, shape<dyn, dyn>{grp_t, grp_d});
  auto plain = make_layer<TestType>(32);
  plain.experts().parameters([&](std::string_view, auto& p) {  // every set = set 0
    const std::size_t inner = p.size() / grp_e;
    for (std::size_t s = 1; s < grp_e; ++s) std::copy(p.value().data(), p.value().data() + inner, p.value().data() + s * inner);
  });
  auto merged = plain;
  const labels_t labels = {0, 1, 1, 0, 2, 1};
  merge::merge_experts(merged.experts(), labels, {0.3, 0.1, 0.2, 0, 0.25, 0.15});
  REQUIRE(merged.experts().weight_sets() == 3);
  const auto a = grp_run(plain, x, dy), b = grp_run(merged, x, dy);
  CHECK(max_abs_diff(a.y, b.y) < 1e-12);
  CHECK(max_abs_diff(a.dx, b.dx) < 1e-12);
  const auto& ra = a.grads.at("router.weight");
  CHECK(max_abs_diff(ra.data(), b.grads.at("router.weight").data(), ra.size()) < 1e-12);
  // A merged set's gradient is the sum of its slots' gradients.
  for (auto& [name, gb] : b.grads) {
    if (name == "router.weight") continue;
    const auto& ga = a.grads.at(name);
    const std::size_t inner = ga.size() / grp_e;
    std::vector<double> summed(3 * inner, 0.0);
    for (std::size_t s = 0; s < grp_e; ++s)
      for (std::size_t i = 0; i < inner; ++i) summed[static_cast<std::size_t>(labels[s]) * inner + i] += ga[s * inner + i];
    INFO(name);
    REQUIRE(gb.size() == summed.size());
    CHECK(max_abs_diff(gb.data(), summed.data(), summed.size()) < 1e-12);
  }
}

TEMPLATE_TEST_CASE("a frequency or uniform merge equals a layer built from the averaged weights", "[merge][merge_experts]",
                   ffn_d, swiglu_d) {
  rng g(41);
  const auto x = normal<double>(g, shape<dyn, dyn>{grp_t, grp_d});
  const labels_t labels = {2, 0, 1, 0, 2, 2};
  const std::vector<double> f = {0.125, 0.25, 0.2, 0.05, 0.375, 0};
  for (auto w : {merge::weighting::frequency, merge::weighting::uniform}) {
    auto merged = make_layer<TestType>(42);
    auto by_hand = make_layer<TestType>(42);  // same router and weights, unshared
    const auto before = per_slot(merged.experts());
    merge::merge_experts(merged.experts(), labels, f, w);
    CHECK(merged.experts().weight_sets() == 3);
    const std::vector<double> weights = w == merge::weighting::frequency ? f : std::vector<double>(grp_e, 1.0);
    by_hand.experts().parameters([&](std::string_view name, auto& p) {
      const auto sets = weighted_mean(before.at(std::string(name)), labels, weights);
      const std::size_t inner = p.size() / grp_e;
      for (std::size_t s = 0; s < grp_e; ++s)
        std::copy(sets.begin() + labels[s] * static_cast<std::ptrdiff_t>(inner),
                  sets.begin() + (labels[s] + 1) * static_cast<std::ptrdiff_t>(inner), p.value().data() + s * inner);
    });
    tape t;
    const auto ym = merged(t.input(x)).value().clone();
    const auto yh = by_hand(t.input(x)).value().clone();
    CHECK(max_abs_diff(ym, yh) < 1e-12);
  }
  // The two weightings differ.
  auto a = make_layer<TestType>(42), b = make_layer<TestType>(42);
  merge::merge_experts(a.experts(), merge::layer_grouping{labels, {}, 3}, f);
  merge::merge_experts(b.experts(), labels, f, merge::weighting::uniform);
  tape t;
  CHECK(max_abs_diff(a(t.input(x)).value().clone(), b(t.input(x)).value().clone()) > 1e-6);
}

TEST_CASE("a merged moe_bottleneck_mlp reloads from a smaller checkpoint with G sets and equal outputs",
          "[merge][io]") {
  using moe_t = moe::token_choice_moe<>;
  using model_t = mlp::moe_bottleneck_mlp<moe_t>;
  const mlp::config sizes{.in = 12, .width = 16, .blocks = 3, .classes = 5, .expansion = 4};
  auto make = [](rng& g, std::size_t d, std::size_t ff) {
    return moe::make_switch(g, {.d_model = d, .d_ff = ff, .experts = 8});
  };
  rng g(51);
  model_t model(g, sizes, make);
  model.train(false);
  REQUIRE(merge::count_moe_layers(model) == 3);

  // Calibration statistics, one per MoE layer.
  std::vector<moe::routing_stats> stats(3);
  for (int batch = 0; batch < 2; ++batch) {
    tape t;
    model(t.input(normal<float>(g, shape<dyn, dyn>{64, 12})));
    merge::for_each_moe_layer(model, [&](std::size_t l, auto& layer) { stats[l].add(layer.last_routing()); });
  }
  for (auto& s : stats) REQUIRE(s.tokens() == 128);

  moekit::testing::temp_dir dir("merge");
  const auto full = dir / "full.safetensors", small = dir / "merged.safetensors";
  io::save_safetensors(full, model);
  const std::size_t params = count_parameters(model), bytes = merge::parameter_bytes(model);
  CHECK(bytes == params * sizeof(float));

  const auto groups = merge::group_experts(stats, {.average_groups = 3});
  REQUIRE(groups.size() == 3);
  CHECK(groups[0].groups + groups[1].groups + groups[2].groups == 9);
  merge::merge_model(model, groups, stats);
  for (std::size_t l = 0; l < 3; ++l) {
    CHECK(model.moe(l).experts().weight_sets() == groups[l].groups);
    CHECK(model.moe(l).experts().slots().host() == groups[l].labels);
    CHECK(model.moe(l).router().experts() == 8);
  }
  // 15 of 24 expert sets gone: each set holds 2·16·64 + 64 + 16 parameters.
  const std::size_t per_set = 2 * 16 * 64 + 64 + 16;
  CHECK(count_parameters(model) == params - 15 * per_set);
  CHECK(merge::parameter_bytes(model) == bytes - 15 * per_set * sizeof(float));
  io::save_safetensors(small, model);
  CHECK(std::filesystem::file_size(small) < std::filesystem::file_size(full));
  // The slot maps (3 × 8 indices) and their header entries cost far less than one set.
  CHECK(std::filesystem::file_size(full) - std::filesystem::file_size(small) > 14 * per_set * sizeof(float));

  rng g2(52);
  model_t fresh(g2, sizes, make);
  fresh.train(false);
  moe::load_slot_maps(small, fresh);
  io::load_safetensors(small, fresh);
  for (std::size_t l = 0; l < 3; ++l) CHECK(fresh.moe(l).experts().weight_sets() == groups[l].groups);
  const auto x = normal<float>(g, shape<dyn, dyn>{20, 12});
  tape t;
  const auto y0 = model(t.input(x)).value().clone();
  const auto y1 = fresh(t.input(x)).value().clone();
  REQUIRE(y0.size() == y1.size());
  CHECK(std::equal(y0.data(), y0.data() + y0.size(), y1.data()));

  REQUIRE_THROWS_WITH(merge::merge_model(fresh, {groups[0]}, stats),
                      Catch::Contains("merge_model") && Catch::Contains("3 MoE layers"));
}
