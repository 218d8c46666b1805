// The public MoE frame (moe/dispatch.hpp, slot_map.hpp, cast_router.hpp):
// plans from a (T, k) choice and from triples (order, capacity, the
// per-(token, slot) view), by_sequence, banks with shared weights (against a
// dense reference with tied weights, merging, checkpoints at the merged
// size), a plan-aware bank (against a dense reference), and an fp32 router
// under an fp64 layer.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/moe.hpp>

#include "../support/positional_expert.hpp"
#include "../support/temp_dir.hpp"

using namespace moekit;

namespace {

template <class T>
std::vector<T> values(const tensor<T, shape<dyn>>& t) {
  return {t.data(), t.data() + t.size()};
}
std::vector<index_t> ints(std::initializer_list<index_t> v) { return v; }

double max_abs_diff(const double* a, const double* b, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
template <class TA, class SA, class TB, class SB>
double max_abs_diff(const tensor<TA, SA>& a, const tensor<TB, SB>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i])));
  return m;
}

}  // namespace

TEST_CASE("plan_from_choice: order (expert, slot, token), capacity, and the per-(token, slot) view", "[moe][dispatch]") {
  tape t;
  const auto ids = from_values<index_t>(shape<dyn, dyn>{4, 2}, {0, 1, 1, 0, 0, 2, 0, 1});
  auto gates = t.variable(from_values<double>(shape<dyn, dyn>{4, 2}, {.1, .2, .3, .4, .5, .6, .7, .8}));

  auto plan = moe::plan_from_choice(ids, gates, 3);
  CHECK(plan.k == 2);
  CHECK(values(plan.token) == ints({0, 2, 3, 1, 1, 0, 3, 2}));
  CHECK(values(plan.expert) == ints({0, 0, 0, 0, 1, 1, 1, 2}));
  CHECK(values(plan.source) == ints({0, 4, 6, 3, 2, 1, 7, 5}));
  CHECK(values(plan.offsets) == ints({0, 4, 7, 8}));
  CHECK(values(plan.gate.value()) == std::vector<double>{.1, .5, .7, .4, .3, .2, .8, .6});
  CHECK(plan.dropped == 0);
  // The view: slot j of token t.
  CHECK(plan.choice(2, 1) == 2);
  CHECK(plan.choice_gate.value()(3, 0) == .7);

  auto capped = moe::plan_from_choice(ids, gates, 3, 2);
  CHECK(values(capped.token) == ints({0, 2, 1, 0, 2}));
  CHECK(values(capped.source) == ints({0, 4, 2, 1, 5}));
  CHECK(values(capped.offsets) == ints({0, 2, 4, 5}));
  CHECK(capped.dropped == 3);

  // The gates stay differentiable: d(Σ kept gates) is 1 at kept slots, 0 at dropped ones.
  t.backward(sum(capped.gate));
  CHECK(values(gates.grad().reshape(shape<dyn>{8})) == std::vector<double>{1, 1, 1, 0, 1, 1, 0, 0});

  const auto bad = from_values<index_t>(shape<dyn, dyn>{1, 2}, {0, 3});
  REQUIRE_THROWS_WITH(moe::plan_from_choice(bad, t.input(zeros<double>(shape<dyn, dyn>{1, 2})), 3),
                      Catch::Contains("plan_from_choice") && Catch::Contains("out of range"));
}

TEST_CASE("plan_from_assignments: triples grouped by expert in their own order", "[moe][dispatch]") {
  tape t;
  const auto token = from_values<index_t>(shape<dyn>{4}, {2, 0, 1, 2});
  const auto expert = from_values<index_t>(shape<dyn>{4}, {1, 0, 1, 0});
  auto gate = t.input(from_values<double>(shape<dyn>{4}, {.5, .25, .75, 1.0}));

  auto plan = moe::plan_from_assignments(3, 2, token, expert, gate);
  CHECK(values(plan.token) == ints({0, 2, 2, 1}));
  CHECK(values(plan.source) == ints({1, 3, 0, 2}));
  CHECK(values(plan.offsets) == ints({0, 2, 4}));
  CHECK(values(plan.gate.value()) == std::vector<double>{.25, 1.0, .5, .75});

  auto capped = moe::plan_from_assignments(3, 2, token, expert, gate, 1);
  CHECK(values(capped.token) == ints({0, 2}));
  CHECK(capped.dropped == 2);

  const auto far = from_values<index_t>(shape<dyn>{4}, {2, 0, 3, 2});
  REQUIRE_THROWS_WITH(moe::plan_from_assignments(3, 2, far, expert, gate),
                      Catch::Contains("plan_from_assignments") && Catch::Contains("out of range"));
  const auto bad_expert = from_values<index_t>(shape<dyn>{4}, {1, 0, 2, 0});
  REQUIRE_THROWS_WITH(moe::plan_from_assignments(3, 2, token, bad_expert, gate),
                      Catch::Contains("plan_from_assignments") && Catch::Contains("expert 2"));
}

TEST_CASE("by_sequence: each expert's rows in temporal order, one sub-segment per sequence", "[moe][dispatch]") {
  tape t;
  const auto token = from_values<index_t>(shape<dyn>{6}, {4, 5, 1, 3, 2, 0});
  const auto expert = from_values<index_t>(shape<dyn>{6}, {0, 1, 0, 0, 1, 0});
  auto gate = t.input(from_values<double>(shape<dyn>{6}, {4, 5, 1, 3, 2, 0}));  // gate = token: follows it
  auto plan = moe::by_sequence(moe::plan_from_assignments(6, 2, token, expert, gate), 3);
  CHECK(values(plan.token) == ints({0, 1, 3, 4, 2, 5}));
  CHECK(values(plan.gate.value()) == std::vector<double>{0, 1, 3, 4, 2, 5});
  CHECK(values(plan.offsets) == ints({0, 4, 6}));
  CHECK(plan.sub_segments_per_expert == 2);
  CHECK(values(plan.sub_offsets) == ints({0, 2, 4, 5, 6}));
  REQUIRE_THROWS_WITH(moe::by_sequence(plan, 4), Catch::Contains("by_sequence"));
}

namespace {

using router_d = moe::top_k_router<dyn, dyn, dyn, double>;
using expert_d = moe::ffn_expert<dyn, dyn>;
using layer_d = moe::layer<router_d, expert_d, double>;
constexpr std::size_t disp_d = 6, disp_f = 5, disp_e = 4, disp_t = 10;

layer_d make_layer(std::uint64_t seed, std::size_t k = 2) {
  rng g(seed);
  router_d router(g, {}, disp_d, disp_e, k);
  router.parameters([&](std::string_view, auto& w) { w.value() = normal<double>(g, w.shape(), 0.0, 2.0); });
  return layer_d(std::move(router), layer_d::bank_type(g, disp_e, disp_d, disp_f));
}

struct run_result {
  tensor<double, shape<dyn, dyn>> y, dx;
  std::map<std::string, tensor<double, shape<dyn>>> grads;
};
run_result run(layer_d& layer, const tensor<double, shape<dyn, dyn>>& x, const tensor<double, shape<dyn, dyn>>& dy) {
  visit_parameters(layer, [](const std::string&, auto& p) { p.zero_grad(); });
  tape t;
  auto xv = t.variable(x);
  auto y = layer(xv);
  t.backward(y, dy);
  run_result r{y.value().clone(), xv.grad().clone(), {}};
  visit_parameters(layer, [&](const std::string& name, auto& p) {
    r.grads.emplace(name, p.grad().clone().reshape(shape<dyn>{p.size()}));
  });
  return r;
}

}  // namespace

TEST_CASE("shared weights: E slots on G sets equal a dense layer with tied weights", "[moe][sharing]") {
  rng g(3);
  const auto x = normal<double>(g, shape<dyn, dyn>{disp_t, disp_d});
  const auto dy = normal<double>(g, shape<dyn, dyn>{disp_t, disp_d});
  auto shared = make_layer(11);
  auto tied = make_layer(11);  // same router and original weights
  const std::vector<index_t> map{0, 1, 0, 1};

  // share() merges by the mean of the slots of each set.
  const auto w1_before = shared.experts().w1().value().clone();  // (E, D, F)
  shared.experts().share(moe::slot_map<cpu>(map));
  REQUIRE(shared.experts().weight_sets() == 2);
  REQUIRE(shared.experts().experts() == 4);
  const std::size_t m = disp_d * disp_f;
  for (std::size_t i = 0; i < m; ++i) {
    CHECK(shared.experts().w1().value().data()[i] == Approx((w1_before.data()[i] + w1_before.data()[2 * m + i]) / 2));
    CHECK(shared.experts().w1().value().data()[m + i] ==
          Approx((w1_before.data()[m + i] + w1_before.data()[3 * m + i]) / 2));
  }
  // Parameters: router + 2 sets, not 4.
  const std::size_t per_set = 2 * disp_d * disp_f + disp_f + disp_d;
  CHECK(count_parameters(shared) == disp_d * disp_e + 2 * per_set);

  // The tied reference: 4 unshared sets, slot s holding set map[s]'s weights.
  shared.experts().parameters([&](std::string_view name, auto& p) {
    tied.experts().parameters([&](std::string_view name2, auto& q) {
      if (name != name2) return;
      const std::size_t inner = p.size() / p.extent(0);
      for (std::size_t s = 0; s < disp_e; ++s)
        std::copy(p.value().data() + map[s] * inner, p.value().data() + (map[s] + 1) * inner, q.value().data() + s * inner);
    });
  });

  const auto a = run(shared, x, dy), b = run(tied, x, dy);
  CHECK(max_abs_diff(a.y, b.y) < 1e-12);
  CHECK(max_abs_diff(a.dx, b.dx) < 1e-12);
  CHECK(max_abs_diff(a.grads.at("router.weight"), b.grads.at("router.weight")) < 1e-12);
  // Each shared set's gradient is the sum of its slots' gradients.
  for (const char* name : {"experts.w1", "experts.b1", "experts.w2", "experts.b2"}) {
    const auto& gs = a.grads.at(name);
    const auto& gt = b.grads.at(name);
    const std::size_t inner = gs.size() / 2;
    std::vector<double> summed(2 * inner, 0.0);
    for (std::size_t s = 0; s < disp_e; ++s)
      for (std::size_t i = 0; i < inner; ++i) summed[map[s] * inner + i] += gt[s * inner + i];
    INFO(name);
    CHECK(max_abs_diff(gs.data(), summed.data(), summed.size()) < 1e-12);
  }
  // The bank lists its matrices with their hidden axes.
  std::vector<std::string> hidden;
  shared.experts().hidden_weights([&](std::string_view name, auto& p, std::size_t axis) {
    hidden.push_back(std::string(name) + ":" + std::to_string(axis) + ":" + std::to_string(p.extent(axis)));
  });
  CHECK(hidden == std::vector<std::string>{"w1:2:5", "b1:1:5", "w2:1:5"});
}

TEST_CASE("shared weights: a checkpoint reloads at the merged size", "[moe][sharing][io]") {
  moekit::testing::temp_dir dir("dispatch");
  const auto path = dir / "merged.safetensors";
  rng g(4);
  const auto x = normal<double>(g, shape<dyn, dyn>{disp_t, disp_d});
  auto merged = make_layer(5);
  merged.experts().share(moe::slot_map<cpu>(std::vector<index_t>{2, 0, 1, 0}));
  io::save_safetensors(path, merged);

  auto fresh = make_layer(6);  // unshared, other weights
  REQUIRE_THROWS_AS(io::load_safetensors(path, fresh), io_error);  // 4 sets in the model, 3 in the file
  REQUIRE(fresh.experts().weight_sets() == 4);                     // and the model is untouched
  moe::load_slot_maps(path, fresh);
  REQUIRE(fresh.experts().weight_sets() == 3);
  io::load_safetensors(path, fresh);
  CHECK(fresh.experts().slots().host() == std::vector<index_t>{2, 0, 1, 0});
  CHECK(count_parameters(fresh) == count_parameters(merged));
  tape t;
  CHECK(max_abs_diff(merged(t.input(x)).value(), fresh(t.input(x)).value()) == 0.0);

  // A bank that shares weights needs its map in the file.
  const auto plain = dir / "plain.safetensors";
  auto unshared = make_layer(7);
  io::save_safetensors(plain, unshared);
  REQUIRE_THROWS_AS(moe::load_slot_maps(plain, fresh), io_error);
  REQUIRE_THROWS_WITH(moe::slot_map<cpu>(std::vector<index_t>{0, 2}), Catch::Contains("serves no slot"));
}

TEST_CASE("a plan-aware bank sees each row's token: equal to a dense reference", "[moe][plan_aware]") {
  using layer_t = moe::layer<router_d, moekit::testing::positional_expert<dyn>, double>;
  static_assert(moe::plan_aware_bank<layer_t::bank_type, var<double, shape<dyn, dyn>>, cpu>);
  constexpr std::size_t seq = 5;
  rng g(8);
  router_d router(g, {}, disp_d, disp_e, 2);
  router.parameters([&](std::string_view, auto& w) { w.value() = normal<double>(g, w.shape(), 0.0, 2.0); });
  layer_t layer(std::move(router), layer_t::bank_type(g, disp_e, seq, disp_d));
  const auto x = normal<double>(g, shape<dyn, dyn>{disp_t, disp_d});
  tape t;
  auto y = layer(t.input(x)).value();
  const auto& plan = layer.last_routing();
  const auto& w = layer.experts().w_.value();
  const auto& p = layer.experts().p_.value();
  for (std::size_t tok = 0; tok < disp_t; ++tok)
    for (std::size_t c = 0; c < disp_d; ++c) {
      double want = 0;
      for (std::size_t j = 0; j < 2; ++j) {
        const auto e = static_cast<std::size_t>(plan.choice(tok, j));
        double v = p(e * seq + tok % seq, c);
        for (std::size_t i = 0; i < disp_d; ++i) v += x(tok, i) * w(e, i, c);
        want += plan.choice_gate.value()(tok, j) * v;
      }
      CHECK(y(tok, c) == Approx(want).margin(1e-12));
    }
}

TEST_CASE("an fp32 router under an fp64 layer: gates cast where they meet the experts", "[moe][mixed]") {
  using router_f = moe::cast_router<moe::top_k_router<dyn, dyn, dyn, float>>;
  using layer_f = moe::layer<router_f, expert_d, double>;
  rng g(9);
  router_f router(g, moe::top_k_options{.load_balance_weight = 0.01}, disp_d, disp_e, 2);
  router.parameters([&](std::string_view, auto& w) { w.value() = normal<float>(g, w.shape(), 0.f, 2.f); });
  rng gb(10);
  layer_f mixed(std::move(router), layer_f::bank_type(gb, disp_e, disp_d, disp_f));
  // The same layer all in fp64, its router weight the fp32 one widened.
  rng gr(0);
  router_d router_d64(gr, {.load_balance_weight = 0.01}, disp_d, disp_e, 2);
  router_d64.parameters([&](std::string_view, auto& w) {
    mixed.router().parameters([&](std::string_view, auto& wf) { w.value() = cast<double>(wf.value()); });
  });
  rng gb2(10);
  layer_d wide(std::move(router_d64), layer_d::bank_type(gb2, disp_e, disp_d, disp_f));

  const auto x = normal<double>(g, shape<dyn, dyn>{disp_t, disp_d});
  tape t;
  auto xv = t.variable(x);
  auto y = mixed(xv);
  static_assert(std::is_same_v<decltype(y), var<double, shape<dyn, dyn>>>);
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(mixed.last_routing().gate)>, var<float, shape<dyn>>>);
  t.backward(sum(y));
  tape t2;
  auto xw = t2.variable(x);
  auto yw = wide(xw);
  t2.backward(sum(yw));
  CHECK(max_abs_diff(y.value(), yw.value()) < 1e-5);
  CHECK(max_abs_diff(xv.grad(), xw.grad()) < 1e-4);
  // The router's gradient (through the gates and the aux loss) reaches the fp32 weight.
  mixed.router().parameters([&](std::string_view, auto& wf) {
    wide.router().parameters([&](std::string_view, auto& wd) {
      CHECK(max_abs_diff(wf.grad(), wd.grad()) < 1e-4);
      CHECK(max_abs_diff(wf.grad(), zeros<float>(wf.shape())) > 1e-3);
    });
  });
}
