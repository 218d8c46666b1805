// Losses: forward values against numbers computed here from std::exp/std::log
// (PyTorch's definitions), the ignore_index and label-smoothing rules, MixUp,
// KL divergence properties and temperature scaling, mse, and error messages.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <moekit.hpp>
#include <moekit/autograd/ops/loss.hpp>

using namespace moekit;
using Catch::Contains;

namespace {

// The 2x3 example used throughout: row 0 = (1, 2, 3), row 1 = (1, -1, 0.5).
const std::vector<double> kLogits = {1, 2, 3, 1, -1, 0.5};

tensor<double, shape<dyn, 3>> example_logits() {
  return from_values<double>(shape<dyn, 3>{2}, {1, 2, 3, 1, -1, 0.5});
}
tensor<index_t, shape<dyn>> labels_of(std::initializer_list<index_t> y) {
  return from_values<index_t>(shape<dyn>{y.size()}, y);
}

/// log(sum_c exp(x[r, c])) of the 2x3 example, straight from the definition.
double lse(std::size_t r) {
  return std::log(std::exp(kLogits[3 * r]) + std::exp(kLogits[3 * r + 1]) + std::exp(kLogits[3 * r + 2]));
}
/// -log softmax(x)[r, c].
double neg_logp(std::size_t r, std::size_t c) { return lse(r) - kLogits[3 * r + c]; }

double scalar(const auto& v) { return v.value()[0]; }

}  // namespace

TEST_CASE("loss: cross_entropy of a 2x3 example by hand", "[autograd][loss]") {
  tape t;
  auto x = t.variable(example_logits());
  auto y = labels_of({2, 0});
  const double l0 = neg_logp(0, 2), l1 = neg_logp(1, 0);

  auto mean = cross_entropy(x, y);
  STATIC_REQUIRE(decltype(mean)::rank() == 0);
  REQUIRE(scalar(mean) == Approx((l0 + l1) / 2).epsilon(1e-12));
  REQUIRE(scalar(cross_entropy<reduction::sum>(x, y)) == Approx(l0 + l1).epsilon(1e-12));
  auto rows = cross_entropy<reduction::none>(x, y);
  REQUIRE(rows.shape() == shape<dyn>{2});
  REQUIRE(rows.value()[0] == Approx(l0).epsilon(1e-12));
  REQUIRE(rows.value()[1] == Approx(l1).epsilon(1e-12));

  // dlogits = (softmax - one_hot) / N.
  t.backward(mean);
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t c = 0; c < 3; ++c) {
      const double p = std::exp(-neg_logp(r, c)), hot = c == (r == 0 ? 2u : 0u) ? 1.0 : 0.0;
      REQUIRE(x.grad()(r, c) == Approx((p - hot) / 2).epsilon(1e-12));
    }
}

TEST_CASE("loss: cross_entropy with static shapes and float", "[autograd][loss]") {
  tape t;
  auto x = t.variable(from_values<float>(shape<2, 3>{}, {1, 2, 3, 1, -1, 0.5f}));
  auto y = from_values<index_t>(shape<2>{}, {2, 0});
  auto rows = cross_entropy<reduction::none>(x, y);
  STATIC_REQUIRE(std::is_same_v<decltype(rows)::shape_type, shape<2>>);
  REQUIRE(rows.value()[0] == Approx(neg_logp(0, 2)).epsilon(1e-6));
  REQUIRE(rows.value()[1] == Approx(neg_logp(1, 0)).epsilon(1e-6));
}

TEST_CASE("loss: cross_entropy label smoothing", "[autograd][loss]") {
  tape t;
  auto x = t.input(example_logits());
  auto y = labels_of({2, 0});
  const double eps = 0.1;
  // loss_i = (1-ε)(-log p_i[y_i]) + ε · mean_c(-log p_i[c])
  auto row = [&](std::size_t r, std::size_t label) {
    const double uniform = (neg_logp(r, 0) + neg_logp(r, 1) + neg_logp(r, 2)) / 3;
    return (1 - eps) * neg_logp(r, label) + eps * uniform;
  };
  const double expected = (row(0, 2) + row(1, 0)) / 2;
  REQUIRE(scalar(cross_entropy(x, y, {.label_smoothing = eps})) == Approx(expected).epsilon(1e-12));
  REQUIRE(scalar(cross_entropy<reduction::sum>(x, y, {.label_smoothing = eps})) ==
          Approx(2 * expected).epsilon(1e-12));
  // Smoothing changes the value: the check above could not pass by ignoring ε.
  REQUIRE(std::abs(expected - (neg_logp(0, 2) + neg_logp(1, 0)) / 2) > 1e-3);
}

TEST_CASE("loss: ignore_index leaves rows out of numerator and denominator", "[autograd][loss]") {
  tape t;
  auto x = t.variable(example_logits());
  auto y = labels_of({-100, 1});
  const double eps = 0.2;
  const double l1 = (1 - eps) * neg_logp(1, 1) + eps * (neg_logp(1, 0) + neg_logp(1, 1) + neg_logp(1, 2)) / 3;

  auto loss = cross_entropy(x, y, {.label_smoothing = eps});
  REQUIRE(scalar(loss) == Approx(l1).epsilon(1e-12));  // divided by 1 row, not 2
  REQUIRE(scalar(cross_entropy<reduction::sum>(x, y, {.label_smoothing = eps})) == Approx(l1).epsilon(1e-12));
  auto rows = cross_entropy<reduction::none>(x, y, {.label_smoothing = eps});
  REQUIRE(rows.value()[0] == 0);
  REQUIRE(rows.value()[1] == Approx(l1).epsilon(1e-12));

  t.backward(loss);
  for (std::size_t c = 0; c < 3; ++c) REQUIRE(x.grad()(0, c) == 0);  // the ignored row gets nothing
  double row_sum = 0;
  for (std::size_t c = 0; c < 3; ++c) {
    const double target = eps / 3 + (c == 1 ? 1 - eps : 0);
    REQUIRE(x.grad()(1, c) == Approx(std::exp(-neg_logp(1, c)) - target).epsilon(1e-12));
    row_sum += x.grad()(1, c);
  }
  REQUIRE(row_sum == Approx(0).margin(1e-12));

  // A custom ignore_index inside [0, C) ignores that class.
  REQUIRE(scalar(cross_entropy(x, labels_of({2, 1}), {.ignore_index = 2})) == Approx(neg_logp(1, 1)).epsilon(1e-12));
}

TEST_CASE("loss: every row ignored gives 0, not NaN", "[autograd][loss]") {
  // PyTorch returns NaN here (0 / 0); moekit defines the mean of no rows as 0.
  tape t;
  auto x = t.variable(example_logits());
  auto loss = cross_entropy(x, labels_of({-100, -100}), {.label_smoothing = 0.1});
  REQUIRE(scalar(loss) == 0);
  t.backward(loss);
  for (double gr : x.grad().span()) REQUIRE(gr == 0);
}

TEST_CASE("loss: cross_entropy_mix is the λ-weighted sum of two cross entropies", "[autograd][loss]") {
  rng g(11);
  auto logits = normal<double>(g, shape<dyn, 5>{4});
  auto a = labels_of({0, 4, -100, 2});
  auto b = labels_of({3, -100, -100, 2});  // another ignored count: separate denominators
  const double lambda = 0.3;
  const cross_entropy_options opt{.label_smoothing = 0.05};

  tape t;
  auto x1 = t.variable(logits);
  auto mix = cross_entropy_mix(x1, a, b, lambda, opt);
  auto x2 = t.variable(logits);
  auto ref = cross_entropy(x2, a, opt) * lambda + cross_entropy(x2, b, opt) * (1 - lambda);
  REQUIRE(scalar(mix) == Approx(scalar(ref)).epsilon(1e-12));
  t.backward(mix);
  t.backward(ref);
  for (std::size_t i = 0; i < logits.size(); ++i) REQUIRE(x1.grad()[i] == Approx(x2.grad()[i]).epsilon(1e-12));

  auto rows = cross_entropy_mix<reduction::none>(t.input(logits), a, b, lambda, opt);
  auto rows_a = cross_entropy<reduction::none>(t.input(logits), a, opt);
  auto rows_b = cross_entropy<reduction::none>(t.input(logits), b, opt);
  for (std::size_t i = 0; i < 4; ++i)
    REQUIRE(rows.value()[i] == Approx(lambda * rows_a.value()[i] + (1 - lambda) * rows_b.value()[i]).epsilon(1e-12));
  // λ = 1 is plain cross entropy on labels_a.
  REQUIRE(scalar(cross_entropy_mix<reduction::sum>(t.input(logits), a, b, 1.0, opt)) ==
          Approx(scalar(cross_entropy<reduction::sum>(t.input(logits), a, opt))).epsilon(1e-12));
}

TEST_CASE("loss: cross_entropy with soft targets", "[autograd][loss]") {
  tape t;
  auto x = t.input(example_logits());
  auto target = from_values<double>(shape<2, 3>{}, {0.2, 0.3, 0.5, 1, 0, 0});
  const double expected = (0.2 * neg_logp(0, 0) + 0.3 * neg_logp(0, 1) + 0.5 * neg_logp(0, 2) + neg_logp(1, 0)) / 2;
  REQUIRE(scalar(cross_entropy(x, target)) == Approx(expected).epsilon(1e-12));

  // One-hot targets are class labels, smoothing included (PyTorch smooths both forms alike).
  auto one_hot = from_values<double>(shape<2, 3>{}, {0, 0, 1, 1, 0, 0});
  auto y = labels_of({2, 0});
  for (double eps : {0.0, 0.3}) {
    REQUIRE(scalar(cross_entropy(x, one_hot, {.label_smoothing = eps})) ==
            Approx(scalar(cross_entropy(x, y, {.label_smoothing = eps}))).epsilon(1e-12));
    auto soft_rows = cross_entropy<reduction::none>(x, one_hot, {.label_smoothing = eps});
    auto hard_rows = cross_entropy<reduction::none>(x, y, {.label_smoothing = eps});
    REQUIRE(soft_rows.value()[1] == Approx(hard_rows.value()[1]).epsilon(1e-12));
  }
}

TEST_CASE("loss: nll is cross entropy on log-probabilities", "[autograd][loss]") {
  tape t;
  std::vector<double> logp(6);
  for (std::size_t i = 0; i < 6; ++i) logp[i] = -neg_logp(i / 3, i % 3);
  auto lp = t.variable(from_values<double>(shape<dyn, 3>{2}, std::span<const double>(logp)));
  auto y = labels_of({1, -100});
  auto loss = nll(lp, y);
  REQUIRE(scalar(loss) == Approx(neg_logp(0, 1)).epsilon(1e-12));
  REQUIRE(scalar(nll<reduction::sum>(lp, labels_of({1, 2}))) == Approx(neg_logp(0, 1) + neg_logp(1, 2)).epsilon(1e-12));
  const double ce = scalar(cross_entropy(t.input(example_logits()), labels_of({2, 0})));
  REQUIRE(scalar(nll(lp, labels_of({2, 0}))) == Approx(ce).epsilon(1e-12));
  t.backward(loss);
  // -1 at the label of the one kept row, 0 elsewhere.
  const std::vector<double> expected = {0, -1, 0, 0, 0, 0};
  for (std::size_t i = 0; i < 6; ++i) REQUIRE(lp.grad()[i] == expected[i]);
}

TEST_CASE("loss: kl_div (PyTorch batchmean)", "[autograd][loss]") {
  tape t;
  auto p = from_values<double>(shape<2, 3>{}, {0.25, 0.25, 0.5, 0, 0.4, 0.6});  // a zero: 0·log 0 := 0
  std::vector<double> log_q_values = {std::log(0.5), std::log(0.3), std::log(0.2),
                                      std::log(0.1), std::log(0.1), std::log(0.8)};
  auto log_q = t.input(from_values<double>(shape<2, 3>{}, std::span<const double>(log_q_values)));
  double expected = 0;
  for (std::size_t i = 0; i < 6; ++i)
    if (p[i] > 0) expected += p[i] * (std::log(p[i]) - log_q_values[i]);
  REQUIRE(scalar(kl_div(log_q, p)) == Approx(expected / 2).epsilon(1e-12));
  REQUIRE(scalar(kl_div<reduction::sum>(log_q, p)) == Approx(expected).epsilon(1e-12));
  REQUIRE(std::isfinite(scalar(kl_div(log_q, p))));

  // KL(p || p) = 0.
  std::vector<double> log_p_values = {std::log(0.25), std::log(0.25), std::log(0.5), -5, std::log(0.4), std::log(0.6)};
  auto log_p = t.input(from_values<double>(shape<2, 3>{}, std::span<const double>(log_p_values)));
  REQUIRE(scalar(kl_div(log_p, p)) == Approx(0).margin(1e-15));
}

TEST_CASE("loss: distillation kl_div, temperature and its τ² factor", "[autograd][loss]") {
  rng g(5);
  auto s = normal<double>(g, shape<dyn, 4>{3});
  auto tl = normal<double>(g, shape<dyn, 4>{3});
  tape t;
  for (double tau : {1.0, 2.0, 4.5}) {
    // Direct formula: τ²/N Σ_i Σ_c p (log p - log q), p = softmax(t/τ), q = softmax(s/τ).
    double expected = 0;
    for (std::size_t i = 0; i < 3; ++i) {
      double zs = 0, zt = 0;
      for (std::size_t c = 0; c < 4; ++c) {
        zs += std::exp(s(i, c) / tau);
        zt += std::exp(tl(i, c) / tau);
      }
      for (std::size_t c = 0; c < 4; ++c) {
        const double p = std::exp(tl(i, c) / tau) / zt, q = std::exp(s(i, c) / tau) / zs;
        expected += p * (std::log(p) - std::log(q));
      }
    }
    expected *= tau * tau / 3;
    auto loss = kl_div(t.input(s), tl, tau);
    REQUIRE(scalar(loss) == Approx(expected).epsilon(1e-12));
    REQUIRE(scalar(loss) > 0);
    REQUIRE(scalar(kl_div<reduction::sum>(t.input(s), tl, tau)) == Approx(3 * expected).epsilon(1e-12));

    // Teacher probabilities at temperature τ give the same loss.
    std::vector<double> p(12);
    for (std::size_t i = 0; i < 3; ++i) {
      double zt = 0;
      for (std::size_t c = 0; c < 4; ++c) zt += std::exp(tl(i, c) / tau);
      for (std::size_t c = 0; c < 4; ++c) p[i * 4 + c] = std::exp(tl(i, c) / tau) / zt;
    }
    auto probs = from_values<double>(shape<dyn, 4>{3}, std::span<const double>(p));
    REQUIRE(scalar(kl_div(t.input(s), probabilities{probs}, tau)) == Approx(expected).epsilon(1e-12));

    // Identical logits: zero, at every temperature.
    REQUIRE(scalar(kl_div(t.input(s), s, tau)) == Approx(0).margin(1e-14));
    auto rows = kl_div<reduction::none>(t.input(s), s, tau);
    for (double r : rows.value().span()) REQUIRE(r == Approx(0).margin(1e-14));
  }
  // ≥ 0 on random pairs.
  for (int k = 0; k < 20; ++k) {
    auto a = normal<double>(g, shape<dyn, 4>{3}, 0.0, 3.0);
    auto b = normal<double>(g, shape<dyn, 4>{3}, 0.0, 3.0);
    for (double r : kl_div<reduction::none>(t.input(a), b, 1.5).value().span()) REQUIRE(r >= 0);
  }
}

TEST_CASE("loss: distillation kl_div gradients reach the teacher when asked", "[autograd][loss]") {
  rng g(6);
  tape t;
  auto s = t.variable(normal<double>(g, shape<2, 3>{}));
  auto te = t.variable(normal<double>(g, shape<2, 3>{}));
  t.backward(kl_div(s, te, 2.0));
  REQUIRE(s.grad().defined());
  REQUIRE(te.grad().defined());
  // Both gradients sum to zero per row (softmax is shift-invariant).
  for (std::size_t r = 0; r < 2; ++r) {
    REQUIRE(s.grad()(r, 0) + s.grad()(r, 1) + s.grad()(r, 2) == Approx(0).margin(1e-14));
    REQUIRE(te.grad()(r, 0) + te.grad()(r, 1) + te.grad()(r, 2) == Approx(0).margin(1e-14));
  }
  auto s2 = t.variable(normal<double>(g, shape<2, 3>{}));
  auto loss = kl_div(s2, t.input(te.value()), 2.0);  // a constant teacher: only the student
  t.backward(loss);
  REQUIRE(s2.grad().defined());
}

TEST_CASE("loss: mse", "[autograd][loss]") {
  tape t;
  auto a = t.variable(from_values<double>(shape<3>{}, {1, 2, 3}));
  auto b = t.variable(from_values<double>(shape<dyn>{3}, {0, 0, 5}));
  auto loss = mse(a, b);
  REQUIRE(scalar(loss) == Approx(3.0).epsilon(1e-15));  // (1 + 4 + 4) / 3
  REQUIRE(scalar(mse<reduction::sum>(a, b)) == Approx(9.0).epsilon(1e-15));
  auto each = mse<reduction::none>(a, b);
  REQUIRE(each.value()[0] == 1);
  REQUIRE(each.value()[1] == 4);
  REQUIRE(each.value()[2] == 4);
  t.backward(loss);
  // d/da = 2(a - b)/3, d/db = -d/da.
  const double da[] = {2.0 / 3, 4.0 / 3, -4.0 / 3};
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(a.grad()[i] == Approx(da[i]).epsilon(1e-15));
    REQUIRE(b.grad()[i] == Approx(-da[i]).epsilon(1e-15));
  }
  REQUIRE(scalar(mse(a, from_values<double>(shape<3>{}, {1, 2, 3}))) == 0);
}

TEST_CASE("loss: errors name the op, the label and the shapes", "[autograd][loss]") {
  tape t;
  auto x = t.variable(example_logits());
  REQUIRE_THROWS_AS(cross_entropy(x, labels_of({0, 3})), value_error);
  REQUIRE_THROWS_WITH(cross_entropy(x, labels_of({0, 3})),
                      Contains("cross_entropy") && Contains("label 3") && Contains("row 1") && Contains("[0, 3)"));
  REQUIRE_THROWS_WITH(cross_entropy(x, labels_of({-1, 0})), Contains("cross_entropy") && Contains("label -1"));
  // -100 is only special while it is the ignore_index.
  REQUIRE_THROWS_AS(cross_entropy(x, labels_of({-100, 0}), {.ignore_index = -1}), value_error);
  REQUIRE_THROWS_AS(cross_entropy(x, labels_of({0, 1, 2})), shape_error);
  REQUIRE_THROWS_WITH(cross_entropy(x, labels_of({0, 1, 2})),
                      Contains("cross_entropy") && Contains("(2, 3)") && Contains("(3)"));
  REQUIRE_THROWS_WITH(cross_entropy(x, labels_of({0, 1}), {.label_smoothing = 1.5}),
                      Contains("cross_entropy") && Contains("label_smoothing"));
  REQUIRE_THROWS_WITH(cross_entropy_mix(x, labels_of({0, 1}), labels_of({0, 7}), 0.5),
                      Contains("cross_entropy_mix") && Contains("label 7") && Contains("row 1"));
  REQUIRE_THROWS_WITH(cross_entropy_mix(x, labels_of({0, 1}), labels_of({0, 1}), 1.5),
                      Contains("cross_entropy_mix") && Contains("lambda"));
  REQUIRE_THROWS_WITH(nll(x, labels_of({5, 0})), Contains("nll") && Contains("label 5"));
  REQUIRE_THROWS_AS(cross_entropy(x, zeros<double>(shape<dyn, 3>{3})), shape_error);
  REQUIRE_THROWS_WITH(cross_entropy(x, zeros<double>(shape<dyn, 3>{3})),
                      Contains("cross_entropy") && Contains("(2, 3)") && Contains("(3, 3)"));
  REQUIRE_THROWS_AS(cross_entropy(t.input(zeros<double>(shape<dyn, dyn>{2, 0})), labels_of({-100, -100})),
                    shape_error);
  REQUIRE_THROWS_WITH(kl_div(x, zeros<double>(shape<dyn, 3>{4})), Contains("kl_div") && Contains("(4, 3)"));
  REQUIRE_THROWS_AS(kl_div(x, example_logits(), 0.0), value_error);
  REQUIRE_THROWS_WITH(kl_div(x, example_logits(), -1.0), Contains("kl_div") && Contains("temperature"));
  REQUIRE_THROWS_AS(mse(x, zeros<double>(shape<dyn, 3>{3})), shape_error);
  REQUIRE_THROWS_WITH(mse(x, zeros<double>(shape<dyn, 3>{3})), Contains("mse") && Contains("(3, 3)"));
}
