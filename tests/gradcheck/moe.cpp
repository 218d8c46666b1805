// Gradient checks (double, central differences) for the MoE ops — grouped_matmul
// (both operands, with empty groups), add_grouped_rows, logsumexp_rows — and
// for whole moe::layers with respect to x, every expert weight and bias and
// the router weight. Router weights are drawn large enough that the top-k /
// expert-choice selections do not flip under the ±1e-6 perturbations.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include <moekit/autograd/ops/grouped.hpp>
#include <moekit/autograd/ops/logsumexp.hpp>
#include <moekit/moe.hpp>
#include <moekit/nn/layer.hpp>

#include "../support/positional_expert.hpp"
#include "check.hpp"

using namespace moekit;
using namespace moekit::testing;

namespace {

offsets_tensor offsets(std::initializer_list<index_t> v) {
  return from_values<index_t>(shape<dyn>{v.size()}, v);
}

/// Points the parameter at `path` under `model` to the var v: ops on it then
/// read v's value and accumulate into v's gradient, which is how
/// check_gradients perturbs and differentiates a layer's weights. It assigns
/// the parameter's var part, so the parameter's own gradient buffer is
/// bypassed while aliased: for gradient checks only.
template <class M, class T, class S, class B>
void alias(M& model, const std::string& path, const var<T, S, B>& v) {
  bool found = false;
  visit_parameters(model, [&](const std::string& p, auto& param) {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(param)>, parameter<T, S, B>>)
      if (p == path) static_cast<var<T, S, B>&>(param) = v, found = true;
  });
  if (!found) throw std::logic_error("alias: no parameter " + path + " of that type");
}

/// The value of the parameter at `path` (to start a gradient check from it).
template <class T, class S, class M>
tensor<T, S> value_of(M& model, const std::string& path) {
  tensor<T, S> out;
  visit_parameters(model, [&](const std::string& p, auto& param) {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(param)>, parameter<T, S>>)
      if (p == path) out = param.value().clone();
  });
  if (!out.defined()) throw std::logic_error("value_of: no parameter " + path + " of that type");
  return out;
}

/// Router weight scaled up: well-separated logits, stable selections.
template <class R>
void spread_router(R& router, double scale, rng& g) {
  router.parameters([&](std::string_view, auto& w) { w.value() = normal<double>(g, w.shape(), 0.0, scale); });
}

}  // namespace

TEST_CASE("gradcheck: grouped_matmul, both operands, empty groups", "[gradcheck][grouped]") {
  rng g(71);
  auto f = [](const offsets_tensor& o) { return [o](auto x, auto w) { return grouped_matmul(x, w, o); }; };
  // dyn: the middle group is empty.
  REQUIRE_GRADIENTS(f(offsets({0, 2, 2, 5})), randn(g, shape<dyn, dyn>{5, 3}), randn(g, shape<dyn, dyn, dyn>{3, 3, 4}));
  // static: the first and last groups are empty.
  REQUIRE_GRADIENTS(f(offsets({0, 0, 3, 6, 6})), randn(g, shape<6, 3>{}), randn(g, shape<4, 3, 2>{}));
  // one group holding every row: an ordinary matmul.
  REQUIRE_GRADIENTS(f(offsets({0, 4})), randn(g, shape<dyn, 2>{4}), randn(g, shape<1, 2, 3>{}));
  // chained, as in an expert: grouped_matmul(act(grouped_matmul(x, w1)), w2).
  const auto o = offsets({0, 1, 4});
  REQUIRE_GRADIENTS([&](auto x, auto w1, auto w2) { return grouped_matmul(tanh(grouped_matmul(x, w1, o)), w2, o); },
                    randn(g, shape<dyn, 3>{4}), randn(g, shape<2, 3, 5>{}), randn(g, shape<2, 5, 3>{}));
}

TEST_CASE("gradcheck: add_grouped_rows", "[gradcheck][grouped]") {
  rng g(72);
  const auto o = offsets({0, 2, 2, 5});
  REQUIRE_GRADIENTS([&](auto h, auto b) { return add_grouped_rows(h, b, o); }, randn(g, shape<dyn, dyn>{5, 4}),
                    randn(g, shape<dyn, dyn>{3, 4}));
  REQUIRE_GRADIENTS([&](auto h, auto b) { return add_grouped_rows(h, b, o) * h; }, randn(g, shape<5, 4>{}),
                    randn(g, shape<3, 4>{}));
}

TEST_CASE("gradcheck: logsumexp_rows", "[gradcheck][logsumexp]") {
  rng g(73);
  REQUIRE_GRADIENTS([](auto x) { return logsumexp_rows(x); }, randn(g, shape<dyn, dyn>{4, 5}));
  REQUIRE_GRADIENTS([](auto x) { return logsumexp_rows(x); }, randn(g, shape<3, 6>{}));
  // squared, as in the z-loss; and with large logits.
  REQUIRE_GRADIENTS([](auto x) { auto l = logsumexp_rows(x); return l * l; }, randn(g, shape<dyn, 3>{4}));
  REQUIRE_GRADIENTS([](auto x) { return logsumexp_rows(x * 50.0); }, randn(g, shape<2, 4>{}));
}

namespace {

constexpr std::size_t D = 4, F = 5, E = 3, T = 6;

/// A top-k MoE layer in double with a spread router and optionally a shared expert.
template <std::size_t K, class Expert>
auto top_k_layer(std::uint64_t seed, moe::top_k_options o, bool shared) {
  using layer_t = moe::layer<moe::top_k_router<D, E, K, double>, Expert, double>;
  rng g(seed);
  moe::top_k_router<D, E, K, double> router(g, o);
  spread_router(router, 2.0, g);
  typename layer_t::bank_type bank(g);
  std::optional<typename layer_t::shared_type> sh;
  if (shared) sh.emplace(g);
  return layer_t(std::move(router), std::move(bank), std::move(sh));
}

using ffn = moe::ffn_expert<D, F, moe::activation::gelu>;
using swiglu = moe::swiglu_expert<D, F>;

}  // namespace

TEST_CASE("gradcheck: moe::layer with respect to x", "[gradcheck][moe]") {
  rng g(74);
  SECTION("top-1 softmax, dyn tokens") {
    auto layer = top_k_layer<1, ffn>(1, {.renormalize = false}, false);
    REQUIRE_GRADIENTS([&](auto x) { return layer(x); }, randn(g, shape<dyn, D>{T}));
  }
  SECTION("top-2 sigmoid, capacity dropping, shared expert, static tokens") {
    auto layer = top_k_layer<2, ffn>(2, {.score = moe::score_fn::sigmoid, .capacity_factor = 0.5}, true);
    REQUIRE_GRADIENTS([&](auto x) { return layer(x); }, randn(g, shape<T, D>{}));
    REQUIRE(layer.last_routing().dropped > 0);
  }
  SECTION("top-2 softmax, swiglu experts") {
    auto layer = top_k_layer<2, swiglu>(3, {}, false);
    REQUIRE_GRADIENTS([&](auto x) { return layer(x); }, randn(g, shape<dyn, D>{T}));
  }
  SECTION("expert choice") {
    using layer_t = moe::layer<moe::expert_choice_router<D, E, double>, ffn, double>;
    rng h(4);
    moe::expert_choice_router<D, E, double> router(h, {.capacity_factor = 1.0});
    spread_router(router, 1.0, h);
    layer_t layer(std::move(router), layer_t::bank_type(h));
    REQUIRE_GRADIENTS([&](auto x) { return layer(x); }, randn(g, shape<dyn, D>{T}));
  }
}

TEST_CASE("gradcheck: moe::layer with respect to every weight", "[gradcheck][moe]") {
  rng g(75);
  SECTION("ffn experts with biases, shared expert, top-2 with capacity") {
    auto layer = top_k_layer<2, ffn>(5, {.capacity_factor = 0.75}, true);
    using w_t = shape<dyn, D, F>;
    REQUIRE_GRADIENTS(
        [&](auto x, auto router, auto w1, auto b1, auto w2, auto b2, auto shared_w1) {
          alias(layer, "router.weight", router);
          alias(layer, "experts.w1", w1), alias(layer, "experts.b1", b1);
          alias(layer, "experts.w2", w2), alias(layer, "experts.b2", b2);
          alias(layer, "shared.w1", shared_w1);
          return layer(x);
        },
        randn(g, shape<dyn, D>{T}), value_of<double, shape<D, E>>(layer, "router.weight"),
        value_of<double, w_t>(layer, "experts.w1"), randn(g, shape<dyn, F>{E}),
        value_of<double, shape<dyn, F, D>>(layer, "experts.w2"), randn(g, shape<dyn, D>{E}),
        value_of<double, shape<dyn, D, F>>(layer, "shared.w1"));
  }
  SECTION("swiglu experts, top-1 sigmoid") {
    auto layer = top_k_layer<1, swiglu>(6, {.score = moe::score_fn::sigmoid, .renormalize = false}, false);
    REQUIRE_GRADIENTS(
        [&](auto router, auto wg, auto wu, auto wd) {
          alias(layer, "router.weight", router);
          alias(layer, "experts.w_gate", wg), alias(layer, "experts.w_up", wu), alias(layer, "experts.w_down", wd);
          return layer(tape::current()->input(from_values<double>(shape<dyn, D>{2}, {0.3, -1.2, 0.8, 0.5,  //
                                                                                      -0.7, 0.4, 1.1, -0.2})));
        },
        value_of<double, shape<D, E>>(layer, "router.weight"), randn(g, shape<dyn, D, F>{E}), randn(g, shape<dyn, D, F>{E}),
        randn(g, shape<dyn, F, D>{E}));
  }
}

TEST_CASE("gradcheck helper: an aliased parameter reads and differentiates the var", "[gradcheck][moe]") {
  // Guards the weight checks above: were alias() a no-op, the analytic and
  // numeric gradients would both be zero and agree.
  auto layer = top_k_layer<1, ffn>(7, {}, false);
  rng g(76);
  const auto x = randn(g, shape<dyn, D>{T});
  tape t;
  const auto before = layer(t.input(x)).value().clone();
  auto w2 = t.variable(randn(g, shape<dyn, F, D>{E}));
  alias(layer, "experts.w2", w2);
  auto y = layer(t.input(x));
  t.backward(sum(y));
  bool differs = false;
  for (std::size_t i = 0; i < y.size(); ++i) differs = differs || y.value()[i] != before[i];
  REQUIRE(differs);
  REQUIRE(w2.grad().defined());
  REQUIRE(std::any_of(w2.grad().data(), w2.grad().data() + w2.size(), [](double v) { return v != 0.0; }));
  REQUIRE_THROWS_AS(alias(layer, "experts.nope", w2), std::logic_error);
}

TEST_CASE("gradcheck: a bank with shared weights (3 slots, 2 weight sets)", "[gradcheck][moe][sharing]") {
  auto layer = top_k_layer<2, ffn>(8, {}, false);  // no aux loss: it rides on backward, not in the value
  layer.experts().share(moe::slot_map<cpu>(std::vector<index_t>{0, 1, 0}));
  REQUIRE(layer.experts().weight_sets() == 2);
  rng g(77);
  const auto x = randn(g, shape<dyn, D>{T});
  REQUIRE_PARAMETER_GRADIENTS(layer, [&](tape& t) { return layer(t.input(x)); });
  REQUIRE_GRADIENTS([&](auto v) { return layer(v); }, x);
}

TEST_CASE("gradcheck: a plan-aware bank", "[gradcheck][moe][plan_aware]") {
  using router_t = moe::top_k_router<D, E, 2, double>;
  using layer_t = moe::layer<router_t, moekit::testing::positional_expert<D>, double>;
  rng g(78);
  router_t router(g);
  spread_router(router, 3.0, g);
  layer_t layer(std::move(router), layer_t::bank_type(g, E, 3));
  const auto x = randn(g, shape<dyn, D>{6});
  REQUIRE_PARAMETER_GRADIENTS(layer, [&](tape& t) { return layer(t.input(x)); });
  REQUIRE_GRADIENTS([&](auto v) { return layer(v); }, x);
}
