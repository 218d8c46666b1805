// coe::layer: C = 1 equals moe::layer (outputs and every gradient); the norm
// placements and residuals against their formulas written with moe::layers;
// gradients through both iterations (gradcheck in double, every option);
// the up-cycled layer equals its MoE at initialisation; the sequence-level
// aux loss of every iteration equals its formula and reaches its router;
// make_layer builds what its spec says and cost_of counts it; a transformer
// block wired direct hands the layer its residual stream; fp32 routers under
// an fp64 layer follow the all-fp64 one.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/autograd/gradcheck.hpp>
#include <moekit/coe.hpp>
#include <moekit/moe/transformer_block.hpp>

#include "../support/compare.hpp"

using namespace moekit;

namespace {

using testing::max_diff;

constexpr std::size_t D = 6, F = 5, E = 4, T = 8;
using router_t = moe::top_k_router<D, E, 2, double>;
using expert_t = moe::ffn_expert<D, F>;
using moe_t = moe::layer<router_t, expert_t, double>;
using coe_t = coe::layer<router_t, expert_t, dyn, double>;

router_t spread_router(rng& g, moe::top_k_options o = {}) {
  router_t r(g, o);
  r.parameters([&](std::string_view, auto& w) { w.value() = normal<double>(g, w.shape(), 0.0, 2.0); });
  return r;
}

tensor<double, shape<dyn, D>> input(std::uint64_t seed, std::size_t tokens = T) {
  rng g(seed);
  return normal<double>(g, shape<dyn, D>{tokens});
}

template <class M>
std::map<std::string, std::vector<double>> grads(M& model) {
  std::map<std::string, std::vector<double>> out;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    out[name] = std::vector<double>(p.grad().data(), p.grad().data() + p.grad().size());
  });
  return out;
}

}  // namespace

TEST_CASE("coe: C = 1 without norm or residuals is moe::layer, outputs and every gradient", "[coe]") {
  rng g(1);
  auto router = spread_router(g, {.load_balance_weight = 0.01});
  moe_t::bank_type bank(g);
  moe_t::shared_type shared(g);
  moe_t moe(router, bank, shared);
  coe_t chain({router}, bank, shared,
              {.iterations = 1, .norm = coe::norm_placement::none, .inner_residual = false, .outer_residual = false});
  const auto x = input(2);
  tape t1, t2;
  auto xm = t1.variable(x), xc = t2.variable(x);
  auto ym = moe(xm), yc = chain(xc);
  t1.backward(sum(ym * ym));
  t2.backward(sum(yc * yc));
  CHECK(max_diff(ym.value(), yc.value()) == 0.0);
  CHECK(max_diff(xm.grad(), xc.grad()) == 0.0);
  auto gm = grads(moe), gc = grads(chain);
  CHECK(gm.at("router.weight") == gc.at("routers.0.weight"));
  for (const char* name : {"experts.w1", "experts.b1", "experts.w2", "experts.b2", "shared.w1", "shared.w2"}) {
    INFO(name);
    CHECK(gm.at(name) == gc.at(name));
  }
}

TEST_CASE("coe: reference and pre-norm placements, inner and outer residuals, match their formulas", "[coe]") {
  rng g(3);
  auto r1 = spread_router(g), r2 = spread_router(g);
  moe_t::bank_type bank(g);
  const auto a = input(4);
  tape t;
  auto av = t.input(a);
  nn::rms_norm<D, double> norm;  // unit weights, as the layer's norms start
  moe_t m1(r1, bank), m2(r2, bank);

  SECTION("reference: x0 = norm(a), x1 = x0 + E1(x0), x2 = x1 + E2(x1), out = a + x2 (outer residual)") {
    coe_t chain({r1, r2}, bank, std::nullopt, {.iterations = 2, .norm = coe::norm_placement::reference,
                                                .inner_residual = true, .outer_residual = true});
    auto x0 = norm(av);
    auto x1 = x0 + m1(x0);
    auto want = av + (x1 + m2(x1));
    CHECK(max_diff(chain(av).value(), want.value()) < 1e-14);
  }
  SECTION("pre_norm: x1 = a + E1(norm(a)), out = x1 + E2(norm(x1))") {
    coe_t chain({r1, r2}, bank, std::nullopt, {.iterations = 2, .norm = coe::norm_placement::pre_norm});
    auto x1 = av + m1(norm(av));
    auto want = x1 + m2(norm(x1));
    CHECK(max_diff(chain(av).value(), want.value()) < 1e-14);
    CHECK(chain.last_routing(0).tokens == T);
    CHECK(chain.last_routing(1).tokens == T);
  }
  SECTION("one shared router, re-evaluated; no inner residual: out = E(E(a))") {
    coe_t chain({r1}, bank, std::nullopt,
                {.iterations = 2, .norm = coe::norm_placement::none, .inner_residual = false});
    auto want = m1(m1(av));
    CHECK(max_diff(chain(av).value(), want.value()) < 1e-14);
    CHECK(&chain.router(0) == &chain.router(1));
  }
}

TEST_CASE("coe: gradients through both iterations (gradcheck, double)", "[coe][gradcheck]") {
  const auto x = input(5, 6);
  struct variant {
    const char* name;
    coe::options o;
    bool shared_router, shared_expert, renormalize;
  };
  const variant variants[] = {
      {"reference: per-iteration routers, inner residual, raw softmax gates", {}, false, false, false},
      {"pre_norm, shared router, outer residual, shared expert", {.iterations = 2, .norm = coe::norm_placement::pre_norm, .outer_residual = true}, true, true, true},
      {"no norm, no inner residual, 3 iterations", {.iterations = 3, .norm = coe::norm_placement::none, .inner_residual = false}, false, false, true},
      {"up-cycled", {.iterations = 2, .norm = coe::norm_placement::none, .inner_residual = false, .upcycled = true}, false, true, true},
  };
  for (const auto& v : variants) {
    INFO(v.name);
    rng g(6);
    std::vector<router_t> routers;
    for (std::size_t i = 0; i < (v.shared_router ? 1 : v.o.iterations); ++i)
      routers.push_back(spread_router(g, {.renormalize = v.renormalize}));
    std::optional<moe_t::shared_type> shared;
    if (v.shared_expert) shared.emplace(g);
    coe_t chain(routers, moe_t::bank_type(g), shared, v.o);
    // Up-cycled: move w off 0 so the first iteration's gradient is not trivially zero.
    visit_parameters(chain, [](const std::string& name, auto& p) {
      if (name.starts_with("mix.")) fill(p.value(), 0.3);
    });
    auto r = check_parameter_gradients(chain, [&](tape& t) { return chain(t.input(x)); });
    INFO(r.message);
    CHECK(r.ok);
    CHECK(r.checked > 0);
    auto rx = check_gradients([&](auto xv) { return chain(xv); }, x);
    INFO(rx.message);
    CHECK(rx.ok);
  }
}

TEST_CASE("coe: from_moe starts equal to the MoE and learns its mixing scalar", "[coe][upcycle]") {
  rng g(7);
  moe_t moe(spread_router(g), moe_t::bank_type(g), moe_t::shared_type(g));
  auto chain = coe::from_moe(moe, 2);
  REQUIRE(chain.iterations() == 2);
  const auto x = input(8);
  tape t;
  auto ym = moe(t.input(x));
  auto xc = t.variable(x);
  auto yc = chain(xc);
  CHECK(max_diff(ym.value(), yc.value()) == 0.0);
  t.backward(sum(yc * yc));
  double w_grad = 0;
  visit_parameters(chain, [&](const std::string& name, auto& p) {
    if (name == "mix.0.w") w_grad = p.grad()[0];
  });
  CHECK(w_grad != 0.0);  // the extra iteration can start to matter
  CHECK(count_parameters(chain) == count_parameters(moe) + D * E + 1);  // a second router and w
}

TEST_CASE("coe: the sequence-level aux loss of each iteration equals its formula and reaches its router",
          "[coe][aux_loss]") {
  constexpr std::size_t seq = 4, k = 2;
  rng g(9);
  const moe::top_k_options o{.renormalize = false, .sequence_balance_weight = 0.1, .seq_len = seq};
  coe_t chain({spread_router(g, o), spread_router(g, o)}, moe_t::bank_type(g), std::nullopt, {});
  const auto x = input(10);
  tape t;
  auto y = chain(t.input(x));
  for (std::size_t it = 0; it < 2; ++it) {
    const auto& plan = chain.last_routing(it);
    REQUIRE(plan.aux_terms.size() == 1);
    // mean over sequences b of Σ_e ce[b, e] · mean_s p[b, s, e], ce = count / (S·k/E).
    double want = 0;
    const std::size_t seqs = T / seq;
    for (std::size_t b = 0; b < seqs; ++b)
      for (std::size_t e = 0; e < E; ++e) {
        double count = 0, p = 0;
        for (std::size_t s = 0; s < seq; ++s) {
          const std::size_t tok = b * seq + s;
          double z = 0;
          for (std::size_t f = 0; f < E; ++f) z += std::exp(plan.logits(tok, f));
          p += std::exp(plan.logits(tok, e)) / z / seq;
          for (std::size_t j = 0; j < k; ++j) count += plan.choice(tok, j) == static_cast<index_t>(e);
        }
        want += count / (double(seq * k) / E) * p / seqs;
      }
    CHECK(plan.aux_terms[0].value() == Approx(want).epsilon(1e-12));
  }
  // With a zero upstream gradient only the aux losses flow back: into both routers.
  t.backward(y, zeros<double>(y.shape()));
  for (std::size_t it = 0; it < 2; ++it) {
    double norm = 0;
    chain.router(it).parameters([&](std::string_view, auto& w) {
      for (std::size_t i = 0; i < w.size(); ++i) norm += std::abs(w.grad().data()[i]);
    });
    CHECK(norm > 0);
  }
}

TEST_CASE("coe: on a device backend (emulated) equals the CPU, with no host read per step", "[coe][device]") {
  auto run = [](auto backend) {
    using B = decltype(backend);
    using r_t = moe::top_k_router<D, E, 2, float, B>;
    using c_t = coe::layer<r_t, expert_t, 2, float, B>;
    rng g(11);
    r_t r1(g, {.sequence_balance_weight = 0.01, .seq_len = 4}), r2(g, {.sequence_balance_weight = 0.01, .seq_len = 4});
    c_t chain({r1, r2}, typename c_t::bank_type(g), typename c_t::shared_type(g),
              {.iterations = 2, .norm = coe::norm_placement::pre_norm, .outer_residual = true});
    rng gx(12);
    const auto x = normal<float>(gx, shape<dyn, D>{T});
    tape t;
    auto xv = t.variable(x.template to<B>());
    const std::size_t reads = metered_device::host_reads();
    auto y = chain(xv);
    t.backward(sum(y * y));
    const std::size_t read = metered_device::host_reads() - reads;
    std::vector<double> out;
    for (const auto* v : {&y.value(), &xv.grad()}) {
      const auto h = v->template to<cpu>();
      out.insert(out.end(), h.data(), h.data() + h.size());
    }
    visit_parameters(chain, [&](const std::string&, auto& p) {
      const auto h = p.grad().template to<cpu>();
      out.insert(out.end(), h.data(), h.data() + h.size());
    });
    return std::pair{out, read};
  };
  const auto [on_cpu, cpu_reads] = run(cpu{});
  const auto [on_device, device_reads] = run(metered_device{});
  REQUIRE(on_cpu.size() == on_device.size());
  for (std::size_t i = 0; i < on_cpu.size(); ++i) REQUIRE(on_device[i] == Approx(on_cpu[i]).epsilon(1e-5).margin(1e-6));
  CHECK(device_reads == 0);
}

TEST_CASE("coe: make_layer builds the reference layer its spec describes, cost_of counts it", "[coe][spec]") {
  rng g(21);
  const coe::spec moe4{.d_model = 8, .experts = 6, .expert_ff = 5, .top_k = 4, .chain = {.iterations = 1}, .seq_len = 4};
  coe::spec coe2 = moe4;
  coe2.top_k = 2, coe2.chain.iterations = 2;
  auto m = coe::make_layer<double>(g, moe4);
  auto c = coe::make_layer<double>(g, coe2);
  // CoE(C=2, K=2) and MoE(K=4): the same expert FLOPs, twice the router work.
  CHECK(coe::cost_of(coe2).expert_flops == coe::cost_of(moe4).expert_flops);
  CHECK(coe::cost_of(moe4).expert_flops == 2 * 4 * 3 * 8 * 5);
  CHECK(coe::cost_of(coe2).router_flops == 2 * coe::cost_of(moe4).router_flops);
  CHECK(coe::cost_of(moe4).total_params == count_parameters(m));
  CHECK(coe::cost_of(coe2).total_params == count_parameters(c));
  CHECK(c.iterations() == 2);
  // The reference's gates: raw softmax probabilities, not renormalised over the top K.
  rng gx(23);
  const auto x = normal<double>(gx, shape<dyn, dyn>{4, 8});
  tape t;
  (void)c(t.input(x));
  for (std::size_t it = 0; it < 2; ++it) {
    const auto gates = c.last_routing(it).choice_gate.value();  // (T, 2)
    for (std::size_t r = 0; r < 4; ++r) CHECK(gates.data()[2 * r] + gates.data()[2 * r + 1] < 1.0);
  }

  coe::spec shared = coe2;
  shared.shared_router = true, shared.shared_ff = 3;
  auto s = coe::make_layer<double>(g, shared);
  std::vector<std::string> names;
  visit_parameters(s, [&](const std::string& name, auto&) { names.push_back(name); });
  CHECK(std::count(names.begin(), names.end(), "routers.0.weight") == 1);
  CHECK(std::count(names.begin(), names.end(), "routers.1.weight") == 0);
  CHECK(std::count(names.begin(), names.end(), "shared.w_gate") == 1);
  CHECK(coe::cost_of(shared).total_params == count_parameters(s));
  CHECK(coe::cost_of(shared).expert_flops == coe::cost_of(coe2).expert_flops + 2 * 2 * 3 * 8 * 3);

  CHECK_THROWS_AS(coe::make_layer<double>(g, {.d_model = 8, .experts = 2, .expert_ff = 5, .top_k = 3}), value_error);
  CHECK_THROWS_AS(coe::make_layer<double>(g, {.d_model = 8, .experts = 6, .expert_ff = 5, .top_k = 2}), value_error);
}

TEST_CASE("coe: a transformer block wired direct hands the layer the residual stream and returns its output",
          "[coe][block]") {
  rng g(31);
  const coe::spec s{.d_model = 8, .experts = 4, .expert_ff = 6, .top_k = 2, .sequence_balance_weight = 0};
  using layer_t = coe::reference_layer<double>;
  moe::transformer_block<layer_t, double> block(g, 8, 2, coe::make_layer<double>(g, s), {.causal = true},
                                                moe::ffn_wiring::direct);
  std::vector<std::string> names;
  visit_parameters(block, [&](const std::string& name, auto&) { names.push_back(name); });
  CHECK(std::count(names.begin(), names.end(), "norm2.weight") == 0);  // the layer has its own norm
  CHECK(std::count(names.begin(), names.end(), "moe.norms.0.weight") == 1);
  rng gx(32);
  const auto x = normal<double>(gx, shape<dyn, dyn, dyn>{2, 3, 8});
  tape t;
  auto xv = t.input(x);
  auto y = block(xv);  // (2, 3, 8)
  // by hand: h = x + attention(norm1(x)); y = layer(h) on the (6, 8) rows
  nn::layer_norm<dyn, double> norm1(8);
  auto h = xv + block.attention()(norm1(xv));
  auto want = block.moe()(reshape(h, shape<dyn, dyn>{6, 8}));
  for (std::size_t i = 0; i < want.value().size(); ++i)
    CHECK(y.value().data()[i] == Approx(want.value().data()[i]).epsilon(1e-12).margin(1e-12));
}

TEST_CASE("coe: a dyn-width layer without its width is refused, not built", "[coe][spec]") {
  rng g(41);
  using layer_t = coe::reference_layer<double>;
  std::vector<moe::top_k_router<dyn, dyn, dyn, double>> routers;
  routers.emplace_back(g, moe::top_k_options{}, 8, 4, 2);
  CHECK_THROWS_AS(layer_t(routers, layer_t::bank_type(g, 4, 8, 6), std::nullopt, {.iterations = 1}), value_error);
  CHECK_NOTHROW(layer_t(routers, layer_t::bank_type(g, 4, 8, 6), std::nullopt, {.iterations = 1}, 8));
}

TEST_CASE("coe: fp32 routers under an fp64 layer follow the all-fp64 layer", "[coe][mixed]") {
  using router_f = moe::cast_router<moe::top_k_router<D, E, 2, float>>;
  using mixed_t = coe::layer<router_f, expert_t, 2, double>;
  using wide_t = coe::layer<router_t, expert_t, 2, double>;
  rng g(51);
  const moe::top_k_options ro{.renormalize = false, .sequence_balance_weight = 0.01, .seq_len = 4};
  std::vector<router_f> rf;
  for (int i = 0; i < 2; ++i) {
    rf.emplace_back(g, ro);
    rf.back().parameters([&](std::string_view, auto& w) { w.value() = normal<float>(g, w.shape(), 0.f, 2.f); });
  }
  std::vector<router_t> rd;  // the same weights, widened
  for (auto& r : rf) {
    rd.emplace_back(g, ro);
    rd.back().parameters([&](std::string_view, auto& wd) {
      r.parameters([&](std::string_view, auto& wf) { wd.value() = cast<double>(wf.value()); });
    });
  }
  rng gb(52);
  const wide_t::bank_type bank(gb);
  const coe::options o{.iterations = 2, .norm = coe::norm_placement::pre_norm};
  mixed_t mixed(rf, bank, std::nullopt, o);
  wide_t wide(rd, bank, std::nullopt, o);
  const auto x = input(53);
  tape t1, t2;
  auto xm = t1.variable(x), xw = t2.variable(x);
  auto ym = mixed(xm), yw = wide(xw);
  static_assert(std::is_same_v<decltype(ym), var<double, shape<dyn, D>>>);
  t1.backward(sum(ym * ym));
  t2.backward(sum(yw * yw));
  CHECK(max_diff(ym.value(), yw.value()) < 1e-5);
  CHECK(max_diff(xm.grad(), xw.grad()) < 1e-4);
  for (std::size_t it = 0; it < 2; ++it)  // each fp32 router's gradient (gates and aux loss) reaches it
    mixed.router(it).parameters([&](std::string_view, auto& wf) {
      wide.router(it).parameters([&](std::string_view, auto& wd) {
        double diff = 0, size = 0;
        for (std::size_t i = 0; i < wf.grad().size(); ++i) {
          diff = std::max(diff, std::abs(static_cast<double>(wf.grad().data()[i]) - wd.grad().data()[i]));
          size = std::max(size, std::abs(wd.grad().data()[i]));
        }
        CHECK(diff < 1e-4);
        CHECK(size > 1e-3);
      });
    });
}
