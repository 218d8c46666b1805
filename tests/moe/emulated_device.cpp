// The MoE layer on a device backend. emulated_device (host_accessible =
// false, CPU kernels) makes routing take its device path: sort_pairs of the
// slot-major expert ids, histogram + exclusive_scan for the offsets,
// assignment_layout for token/expert/gate index, aux-loss counts from a
// histogram, offsets that the grouped ops never read on the host. The same
// layer (same seed) on cpu — whose routing is the host's counting sort — and
// on the device must give the same plan (token, expert, offsets, gates,
// dropped, aux terms), the same output and the same gradient for the input
// and every parameter: top-k (k = 1, 2; softmax and sigmoid; renormalised or
// not; dropless and capacity with drops; noise and jitter; aux losses), expert
// choice, FFN and SwiGLU banks, shared experts, empty experts, the baselines
// and a transformer block with an MoE FFN.
//
// A metered copy of the device backend counts its copies to the host, to pin
// the synchronisation budget of a layer step: none when dropless, exactly one
// (the kept-assignment total) with a capacity factor.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/moe.hpp>

using namespace moekit;

namespace {

using device = emulated_device;

template <class X>
std::vector<double> host_values(const X& t) {
  const auto h = t.template to<cpu>();
  return std::vector<double>(h.data(), h.data() + h.size());
}

/// What one forward + backward step of an MoE layer produced, on the host.
struct step_result {
  std::vector<double> token, expert, offsets, gate;  // the routing plan
  std::size_t dropped = 0;
  std::vector<std::string> aux_names;
  std::vector<double> aux_values;
  double aux_loss = 0;
  std::vector<double> y, dx;
  std::map<std::string, std::vector<double>> params, grads;
};

/// The plan of `plan` on the host.
template <class P>
void record_plan(step_result& r, const P& plan) {
  r.token = host_values(plan.token);
  r.expert = host_values(plan.expert);
  r.offsets = host_values(plan.offsets);
  r.gate = host_values(plan.gate.value());
  r.dropped = plan.dropped;
  for (const auto& term : plan.aux_terms) {
    r.aux_names.push_back(term.name);
    r.aux_values.push_back(term.value());
  }
  if (plan.aux_loss.value().defined()) r.aux_loss = host_values(plan.aux_loss.value())[0];
}

template <class M>
void record_parameters(step_result& r, M& model) {
  visit_parameters(model, [&](const std::string& path, auto& p) {
    r.params[path] = host_values(p.value());
    r.grads[path] = host_values(p.grad());
  });
}

/// One step of `model` (a backend-B layer or block) on host input x with
/// upstream gradient dy (both moved to B); `plan_of` finds the routing plan.
template <class B, class M, class X, class PlanOf>
step_result run_step(M& model, const X& x, const X& dy, PlanOf plan_of) {
  step_result r;
  tape t;
  auto xv = t.variable(x.template to<B>());
  auto y = model(xv);
  t.backward(y, dy.template to<B>());
  record_plan(r, plan_of(model));
  r.y = host_values(y.value());
  r.dx = host_values(xv.grad());
  record_parameters(r, model);
  return r;
}
template <class B, class M, class X>
step_result run_step(M& model, const X& x, const X& dy) {
  return run_step<B>(model, x, dy, [](auto& m) -> const auto& { return m.last_routing(); });
}

void emu_require_close(const std::vector<double>& a, const std::vector<double>& b, const std::string& what) {
  INFO(what);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("at " << i);
    REQUIRE(a[i] == Approx(b[i]).epsilon(1e-6).margin(1e-6));
  }
}
void require_equal(const std::vector<double>& a, const std::vector<double>& b, const std::string& what) {
  INFO(what);
  REQUIRE(a == b);
}

/// The device step equals the host step: plan, output, every gradient.
void require_same_step(const step_result& h, const step_result& d) {
  require_equal(h.offsets, d.offsets, "offsets");
  require_equal(h.token, d.token, "token");
  require_equal(h.expert, d.expert, "expert");
  emu_require_close(h.gate, d.gate, "gate");
  REQUIRE(h.dropped == d.dropped);
  REQUIRE(h.aux_names == d.aux_names);
  emu_require_close(h.aux_values, d.aux_values, "aux terms");
  REQUIRE(h.aux_loss == Approx(d.aux_loss).epsilon(1e-6).margin(1e-9));
  emu_require_close(h.y, d.y, "output");
  emu_require_close(h.dx, d.dx, "d input");
  REQUIRE(h.params.size() == d.params.size());
  for (const auto& [path, v] : h.params) {
    REQUIRE(d.params.count(path) == 1);
    require_equal(v, d.params.at(path), "value of " + path);  // same seed, same draws on both backends
    emu_require_close(h.grads.at(path), d.grads.at(path), "gradient of " + path);
  }
}

/// x (T, D) and an upstream gradient dy of the same shape.
struct batch {
  tensor<float, shape<dyn, dyn>> x, dy;
};
batch random_batch(std::size_t tokens, std::size_t d, std::uint64_t seed = 11) {
  rng g(seed);
  return {normal<float>(g, shape<dyn, dyn>{tokens, d}), normal<float>(g, shape<dyn, dyn>{tokens, d})};
}

constexpr std::size_t d_model = 6, d_ff = 10;

/// A top-k layer on B: router (d_model, E, K), expert spec X, optional shared expert.
template <class B, std::size_t E, std::size_t K, class X>
auto make_top_k(moe::top_k_options o, bool shared, std::uint64_t seed = 5) {
  using layer_t = moe::layer<moe::top_k_router<d_model, E, K, float, B>, X, float, B>;
  rng g(seed);
  moe::top_k_router<d_model, E, K, float, B> router(g, o);
  typename layer_t::bank_type bank(g);
  std::optional<typename layer_t::shared_type> sh;
  if (shared) sh.emplace(g);
  return layer_t(std::move(router), std::move(bank), std::move(sh));
}

/// The same top-k layer on cpu and on the device, one step each, compared.
template <std::size_t E, std::size_t K, class X>
step_result compare_top_k(moe::top_k_options o, bool shared, std::size_t tokens) {
  const auto b = random_batch(tokens, d_model);
  auto on_host = make_top_k<cpu, E, K, X>(o, shared);
  auto on_device = make_top_k<device, E, K, X>(o, shared);
  const auto h = run_step<cpu>(on_host, b.x, b.dy);
  const auto d = run_step<device>(on_device, b.x, b.dy);
  require_same_step(h, d);
  REQUIRE(!h.token.empty());
  return h;
}

using emu_gelu_ffn = moe::ffn_expert<d_model, d_ff>;
using emu_relu_ffn_nobias = moe::ffn_expert<d_model, d_ff, moe::activation::relu, false>;
using emu_silu_ffn = moe::ffn_expert<d_model, d_ff, moe::activation::silu>;
using emu_swiglu = moe::swiglu_expert<d_model, d_ff>;

}  // namespace

TEST_CASE("emulated device: top-1 softmax, dropless, every aux loss, FFN experts", "[moe][device]") {
  const auto h = compare_top_k<5, 1, emu_gelu_ffn>(
      {.load_balance_weight = 0.01, .z_loss_weight = 0.001, .sequence_balance_weight = 0.1, .seq_len = 4}, false, 12);
  REQUIRE(h.dropped == 0);
  REQUIRE(h.token.size() == 12);
  REQUIRE(h.aux_names == std::vector<std::string>{"load_balance", "z_loss", "sequence_balance"});
}

TEST_CASE("emulated device: top-2 softmax renormalised, capacity drops, noise and jitter", "[moe][device]") {
  const auto h = compare_top_k<4, 2, emu_relu_ffn_nobias>(
      {.capacity_factor = 0.5, .jitter = 0.1, .noise = 0.5, .load_balance_weight = 0.01}, false, 16);
  REQUIRE(h.dropped > 0);
  REQUIRE(h.token.size() + h.dropped == 32);
  // Capacity ceil(0.5 · 16 · 2 / 4) = 4: no expert keeps more.
  for (std::size_t e = 0; e < 4; ++e) REQUIRE(h.offsets[e + 1] - h.offsets[e] <= 4);
}

TEST_CASE("emulated device: top-2 sigmoid, not renormalised, capacity 1, SwiGLU experts", "[moe][device]") {
  const auto h = compare_top_k<4, 2, emu_swiglu>(
      {.score = moe::score_fn::sigmoid, .renormalize = false, .capacity_factor = 1.0, .z_loss_weight = 0.01}, false,
      14);
  REQUIRE(h.token.size() + h.dropped == 28);
}

TEST_CASE("emulated device: top-1 sigmoid with a shared expert, and experts left empty", "[moe][device]") {
  // 8 experts, 3 tokens: at least 5 experts get no rows (empty groups everywhere).
  const auto h = compare_top_k<8, 1, emu_silu_ffn>({.score = moe::score_fn::sigmoid, .load_balance_weight = 0.01}, true, 3);
  std::size_t empty = 0;
  for (std::size_t e = 0; e < 8; ++e) empty += h.offsets[e + 1] == h.offsets[e];
  REQUIRE(empty >= 5);
  REQUIRE(h.params.count("shared.w1") == 1);
}

TEST_CASE("emulated device: top-2 with shared expert and capacity, dyn extents", "[moe][device]") {
  auto make = [](auto tag) {
    using B = decltype(tag);
    using layer_t = moe::layer<moe::top_k_router<dyn, dyn, dyn, float, B>, moe::ffn_expert<dyn, dyn>, float, B>;
    rng g(9);
    moe::top_k_router<dyn, dyn, dyn, float, B> router(g, {.capacity_factor = 0.75, .load_balance_weight = 0.02}, 5,
                                                      6, 2);
    typename layer_t::bank_type bank(g, 6, 5, 7);
    return layer_t(std::move(router), std::move(bank), typename layer_t::shared_type(g, 1, 5, 7));
  };
  const auto b = random_batch(10, 5, 3);
  auto on_host = make(cpu{});
  auto on_device = make(device{});
  const auto h = run_step<cpu>(on_host, b.x, b.dy);
  require_same_step(h, run_step<device>(on_device, b.x, b.dy));
  REQUIRE(h.dropped > 0);
}

TEST_CASE("emulated device: expert choice with FFN and SwiGLU experts", "[moe][device]") {
  auto run = [](auto tag, auto spec, bool shared) {
    using B = decltype(tag);
    using X = decltype(spec);
    using router_t = moe::expert_choice_router<d_model, 4, float, B>;
    using layer_t = moe::layer<router_t, X, float, B>;
    rng g(21);
    router_t router(g, {.capacity_factor = 1.5});
    typename layer_t::bank_type bank(g);
    std::optional<typename layer_t::shared_type> sh;
    if (shared) sh.emplace(g);
    layer_t layer(std::move(router), std::move(bank), std::move(sh));
    const auto b = random_batch(10, d_model, 2);
    return run_step<B>(layer, b.x, b.dy);
  };
  const auto h = run(cpu{}, emu_gelu_ffn{}, true);
  require_same_step(h, run(device{}, emu_gelu_ffn{}, true));
  // c = ceil(1.5 · 10 / 4) = 4 tokens for each of the 4 experts.
  REQUIRE(h.offsets == std::vector<double>{0, 4, 8, 12, 16});
  require_same_step(run(cpu{}, emu_swiglu{}, false), run(device{}, emu_swiglu{}, false));
}

TEST_CASE("emulated device: the baseline MoEs", "[moe][device][baselines]") {
  const moe::baseline_spec spec{.d_model = 6, .d_ff = 8, .experts = 4, .granularity = 2, .shared_experts = 1};
  const auto b = random_batch(12, 6, 4);
  auto both = [&](auto make) {
    rng gh(8), gd(8);
    auto on_host = make(gh, cpu{});
    auto on_device = make(gd, device{});
    require_same_step(run_step<cpu>(on_host, b.x, b.dy), run_step<device>(on_device, b.x, b.dy));
  };
  both([&](rng& g, auto tag) { return moe::make_switch<float, decltype(tag)>(g, spec); });
  both([&](rng& g, auto tag) { return moe::make_gshard<float, decltype(tag)>(g, spec); });
  both([&](rng& g, auto tag) { return moe::make_expert_choice<float, decltype(tag)>(g, spec); });
  both([&](rng& g, auto tag) { return moe::make_deepseek<float, decltype(tag)>(g, spec); });
}

TEST_CASE("emulated device: a transformer block with an MoE FFN", "[moe][device][transformer]") {
  auto run = [](auto tag) {
    using B = decltype(tag);
    rng g(13);
    auto moe_ffn = moe::make_gshard<float, B>(g, {.d_model = 8, .d_ff = 16, .experts = 4});
    moe::transformer_block<moe::token_choice_moe<float, B>, float, B> block(g, 8, 2, std::move(moe_ffn));
    rng gx(14);
    auto x = normal<float>(gx, shape<dyn, dyn, dyn>{2, 5, 8});
    auto dy = normal<float>(gx, shape<dyn, dyn, dyn>{2, 5, 8});
    return run_step<B>(block, x, dy, [](auto& blk) -> const auto& { return blk.moe().last_routing(); });
  };
  const auto h = run(cpu{});
  require_same_step(h, run(device{}));
  REQUIRE(h.params.count("attention.q_proj.weight") == 1);
  REQUIRE(h.params.count("moe.experts.w1") == 1);
}

TEST_CASE("emulated device: routing statistics of a device plan equal the host's", "[moe][device][stats]") {
  const auto b = random_batch(12, d_model);
  auto on_host = make_top_k<cpu, 4, 2, emu_gelu_ffn>({.capacity_factor = 0.75}, false);
  auto on_device = make_top_k<device, 4, 2, emu_gelu_ffn>({.capacity_factor = 0.75}, false);
  moe::routing_stats sh, sd;
  for (int step = 0; step < 2; ++step) {
    run_step<cpu>(on_host, b.x, b.dy);
    run_step<device>(on_device, b.x, b.dy);
    sh.add(on_host.last_routing());
    sd.add(on_device.last_routing());
  }
  REQUIRE(sh.counts() == sd.counts());
  REQUIRE(sh.first_choice_counts() == sd.first_choice_counts());
  REQUIRE(sh.dropped() == sd.dropped());
  REQUIRE(sh.dropped() > 0);
  emu_require_close(sh.logit_gram(), sd.logit_gram(), "logit Gram matrix");
  REQUIRE(on_device.last_routing().counts() == on_host.last_routing().counts());
}

TEST_CASE("device MoE layer step: no host read when dropless, one with a capacity factor", "[moe][device][sync]") {
  const auto b = random_batch(12, d_model);
  const auto x = b.x.to<metered_device>(), dy = b.dy.to<metered_device>();
  auto reads_of_step = [&](auto& layer) {
    tape t;
    auto xv = t.variable(x);
    const std::size_t before = metered_device::host_reads();
    auto y = layer(xv);
    const std::size_t forward = metered_device::host_reads() - before;
    t.backward(y, dy);
    return std::pair{forward, metered_device::host_reads() - before - forward};
  };

  SECTION("top-k, dropless, aux losses and a shared expert") {
    auto layer = make_top_k<metered_device, 4, 2, emu_gelu_ffn>(
        {.load_balance_weight = 0.01, .z_loss_weight = 0.001, .sequence_balance_weight = 0.1, .seq_len = 6}, true);
    REQUIRE(reads_of_step(layer) == std::pair<std::size_t, std::size_t>{0, 0});
    // The aux terms are read only when asked for, one copy each.
    const std::size_t before = metered_device::host_reads();
    REQUIRE(layer.last_routing().aux_terms[0].value() > 0);
    REQUIRE(metered_device::host_reads() == before + 1);
  }
  SECTION("top-k with a capacity factor: one read, the kept total") {
    auto layer = make_top_k<metered_device, 4, 2, emu_swiglu>({.capacity_factor = 0.5}, false);
    REQUIRE(reads_of_step(layer) == std::pair<std::size_t, std::size_t>{1, 0});
    REQUIRE(layer.last_routing().dropped > 0);
  }
  SECTION("expert choice") {
    using router_t = moe::expert_choice_router<d_model, 4, float, metered_device>;
    using layer_t = moe::layer<router_t, emu_gelu_ffn, float, metered_device>;
    rng g(2);
    router_t router(g);
    layer_t layer(std::move(router), layer_t::bank_type(g));
    REQUIRE(reads_of_step(layer) == std::pair<std::size_t, std::size_t>{0, 0});
  }
}

TEST_CASE("assignment_layout: sorted assignments to token, expert and gate index, with a capacity",
          "[moe][device][kernel]") {
  // T = 3 tokens, k = 2: choices (t: first, second) = 0: (1, 0), 1: (1, 2), 2: (0, 1).
  // Slot-major positions j·T + t sorted stably by expert:
  //   expert 0: t2 j0 (2), t0 j1 (3); expert 1: t0 j0 (0), t1 j0 (1), t2 j1 (5); expert 2: t1 j1 (4).
  const std::vector<index_t> experts = {0, 0, 1, 1, 1, 2}, slots = {2, 3, 0, 1, 5, 4};
  const std::vector<index_t> offsets = {0, 2, 5, 6};
  std::vector<index_t> token(6, -1), expert(6, -1), slot(6, -1);
  kernels<cpu>::assignment_layout(6, 3, 2, experts.data(), slots.data(), offsets.data(), offsets.data(), 0,
                                  token.data(), expert.data(), slot.data());
  REQUIRE(token == std::vector<index_t>{2, 0, 0, 1, 2, 1});
  REQUIRE(expert == experts);
  REQUIRE(slot == std::vector<index_t>{4, 1, 0, 2, 5, 3});  // t·k + j
  // Capacity 2: expert 1 drops its third assignment (t2's second choice).
  const std::vector<index_t> kept_offsets = {0, 2, 4, 5};
  std::vector<index_t> token2(5, -1), expert2(5, -1), slot2(5, -1);
  kernels<cpu>::assignment_layout(6, 3, 2, experts.data(), slots.data(), offsets.data(), kept_offsets.data(), 2,
                                  token2.data(), expert2.data(), slot2.data());
  REQUIRE(token2 == std::vector<index_t>{2, 0, 0, 1, 1});
  REQUIRE(expert2 == std::vector<index_t>{0, 0, 1, 1, 2});
  REQUIRE(slot2 == std::vector<index_t>{4, 1, 0, 2, 3});
}

TEST_CASE("grouped rows kernels on device offsets, with empty groups", "[moe][device][grouped]") {
  // Rows 0..4 in groups {0: [0, 2), 1: empty, 2: [2, 5)}.
  const auto offsets = from_values<index_t>(shape<dyn>{4}, {0, 2, 2, 5});
  rng g(6);
  const auto h = normal<float>(g, shape<dyn, dyn>{5, 3});
  const auto bias = normal<float>(g, shape<dyn, dyn>{3, 3});
  const auto on_device = add_grouped_rows(h.to<device>(), bias.to<device>(), offsets.to<device>()).to<cpu>();
  const auto sums = grouped_column_sums(h.to<device>(), offsets.to<device>(), shape<dyn, dyn>{3, 3}).to<cpu>();
  const std::size_t group_of_row[5] = {0, 0, 2, 2, 2};
  for (std::size_t r = 0; r < 5; ++r)
    for (std::size_t c = 0; c < 3; ++c) REQUIRE(on_device(r, c) == h(r, c) + bias(group_of_row[r], c));
  for (std::size_t c = 0; c < 3; ++c) {
    REQUIRE(sums(0, c) == Approx(h(0, c) + h(1, c)));
    REQUIRE(sums(1, c) == 0.0f);
    REQUIRE(sums(2, c) == Approx(h(2, c) + h(3, c) + h(4, c)));
  }
  // Only the offsets' count is checked on a device (their values are trusted).
  REQUIRE_THROWS_WITH(add_grouped_rows(h.to<device>(), bias.to<device>(), offsets.rows(0, 3).to<device>()),
                      Catch::Contains("add_grouped_rows") && Catch::Contains("offsets"));
}

TEST_CASE("emulated device: a bank with shared weights, and by_sequence", "[moe][device][sharing]") {
  const std::vector<index_t> map{1, 0, 1, 2};
  auto shared_layer = [&]<class B>(B) {
    auto layer = make_top_k<B, 4, 2, emu_gelu_ffn>({.load_balance_weight = 0.01}, false);
    layer.experts().share(moe::slot_map<B>(map));
    return layer;
  };
  const auto b = random_batch(12, d_model);
  auto on_host = shared_layer(cpu{});
  auto on_device = shared_layer(device{});
  REQUIRE(on_device.experts().weight_sets() == 3);
  require_same_step(run_step<cpu>(on_host, b.x, b.dy), run_step<device>(on_device, b.x, b.dy));

  // The regrouped step reads nothing back on a device either.
  auto metered = shared_layer(metered_device{});
  tape t;
  auto xv = t.variable(b.x.to<metered_device>());
  const std::size_t before = metered_device::host_reads();
  auto y = metered(xv);
  t.backward(y, b.dy.to<metered_device>());
  REQUIRE(metered_device::host_reads() == before);

  // by_sequence: the same reordering and sub-segments on both backends, on
  // the layers' kept plans, whose tape is gone: observed() cuts them from it.
  auto seq_plan = [&](const auto& plan) {
    const auto p = moe::by_sequence(plan.observed(), 4);
    return std::vector{host_values(p.token), host_values(p.expert), host_values(p.sub_offsets), host_values(p.gate.value())};
  };
  REQUIRE(seq_plan(on_host.last_routing()) == seq_plan(on_device.last_routing()));
}
