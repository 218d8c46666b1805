// The routers' auxiliary losses against their formulas, computed by hand on
// small inputs: values and gradients of load_balance_loss, z_loss and
// sequence_balance_loss; add_auxiliary_loss's gradient of 1 into aux; and the
// top-k router's weighted aux terms with their gradient into the router weight.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include <moekit.hpp>
#include <moekit/moe.hpp>

using namespace moekit;

namespace {

// Counts as the losses take them: an index tensor (n).
tensor<index_t, shape<dyn>> counts_of(std::initializer_list<index_t> v) {
  return from_values<index_t>(shape<dyn>{v.size()}, v);
}
tensor<index_t, shape<dyn>> counts_of(const std::vector<std::size_t>& v) {
  tensor<index_t, shape<dyn>> c(shape<dyn>{v.size()});
  for (std::size_t i = 0; i < v.size(); ++i) c[i] = static_cast<index_t>(v[i]);
  return c;
}

// softmax of one row, in double.
std::vector<double> softmax_row(const std::vector<double>& z) {
  double m = z[0], s = 0;
  for (double v : z) m = std::max(m, v);
  std::vector<double> p(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) s += (p[i] = std::exp(z[i] - m));
  for (auto& v : p) v /= s;
  return p;
}

}  // namespace

TEST_CASE("load_balance_loss = E · Σ_e f_e · mean_t P[t, e]", "[moe][aux_loss]") {
  // T = 3 tokens, E = 2 experts; 4 assignments: 3 to expert 0, 1 to expert 1.
  const tensor<double, shape<3, 2>> probs = from_values<double>(shape<3, 2>{}, {0.7, 0.3, 0.6, 0.4, 0.2, 0.8});
  tape t;
  auto p = t.variable(probs);
  auto loss = moe::load_balance_loss(p, counts_of({3, 1}), 4);
  // f = (3/4, 1/4); mean P = (0.5, 0.5): 2 · (0.75 · 0.5 + 0.25 · 0.5) = 1.
  REQUIRE(loss.value()[0] == Approx(1.0));
  t.backward(loss);
  // d/dP[t, e] = E · f_e / T, the same for every token.
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(p.grad()(i, 0) == Approx(2.0 * 0.75 / 3));
    REQUIRE(p.grad()(i, 1) == Approx(2.0 * 0.25 / 3));
  }

  // Unbalanced probabilities agreeing with unbalanced counts cost more than 1.
  tape t2;
  auto q = t2.variable(from_values<double>(shape<dyn, dyn>{2, 2}, {0.9, 0.1, 0.8, 0.2}));
  REQUIRE(moe::load_balance_loss(q, counts_of({2, 0}), 2).value()[0] == Approx(2.0 * (1.0 * 0.85)));
  // No assignments: f = 0, the loss is 0.
  REQUIRE(moe::load_balance_loss(q, counts_of({0, 0}), 0).value()[0] == 0.0);
}

TEST_CASE("z_loss = mean_t logsumexp(logits_t)²", "[moe][aux_loss]") {
  const std::vector<double> z = {1.0, -2.0, 0.5, 3.0, 0.0, -1.0};  // (2, 3)
  tape t;
  auto x = t.variable(from_values<double>(shape<dyn, 3>{2}, z));
  auto loss = moe::z_loss(x);
  double expected = 0;
  std::vector<double> lse(2);
  for (std::size_t r = 0; r < 2; ++r) {
    lse[r] = std::log(std::exp(z[3 * r]) + std::exp(z[3 * r + 1]) + std::exp(z[3 * r + 2]));
    expected += lse[r] * lse[r] / 2;
  }
  REQUIRE(loss.value()[0] == Approx(expected).epsilon(1e-12));
  t.backward(loss);
  // d/dz[r, c] = 2 · lse_r · softmax(z_r)[c] / T.
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t c = 0; c < 3; ++c)
      REQUIRE(x.grad()(r, c) == Approx(2 * lse[r] * std::exp(z[3 * r + c] - lse[r]) / 2).epsilon(1e-12));

  // Large logits stay finite (computed through log-softmax).
  tape t2;
  auto big = t2.variable(from_values<float>(shape<dyn, 2>{1}, {1000.0f, 1000.0f}));
  REQUIRE(moe::z_loss(big).value()[0] == Approx((1000.0 + std::log(2.0)) * (1000.0 + std::log(2.0))));
}

TEST_CASE("sequence_balance_loss = mean_b Σ_e ce[b, e] · mean_s P[b, s, e]", "[moe][aux_loss]") {
  // 2 sequences of S = 2 tokens, E = 3, k = 1.
  const std::vector<double> probs = {0.5, 0.3, 0.2,   // seq 0, token 0
                                     0.1, 0.6, 0.3,   // seq 0, token 1
                                     0.2, 0.2, 0.6,   // seq 1, token 0
                                     0.3, 0.3, 0.4};  // seq 1, token 1
  const std::vector<std::size_t> counts = {1, 1, 0,   // seq 0: tokens chose experts 0 and 1
                                           0, 0, 2};  // seq 1: both chose expert 2
  tape t;
  auto p = t.variable(from_values<double>(shape<dyn, 3>{4}, probs));
  auto loss = moe::sequence_balance_loss(p, counts_of(counts), 2, 1);
  // ce[b, e] = count · E / (S · k) = count · 3 / 2.
  double expected = 0;
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t e = 0; e < 3; ++e) {
      const double mean_p = (probs[b * 6 + e] + probs[b * 6 + 3 + e]) / 2;
      expected += double(counts[b * 3 + e]) * 1.5 * mean_p / 2;
    }
  // By hand: seq 0: 1.5 · (0.3 + 0.45) = 1.125; seq 1: 3 · 0.5 = 1.5; mean 1.3125.
  REQUIRE(expected == Approx(1.3125));
  REQUIRE(loss.value()[0] == Approx(expected).epsilon(1e-12));
  t.backward(loss);
  // d/dP[b, s, e] = ce[b, e] / (S · sequences).
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t s = 0; s < 2; ++s)
      for (std::size_t e = 0; e < 3; ++e)
        REQUIRE(p.grad()(b * 2 + s, e) == Approx(double(counts[b * 3 + e]) * 1.5 / 4).margin(1e-15));
}

TEST_CASE("expert_counts and sequence_expert_counts count a top-k choice", "[moe][aux_loss]") {
  // T = 4 tokens (2 sequences of 2), k = 2, E = 3.
  const auto idx = from_values<index_t>(shape<dyn, 2>{4}, {0, 2,   // seq 0
                                                          2, 1,
                                                          1, 0,   // seq 1
                                                          1, 2});
  const auto counts = moe::expert_counts(idx, 3);
  REQUIRE(std::vector<index_t>(counts.data(), counts.data() + 3) == std::vector<index_t>{2, 3, 3});
  const auto per_seq = moe::sequence_expert_counts(idx, 3, 2);
  REQUIRE(std::vector<index_t>(per_seq.data(), per_seq.data() + 6) == std::vector<index_t>{1, 1, 2, 1, 2, 1});
  // On a device backend the same counts (read back through to<cpu>()).
  const auto on_device = moe::sequence_expert_counts(idx.to<emulated_device>(), 3, 2).to<cpu>();
  REQUIRE(std::vector<index_t>(on_device.data(), on_device.data() + 6) == std::vector<index_t>{1, 1, 2, 1, 2, 1});
}

TEST_CASE("balance losses: the counts must match the experts", "[moe][aux_loss][errors]") {
  tape t;
  auto p = t.variable(from_values<double>(shape<dyn, 2>{2}, {0.5, 0.5, 0.4, 0.6}));
  REQUIRE_THROWS_AS(moe::load_balance_loss(p, counts_of({1, 1, 0}), 2), value_error);
  REQUIRE_THROWS_WITH(moe::load_balance_loss(p, counts_of({1, 1, 0}), 2),
                      Catch::Contains("load_balance_loss") && Catch::Contains("3 counts"));
  REQUIRE_THROWS_WITH(moe::sequence_balance_loss(p, counts_of({1, 1}), 1, 1),
                      Catch::Contains("sequence_balance_loss") && Catch::Contains("need 4"));
}

TEST_CASE("add_auxiliary_loss passes y through and sends 1 into aux", "[moe][aux_loss]") {
  tape t;
  auto y0 = t.variable(from_values<double>(shape<dyn, 2>{2}, {1, 2, 3, 4}));
  auto a = t.variable(from_values<double>(shape<2>{}, {0.5, -1.5}));
  auto aux = sum(a * a);  // d aux / d a = 2a
  auto y = add_auxiliary_loss(y0 * 3.0, aux);
  for (std::size_t i = 0; i < 4; ++i) REQUIRE(y.value()[i] == 3.0 * double(i + 1));
  t.backward(sum(y));
  for (std::size_t i = 0; i < 4; ++i) REQUIRE(y0.grad()[i] == 3.0);
  REQUIRE(a.grad()[0] == 1.0);   // 1 · 2 · 0.5
  REQUIRE(a.grad()[1] == -3.0);  // 1 · 2 · (-1.5)

  // The gradient into aux is 1 whatever y's upstream gradient is.
  tape t2;
  auto s = t2.variable(from_values<double>(shape<>{}, {2.0}));
  auto x = t2.variable(from_values<double>(shape<dyn, 1>{3}, {1, 1, 1}));
  auto z = add_auxiliary_loss(x, sum(s * 1.0));
  t2.backward(z, from_values<double>(shape<dyn, 1>{3}, {5, 6, 7}));
  REQUIRE(s.grad()[0] == 1.0);
  REQUIRE(x.grad()[2] == 7.0);
}

namespace {

// Router weight W (D = 3, E = 4), row-major.
constexpr double router_w[12] = {0.5, -0.2, 0.1, 0.3, -0.4, 0.6, 0.2, -0.1, 0.3, 0.1, -0.5, 0.4};

// A top-k router (D = 3, E = 4) whose weight is router_w.
template <std::size_t K>
moe::top_k_router<3, 4, K, double> fixed_router(moe::top_k_options o) {
  rng g(1);
  moe::top_k_router<3, 4, K, double> r(g, o);
  r.parameters([](std::string_view, auto& p) {
    for (std::size_t i = 0; i < 12; ++i) p.value()[i] = router_w[i];
  });
  return r;
}

const std::vector<double> x_values = {1.0, 0.5, -1.0, -0.3, 2.0, 0.4, 0.8, -0.6, 1.2,
                                      0.1, 0.2, 0.3, -1.5, 0.7, 0.0, 0.9, 0.9, -0.9};  // (6, 3)

}  // namespace

TEST_CASE("top_k_router adds the weighted load-balance term and its gradient reaches the router",
          "[moe][aux_loss][router]") {
  const double weight = 0.05;
  auto router = fixed_router<2>({.load_balance_weight = weight});
  const std::size_t T = 6, D = 3, E = 4, K = 2;
  tape t;
  auto plan = router.route(t.input(from_values<double>(shape<dyn, 3>{T}, x_values)));

  // By hand: softmax of x·W, each token's 2 best experts counted.
  std::vector<std::vector<double>> p(T);
  std::vector<double> f(E, 0.0), mean_p(E, 0.0);
  for (std::size_t i = 0; i < T; ++i) {
    std::vector<double> z(E, 0.0);
    for (std::size_t e = 0; e < E; ++e)
      for (std::size_t d = 0; d < D; ++d) z[e] += x_values[i * D + d] * router_w[d * E + e];
    p[i] = softmax_row(z);
    std::vector<std::size_t> order = {0, 1, 2, 3};
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return p[i][a] > p[i][b]; });
    for (std::size_t j = 0; j < K; ++j) f[order[j]] += 1.0 / double(T * K);
    for (std::size_t e = 0; e < E; ++e) mean_p[e] += p[i][e] / double(T);
  }
  double lb = 0;
  for (std::size_t e = 0; e < E; ++e) lb += double(E) * f[e] * mean_p[e];

  REQUIRE(plan.aux_terms.size() == 1);
  REQUIRE(plan.aux_terms[0].name == "load_balance");
  REQUIRE(plan.aux_terms[0].weight == weight);
  REQUIRE(plan.aux_terms[0].value() == Approx(lb).epsilon(1e-12));
  REQUIRE(plan.aux_loss.value()[0] == Approx(weight * lb).epsilon(1e-12));

  // d(weight · lb)/dW[d, e'] = weight · E / T · Σ_t Σ_e f_e · p[t, e] (δ_ee' − p[t, e']) · x[t, d].
  t.backward(plan.aux_loss);
  std::vector<double> grad(D * E);
  router.parameters([&](std::string_view, auto& w) { grad.assign(w.grad().data(), w.grad().data() + D * E); });
  double norm = 0;
  for (std::size_t d = 0; d < D; ++d)
    for (std::size_t e2 = 0; e2 < E; ++e2) {
      double g = 0;
      for (std::size_t i = 0; i < T; ++i)
        for (std::size_t e = 0; e < E; ++e)
          g += f[e] * p[i][e] * ((e == e2) - p[i][e2]) * x_values[i * D + d];
      g *= weight * double(E) / double(T);
      norm += g * g;
      REQUIRE(grad[d * E + e2] == Approx(g).margin(1e-14));
    }
  REQUIRE(norm > 1e-8);  // a real gradient, not zeros on both sides
}

TEST_CASE("top_k_router sums every weighted aux term into aux_loss", "[moe][aux_loss][router]") {
  auto router = fixed_router<1>({.load_balance_weight = 0.01, .z_loss_weight = 0.002,
                                 .sequence_balance_weight = 0.1, .seq_len = 3});
  tape t;
  auto plan = router.route(t.input(from_values<double>(shape<dyn, 3>{6}, x_values)));
  REQUIRE(plan.aux_terms.size() == 3);
  REQUIRE(plan.aux_terms[0].name == "load_balance");
  REQUIRE(plan.aux_terms[1].name == "z_loss");
  REQUIRE(plan.aux_terms[2].name == "sequence_balance");

  // Each term equals its function on the plan's logits and choices.
  tape t2;
  auto logits = t2.input(plan.logits);  // (6, 4)
  auto probs = softmax(logits);
  std::vector<std::size_t> counts(4, 0), per_seq(8, 0);
  for (std::size_t i = 0; i < 6; ++i) {
    const std::size_t best = std::size_t(std::max_element(plan.logits.data() + 4 * i, plan.logits.data() + 4 * i + 4) -
                                         (plan.logits.data() + 4 * i));
    ++counts[best], ++per_seq[(i / 3) * 4 + best];
  }
  REQUIRE(plan.aux_terms[0].value() == Approx(moe::load_balance_loss(probs, counts_of(counts), 6).value()[0]));
  REQUIRE(plan.aux_terms[1].value() == Approx(moe::z_loss(logits).value()[0]));
  REQUIRE(plan.aux_terms[2].value() == Approx(moe::sequence_balance_loss(probs, counts_of(per_seq), 3, 1).value()[0]));
  double total = 0;
  for (const auto& term : plan.aux_terms) total += term.weight * term.value();
  REQUIRE(plan.aux_loss.value()[0] == Approx(total).epsilon(1e-12));

  // z-loss alone: its gradient reaches the router weight too.
  auto z_router = fixed_router<1>({.z_loss_weight = 1.0});
  tape t3;
  auto z_plan = z_router.route(t3.input(from_values<double>(shape<dyn, 3>{6}, x_values)));
  t3.backward(z_plan.aux_loss);
  z_router.parameters([](std::string_view, auto& w) {
    REQUIRE(std::any_of(w.grad().data(), w.grad().data() + w.size(), [](double v) { return v != 0.0; }));
  });
}

TEST_CASE("top_k_router without aux weights leaves aux_loss undefined", "[moe][aux_loss][router]") {
  auto router = fixed_router<2>({});
  tape t;
  auto plan = router.route(t.input(from_values<double>(shape<dyn, 3>{6}, x_values)));
  REQUIRE(plan.aux_terms.empty());
  REQUIRE_FALSE(plan.aux_loss.value().defined());
}

TEST_CASE("top_k_router: sequence balance needs seq_len dividing the tokens", "[moe][aux_loss][errors]") {
  auto router = fixed_router<1>({.sequence_balance_weight = 0.1, .seq_len = 4});
  tape t;
  auto x = t.input(from_values<double>(shape<dyn, 3>{6}, x_values));
  REQUIRE_THROWS_AS(router.route(x), value_error);
  REQUIRE_THROWS_WITH(router.route(x), Catch::Contains("top_k_router") && Catch::Contains("seq_len"));
}

TEST_CASE("moe::layer's aux loss joins the loss on its output", "[moe][aux_loss][layer]") {
  // d/dW of sum(y) with aux on = that with aux off + d(aux)/dW.
  using layer_t = moe::layer<moe::top_k_router<3, 4, 2, double>, moe::ffn_expert<3, 5>, double>;
  auto grad_of = [](moe::top_k_options o, bool aux_only) {
    rng g(4);
    auto router = fixed_router<2>(o);
    layer_t layer(router, layer_t::bank_type(g));
    tape t;
    auto y = layer(t.input(from_values<double>(shape<dyn, 3>{6}, x_values)));
    if (aux_only) t.backward(layer.last_routing().aux_loss);
    else t.backward(sum(y));
    std::vector<double> out;
    layer.router().parameters([&](std::string_view, auto& w) { out.assign(w.grad().data(), w.grad().data() + 12); });
    return out;
  };
  const auto with = grad_of({.load_balance_weight = 0.3}, false);
  const auto without = grad_of({}, false);
  const auto aux = grad_of({.load_balance_weight = 0.3}, true);
  double diff = 0;
  for (std::size_t i = 0; i < 12; ++i) {
    REQUIRE(with[i] == Approx(without[i] + aux[i]).margin(1e-14));
    diff += std::abs(aux[i]);
  }
  REQUIRE(diff > 1e-6);
}
