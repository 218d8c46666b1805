// The baseline MoEs (moe/baselines.hpp), the MoE bottleneck MLP and the MoE
// transformer block: layouts and parameter counts against the documented
// formulas (and against the parameters the layers really hold), active
// expert weights equal to the dense FFN's, shapes, a few training steps that
// must lower the loss, and gradients reaching attention, router and experts.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/mlp/moe_bottleneck_mlp.hpp>
#include <moekit/moe.hpp>
#include <moekit/moe/baselines.hpp>
#include <moekit/moe/transformer_block.hpp>
#include <moekit/optim/adamw.hpp>

using namespace moekit;

namespace {

constexpr std::size_t d = 16, ff = 32, experts = 4;
const moe::baseline_spec spec{.d_model = d, .d_ff = ff, .experts = experts, .granularity = 4, .shared_experts = 1};
const moe::baseline all_baselines[] = {moe::baseline::switch_top1, moe::baseline::gshard_top2,
                                       moe::baseline::expert_choice, moe::baseline::deepseek};

/// Calls f(layer) with the baseline's layer (the two router families are different types).
template <class F>
void with_baseline(moe::baseline b, rng& g, const moe::baseline_spec& s, F&& f) {
  if (b == moe::baseline::expert_choice) {
    auto m = moe::make_expert_choice(g, s);
    f(m);
  } else {
    auto m = moe::make_token_choice(g, moe::baseline_layout_of(b, s));
    f(m);
  }
}

std::map<std::string, std::vector<std::size_t>> shapes_of(auto& model) {
  std::map<std::string, std::vector<std::size_t>> out;
  visit_parameters(model, [&](const std::string& path, auto& p) {
    std::vector<std::size_t> e;
    for (std::size_t i = 0; i < p.rank(); ++i) e.push_back(p.extent(i));
    out[path] = e;
  });
  return out;
}

double grad_norm(auto& model, const std::string& path) {
  double s = -1;
  visit_parameters(model, [&](const std::string& p, auto& w) {
    if (p != path) return;
    s = 0;
    for (std::size_t i = 0; i < w.size(); ++i) s += double(w.grad().data()[i]) * double(w.grad().data()[i]);
  });
  return s;
}

}  // namespace

TEST_CASE("baseline layouts follow the documented table", "[moe][baselines]") {
  const auto sw = moe::baseline_layout_of(moe::baseline::switch_top1, spec);
  CHECK(sw.experts == 4);
  CHECK(sw.k == 1);
  CHECK(sw.expert_ff == 32);
  CHECK(sw.capacity_factor == 1.25);
  CHECK(sw.load_balance_weight == 0.01);
  const auto gs = moe::baseline_layout_of(moe::baseline::gshard_top2, spec);
  CHECK(gs.k == 2);
  CHECK(gs.expert_ff == 16);
  CHECK(gs.capacity_factor == 2.0);
  const auto ec = moe::baseline_layout_of(moe::baseline::expert_choice, spec);
  CHECK(ec.k == 0);
  CHECK(ec.expert_ff == 16);
  CHECK(ec.active_experts == 2.0);
  const auto ds = moe::baseline_layout_of(moe::baseline::deepseek, spec);
  CHECK(ds.experts == 16);  // 4 × 4 fine experts
  CHECK(ds.k == 3);         // 4 fine experts per token, 1 of them shared
  CHECK(ds.expert_ff == 8);
  CHECK(ds.shared_ff == 8);
  CHECK(ds.capacity_factor == 0);
}

TEST_CASE("baseline costs: formulas by hand, active expert weights match the dense FFN", "[moe][baselines]") {
  const auto dense = moe::dense_ffn_cost(d, ff);
  CHECK(dense.total_params == 2 * 16 * 32 + 32 + 16);
  CHECK(dense.expert_flops == 4 * 16 * 32);
  // Switch: router 16·4, 4 experts of (2·16·32 + 32 + 16), one active.
  const auto sw = moe::cost_of(moe::baseline_layout_of(moe::baseline::switch_top1, spec));
  CHECK(sw.total_params == 64 + 4 * 1072);
  CHECK(sw.active_params == 64 + 1072);
  CHECK(sw.router_flops == 128);
  // GShard: 4 experts of (2·16·16 + 16 + 16) = 544, two active.
  const auto gs = moe::cost_of(moe::baseline_layout_of(moe::baseline::gshard_top2, spec));
  CHECK(gs.total_params == 64 + 4 * 544);
  CHECK(gs.active_params == 64 + 2 * 544);
  // DeepSeek: router 16·16, 16 experts of (2·16·8 + 8 + 16) = 280, 3 active + 1 shared.
  const auto ds = moe::cost_of(moe::baseline_layout_of(moe::baseline::deepseek, spec));
  CHECK(ds.total_params == 256 + 16 * 280 + 280);
  CHECK(ds.active_params == 256 + 4 * 280);
  for (auto b : all_baselines) {
    INFO(moe::baseline_name(b));
    CHECK(moe::cost_of(moe::baseline_layout_of(b, spec)).expert_flops == dense.expert_flops);
  }
}

TEST_CASE("baseline layers hold exactly the counted parameters and keep the FFN's shape", "[moe][baselines]") {
  rng g(3);
  auto x = normal<float>(g, shape<dyn, dyn>{24, d});  // (tokens, d)
  for (auto b : all_baselines) {
    INFO(moe::baseline_name(b));
    with_baseline(b, g, spec, [&](auto& m) {
      CHECK(count_parameters(m) == moe::cost_of(moe::baseline_layout_of(b, spec)).total_params);
      tape t;
      auto y = m(t.input(x));
      REQUIRE(y.extent(0) == 24);
      REQUIRE(y.extent(1) == d);
    });
  }
  rng g2(3);
  auto ds = moe::make_deepseek(g2, spec);
  const auto s = shapes_of(ds);
  CHECK(s.at("router.weight") == std::vector<std::size_t>{16, 16});
  CHECK(s.at("experts.w1") == std::vector<std::size_t>{16, 16, 8});
  CHECK(s.at("shared.w1") == std::vector<std::size_t>{1, 16, 8});
}

TEST_CASE("expert choice routes 2 experts per token on average; GShard rarely drops", "[moe][baselines]") {
  rng g(5);
  auto x = normal<float>(g, shape<dyn, dyn>{40, d});
  auto ec = moe::make_expert_choice(g, spec);
  tape t;
  ec(t.input(x));
  CHECK(ec.last_routing().assignments() == 2 * 40);  // E · c = 4 · ceil(2 · 40 / 4)
  auto gs = moe::make_gshard(g, spec);
  gs(t.input(x));
  CHECK(gs.last_routing().assignments() + gs.last_routing().dropped == 2 * 40);
}

TEST_CASE("baseline layouts reject sizes they cannot split", "[moe][baselines]") {
  REQUIRE_THROWS_WITH(moe::baseline_layout_of(moe::baseline::gshard_top2, {.d_model = 8, .d_ff = 7}),
                      Catch::Contains("baseline_layout_of") && Catch::Contains("gshard"));
  REQUIRE_THROWS_AS(moe::baseline_layout_of(moe::baseline::deepseek, {.d_model = 8, .d_ff = 32, .granularity = 2,
                                                                      .shared_experts = 2}),
                    value_error);
  rng g(0);
  REQUIRE_THROWS_AS(moe::make_token_choice(g, moe::baseline_layout_of(moe::baseline::expert_choice, spec)), value_error);
}

TEST_CASE("each baseline, inside the MoE bottleneck MLP, lowers the loss of a small problem", "[moe][baselines]") {
  // 4 classes from 8 features by a fixed random linear rule.
  rng g(11);
  const std::size_t n = 128, in = 8, classes = 4;
  auto x = normal<float>(g, shape<dyn, dyn>{n, in});
  auto w = normal<float>(g, shape<dyn, dyn>{in, classes});
  tensor<index_t, shape<dyn>> y(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t best = 0;
    float best_v = -1e30f;
    for (std::size_t c = 0; c < classes; ++c) {
      float v = 0;
      for (std::size_t j = 0; j < in; ++j) v += x(i, j) * w(j, c);
      if (v > best_v) best_v = v, best = c;
    }
    y[i] = static_cast<index_t>(best);
  }
  const mlp::config c{.in = in, .width = 16, .blocks = 2, .classes = classes, .expansion = 2};
  for (auto b : all_baselines) {
    INFO(moe::baseline_name(b));
    rng gm(1);
    auto run = [&](auto make) {
      using moe_t = decltype(make(gm, std::size_t{}, std::size_t{}));
      mlp::moe_bottleneck_mlp<moe_t> model(gm, c, make);
      optim::adamw<float> opt(model, {.lr = 1e-2, .weight_decay = 0});
      double first = 0, last = 0;
      for (int step = 0; step < 30; ++step) {
        opt.zero_grad();
        tape t;
        auto loss = cross_entropy(model(t.input(x)), y);
        t.backward(loss);
        opt.step();
        (step == 0 ? first : last) = loss.value()[0];
      }
      INFO("first " << first << " last " << last);
      CHECK(std::isfinite(last));
      CHECK(last < 0.6 * first);
    };
    const moe::baseline_spec s{.d_model = 16, .d_ff = 32, .experts = 4, .granularity = 4, .shared_experts = 1};
    if (b == moe::baseline::expert_choice)
      run([&](rng& gg, std::size_t dd, std::size_t f) { auto ss = s; ss.d_model = dd, ss.d_ff = f; return moe::make_expert_choice(gg, ss); });
    else
      run([&](rng& gg, std::size_t dd, std::size_t f) {
        auto ss = s;
        ss.d_model = dd, ss.d_ff = f;
        return moe::make_token_choice(gg, moe::baseline_layout_of(b, ss));
      });
  }
}

TEST_CASE("moe_bottleneck_mlp: names, parameter count, output shape", "[moe][baselines][mlp]") {
  rng g(2);
  const mlp::config c{.in = 20, .width = 16, .blocks = 3, .classes = 5, .expansion = 2};
  mlp::moe_bottleneck_mlp<moe::token_choice_moe<>> m(
      g, c, [](rng& gg, std::size_t dd, std::size_t f) { return moe::make_switch(gg, {.d_model = dd, .d_ff = f}); });
  const auto s = shapes_of(m);
  CHECK(s.at("stem.weight") == std::vector<std::size_t>{20, 16});
  CHECK(s.at("blocks.2.norm.weight") == std::vector<std::size_t>{16});
  CHECK(s.at("blocks.2.moe.router.weight") == std::vector<std::size_t>{16, 8});
  CHECK(s.at("blocks.0.moe.experts.w1") == std::vector<std::size_t>{8, 16, 32});
  CHECK(s.at("head.bias") == std::vector<std::size_t>{5});
  const auto moe_params = moe::cost_of(moe::baseline_layout_of(moe::baseline::switch_top1, {.d_model = 16, .d_ff = 32})).total_params;
  CHECK(count_parameters(m) == decltype(m)::parameter_count(c, moe_params));
  tape t;
  auto out = m(t.input(normal<float>(g, shape<dyn, dyn>{7, 20})));
  CHECK(out.extent(0) == 7);
  CHECK(out.extent(1) == 5);
  CHECK(m.moe(1).last_routing().tokens == 7);
}

TEST_CASE("moe::transformer_block: shape, and the gradient reaches attention, router and experts", "[moe][baselines]") {
  rng g(4);
  moe::transformer_block<moe::token_choice_moe<>> blk(g, d, 4, moe::make_gshard(g, spec));
  auto xv = normal<float>(g, shape<dyn, dyn, dyn>{3, 5, d});  // (batch, seq, d)
  tape t;
  auto x = t.input(xv);
  auto y = blk(x);
  REQUIRE(y.extent(0) == 3);
  REQUIRE(y.extent(1) == 5);
  REQUIRE(y.extent(2) == d);
  CHECK(blk.moe().last_routing().tokens == 15);
  t.backward(mean(y * y));
  for (const char* p : {"norm1.weight", "attention.q_proj.weight", "attention.out_proj.weight", "norm2.weight",
                        "moe.router.weight", "moe.experts.w1", "moe.experts.w2"}) {
    INFO(p);
    CHECK(grad_norm(blk, p) > 0);
  }
  REQUIRE_THROWS_WITH(blk(t.input(normal<float>(g, shape<dyn, dyn, dyn>{2, 2, 8}))),
                      Catch::Contains("transformer_block"));
}
