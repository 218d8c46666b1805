// Optimizers, parameter groups, learning-rate schedules, gradient clipping and
// gradient accumulation, against values worked out by hand from the torch.optim
// formulas (written out here, not taken from the library).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <type_traits>
#include <vector>

#include <moekit.hpp>
#include <moekit/nn/layer.hpp>
#include <moekit/optim/adamw.hpp>
#include <moekit/optim/clip.hpp>
#include <moekit/optim/lion.hpp>
#include <moekit/optim/schedule.hpp>
#include <moekit/optim/sgd.hpp>

using namespace moekit;

namespace {

/// One flat parameter: the smallest thing an optimizer can be built from.
template <class T = double>
struct vec_model {
  parameter<T, shape<dyn>> p;
  explicit vec_model(std::initializer_list<T> values) : p(from_values<T>(shape<dyn>{values.size()}, values)) {}
  void parameters(auto&& visit) { visit("p", p); }
};

/// A weight matrix and a bias, for groups split by rank.
struct matrix_model {
  parameter<double, shape<2, 2>> weight{from_values<double>(shape<2, 2>{}, {1, 2, 3, 4})};
  parameter<double, shape<2>> bias{from_values<double>(shape<2>{}, {-1, 1})};
  void parameters(auto&& visit) {
    visit("weight", weight);
    visit("bias", bias);
  }
};

template <class T, class S>
void set_grad(parameter<T, S>& p, std::initializer_list<std::type_identity_t<T>> g) {
  std::size_t i = 0;
  for (T v : g) p.grad()[i++] = v;
}

/// Runs opt on m.p with gradient gs[t] at step t; returns p after every step.
template <class Opt>
std::vector<std::vector<double>> run(Opt& opt, vec_model<>& m, const std::vector<std::vector<double>>& gs) {
  std::vector<std::vector<double>> out;
  for (const auto& g : gs) {
    for (std::size_t i = 0; i < g.size(); ++i) m.p.grad()[i] = g[i];
    opt.step();
    out.emplace_back(m.p.value().span().begin(), m.p.value().span().end());
  }
  return out;
}

/// The gradients used by the reference-loop tests: three steps, three
/// elements, with sign changes so that every moment matters.
const std::vector<std::vector<double>> varying_grads{{0.5, -1.0, 2.0}, {-0.25, -0.5, 1.0}, {1.0, 0.1, -3.0}};
const std::initializer_list<double> start_values{1.0, -2.0, 0.5};

}  // namespace

// ---- SGD -------------------------------------------------------------------

TEST_CASE("sgd: plain steps and L2 weight decay", "[optim][sgd]") {
  vec_model<> m{1, -2, 3};
  optim::sgd<double> opt(m, {.lr = 0.1});
  auto p = run(opt, m, {{0.5, 0.25, -1}, {0.5, 0.25, -1}});
  // p -= lr·g: 1 - 0.05, -2 - 0.025, 3 + 0.1; then again.
  CHECK(p[0][0] == Approx(0.95).epsilon(1e-14));
  CHECK(p[0][1] == Approx(-2.025).epsilon(1e-14));
  CHECK(p[0][2] == Approx(3.1).epsilon(1e-14));
  CHECK(p[1][0] == Approx(0.9).epsilon(1e-14));
  CHECK(p[1][1] == Approx(-2.05).epsilon(1e-14));
  CHECK(p[1][2] == Approx(3.2).epsilon(1e-14));
  CHECK(opt.steps() == 2);

  vec_model<> d{1};
  optim::sgd<double> decayed(d, {.lr = 0.1, .weight_decay = 0.1});
  p = run(decayed, d, {{0.5}, {0.5}});
  // d = g + wd·p = 0.6 -> 0.94; d = 0.5 + 0.094 = 0.594 -> 0.8806.
  CHECK(p[0][0] == Approx(0.94).epsilon(1e-14));
  CHECK(p[1][0] == Approx(0.8806).epsilon(1e-14));
}

TEST_CASE("sgd: momentum, dampening and Nesterov", "[optim][sgd]") {
  const std::vector<std::vector<double>> g{{0.5}, {0.5}, {0.5}};
  SECTION("heavy ball: b1 = g, b = 0.9 b + g, p -= 0.1 b") {
    vec_model<> m{1};
    optim::sgd<double> opt(m, {.lr = 0.1, .momentum = 0.9});
    auto p = run(opt, m, g);
    CHECK(p[0][0] == Approx(0.95).epsilon(1e-14));    // b = 0.5
    CHECK(p[1][0] == Approx(0.855).epsilon(1e-14));   // b = 0.95
    CHECK(p[2][0] == Approx(0.7195).epsilon(1e-14));  // b = 1.355
    REQUIRE(opt.state(0, 0).buffers.size() == 1);
    CHECK(opt.state(0, 0).buffers[0][0] == Approx(1.355).epsilon(1e-14));
  }
  SECTION("dampening 0.5 applies from the second step") {
    vec_model<> m{1};
    optim::sgd<double> opt(m, {.lr = 0.1, .momentum = 0.9, .dampening = 0.5});
    auto p = run(opt, m, g);
    CHECK(p[0][0] == Approx(0.95).epsilon(1e-14));   // b = 0.5 (no dampening on the first)
    CHECK(p[1][0] == Approx(0.88).epsilon(1e-14));   // b = 0.45 + 0.25 = 0.7
    CHECK(p[2][0] == Approx(0.792).epsilon(1e-14));  // b = 0.63 + 0.25 = 0.88
  }
  SECTION("Nesterov: p -= 0.1 (g + 0.9 b), differs from heavy ball") {
    vec_model<> m{1};
    optim::sgd<double> opt(m, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
    auto p = run(opt, m, g);
    CHECK(p[0][0] == Approx(0.905).epsilon(1e-14));    // b = 0.5, d = 0.95
    CHECK(p[1][0] == Approx(0.7695).epsilon(1e-14));   // b = 0.95, d = 1.355
    CHECK(p[2][0] == Approx(0.59755).epsilon(1e-14));  // b = 1.355, d = 1.7195
  }
}

TEST_CASE("sgd: momentum + weight decay + Nesterov against the formula", "[optim][sgd]") {
  const double lr = 0.05, mu = 0.8, wd = 0.1;
  vec_model<> m(start_values);
  optim::sgd<double> opt(m, {.lr = lr, .momentum = mu, .weight_decay = wd, .nesterov = true});
  auto got = run(opt, m, varying_grads);
  std::vector<double> p(start_values), b(p.size());
  for (std::size_t t = 0; t < varying_grads.size(); ++t) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double d = varying_grads[t][i] + wd * p[i];
      b[i] = t == 0 ? d : mu * b[i] + d;
      p[i] -= lr * (d + mu * b[i]);
      CHECK(got[t][i] == Approx(p[i]).epsilon(1e-13));
    }
  }
}

// ---- Adam / AdamW ----------------------------------------------------------

namespace {
/// torch's Adam(W) for one element, textbook form: bias-corrected moments.
struct adam_reference {
  double lr, beta1, beta2, eps, wd;
  bool decoupled, amsgrad;
  double m = 0, v = 0, v_max = 0;
  int t = 0;
  double step(double p, double g) {
    ++t;
    if (decoupled) p *= 1 - lr * wd;
    else g += wd * p;
    m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g;
    v_max = std::max(v_max, v);
    const double m_hat = m / (1 - std::pow(beta1, t));
    const double v_hat = (amsgrad ? v_max : v) / (1 - std::pow(beta2, t));
    return p - lr * m_hat / (std::sqrt(v_hat) + eps);
  }
};
}  // namespace

TEST_CASE("adam: first steps by hand", "[optim][adam]") {
  vec_model<> m{1};
  optim::adam<double> opt(m, {.lr = 0.1});
  auto p = run(opt, m, {{0.5}, {-0.25}});
  // Step 1: m̂ = g, v̂ = g², so p = 1 - 0.1·0.5/(0.5 + 1e-8).
  CHECK(p[0][0] == Approx(1 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-15));
  CHECK(p[0][0] == Approx(0.900000002).epsilon(1e-12));
  // Step 2: m = 0.045 - 0.025 = 0.02, v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225,
  // m̂ = 0.02/0.19, v̂ = 0.00031225/0.001999.
  const double step2 = 0.1 * (0.02 / 0.19) / (std::sqrt(0.00031225 / 0.001999) + 1e-8);
  CHECK(p[1][0] == Approx(p[0][0] - step2).epsilon(1e-14));
  CHECK(opt.state(0, 0).buffers[0][0] == Approx(0.02).epsilon(1e-14));
  CHECK(opt.state(0, 0).buffers[1][0] == Approx(0.00031225).epsilon(1e-14));
  CHECK(opt.state(0, 0).step == 2);
}

TEST_CASE("adam and adamw: against the formula, with weight decay and amsgrad", "[optim][adam]") {
  for (bool amsgrad : {false, true}) {
    INFO("amsgrad " << amsgrad);
    vec_model<> a(start_values), w(start_values);
    optim::adam<double> adam(a, {.lr = 0.01, .betas = {0.8, 0.9}, .eps = 1e-6, .weight_decay = 0.3, .amsgrad = amsgrad});
    optim::adamw<double> adamw(w, {.lr = 0.01, .betas = {0.8, 0.9}, .eps = 1e-6, .weight_decay = 0.3, .amsgrad = amsgrad});
    auto got_a = run(adam, a, varying_grads);
    auto got_w = run(adamw, w, varying_grads);
    for (std::size_t i = 0; i < 3; ++i) {
      adam_reference ra{0.01, 0.8, 0.9, 1e-6, 0.3, false, amsgrad}, rw{0.01, 0.8, 0.9, 1e-6, 0.3, true, amsgrad};
      double pa = std::data(start_values)[i], pw = pa;
      for (std::size_t t = 0; t < varying_grads.size(); ++t) {
        pa = ra.step(pa, varying_grads[t][i]);
        pw = rw.step(pw, varying_grads[t][i]);
        CHECK(got_a[t][i] == Approx(pa).epsilon(1e-12));
        CHECK(got_w[t][i] == Approx(pw).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("adam vs adamw: L2 goes through the moments, decoupled decay does not", "[optim][adam]") {
  vec_model<> a{2}, w{2};
  optim::adam<double> adam(a, {.lr = 0.1, .weight_decay = 0.1});
  optim::adamw<double> adamw(w, {.lr = 0.1, .weight_decay = 0.1});
  run(adam, a, {{0.5}});
  run(adamw, w, {{0.5}});
  // Adam: d = 0.5 + 0.1·2 = 0.7, a normalised step of lr: 2 - 0.1·0.7/(0.7 + 1e-8).
  CHECK(a.p.value()[0] == Approx(2 - 0.1 * 0.7 / (0.7 + 1e-8)).epsilon(1e-15));
  CHECK(a.p.value()[0] == Approx(1.9).epsilon(1e-8));
  // AdamW: 2·(1 - 0.01) - 0.1·0.5/(0.5 + 1e-8).
  CHECK(w.p.value()[0] == Approx(2 * (1 - 0.01) - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-15));
  CHECK(w.p.value()[0] == Approx(1.88).epsilon(1e-8));
  CHECK(optim::adamw_options{}.weight_decay == 1e-2);  // torch's defaults
  CHECK(optim::adam_options{}.weight_decay == 0);
}

TEST_CASE("adam: amsgrad keeps the largest second moment", "[optim][adam]") {
  // β2 = 0.5 makes v fall when the gradient shrinks: v = 0.5, then 0.25 + 0.005.
  vec_model<> plain{0}, ams{0};
  optim::adam<double> a(plain, {.lr = 0.1, .betas = {0.9, 0.5}});
  optim::adam<double> b(ams, {.lr = 0.1, .betas = {0.9, 0.5}, .amsgrad = true});
  run(a, plain, {{1}, {0.1}});
  run(b, ams, {{1}, {0.1}});
  REQUIRE(a.state(0, 0).buffers.size() == 2);  // no max buffer without amsgrad
  REQUIRE(b.state(0, 0).buffers.size() == 3);
  CHECK(b.state(0, 0).buffers[1][0] == Approx(0.255).epsilon(1e-14));
  CHECK(b.state(0, 0).buffers[2][0] == Approx(0.5).epsilon(1e-14));
  // Step 2: m = 0.09 + 0.01 = 0.1, m̂ = 0.1/0.19; v̂ = v/0.75 with v = 0.5 (amsgrad) or 0.255.
  const double p1 = -0.1 * 1 / (1 + 1e-8);
  CHECK(ams.p.value()[0] == Approx(p1 - 0.1 * (0.1 / 0.19) / (std::sqrt(0.5 / 0.75) + 1e-8)).epsilon(1e-13));
  CHECK(plain.p.value()[0] == Approx(p1 - 0.1 * (0.1 / 0.19) / (std::sqrt(0.255 / 0.75) + 1e-8)).epsilon(1e-13));
}

// ---- LION ------------------------------------------------------------------

TEST_CASE("lion: sign steps, momentum, decoupled decay", "[optim][lion]") {
  SECTION("by hand") {
    vec_model<> m{1};
    optim::lion<double> opt(m, {.lr = 0.1});
    auto p = run(opt, m, {{0.5}, {-0.25}, {-0.01}});
    CHECK(p[0][0] == Approx(0.9).epsilon(1e-14));  // sign(0.05) = 1; m = 0.005
    CHECK(p[1][0] == Approx(1.0).epsilon(1e-14));  // sign(0.0045 - 0.025) = -1; m = 0.00245
    // sign(0.002205 - 0.001) = +1: the momentum outvotes the small negative gradient.
    CHECK(p[2][0] == Approx(0.9).epsilon(1e-14));
    CHECK(opt.state(0, 0).buffers[0][0] == Approx(0.0023255).epsilon(1e-12));
  }
  SECTION("weight decay, and sign(0) = 0") {
    vec_model<> m{1, 2};
    optim::lion<double> opt(m, {.lr = 0.1, .weight_decay = 0.5});
    auto p = run(opt, m, {{0.5, 0}});
    CHECK(p[0][0] == Approx(1 - 0.1 * (1 + 0.5 * 1)).epsilon(1e-14));  // 0.85
    CHECK(p[0][1] == Approx(2 - 0.1 * (0 + 0.5 * 2)).epsilon(1e-14));  // 1.9: decay only
  }
  SECTION("against the formula") {
    const double lr = 0.03, b1 = 0.8, b2 = 0.95, wd = 0.2;
    vec_model<> m(start_values);
    optim::lion<double> opt(m, {.lr = lr, .betas = {b1, b2}, .weight_decay = wd});
    auto got = run(opt, m, varying_grads);
    std::vector<double> p(start_values), mom(p.size());
    for (std::size_t t = 0; t < varying_grads.size(); ++t) {
      for (std::size_t i = 0; i < p.size(); ++i) {
        const double g = varying_grads[t][i], c = b1 * mom[i] + (1 - b1) * g;
        const double u = c > 0 ? 1 : c < 0 ? -1 : 0;
        p[i] -= lr * (u + wd * p[i]);
        mom[i] = b2 * mom[i] + (1 - b2) * g;
        CHECK(got[t][i] == Approx(p[i]).epsilon(1e-14));
      }
    }
  }
}

// ---- shared: state, groups, zero_grad, errors -------------------------------

TEST_CASE("optimizer: state is allocated on the first step; zero_grad zeroes in place", "[optim]") {
  vec_model<float> m{1, 2, 3};
  optim::adamw<float> opt(m, {.lr = 1e-3f, .betas = {0.9f, 0.999f}, .eps = 1e-8f, .weight_decay = 1e-2f, .amsgrad = false});
  CHECK(opt.state(0, 0).buffers.empty());
  set_grad(m.p, {1, 1, 1});
  opt.step();
  REQUIRE(opt.state(0, 0).buffers.size() == 2);
  CHECK(opt.state(0, 0).buffers[0].size() == 3);
  CHECK(m.p.value()[0] < 1);  // the update reached the parameter through the view
  opt.zero_grad();
  CHECK(m.p.grad()[2] == 0);
  CHECK(opt.groups()[0].params[0].name == "p");
}

TEST_CASE("optimizer: restore_state takes back what for_each_state lists, all or nothing", "[optim][state]") {
  using opt_type = optim::adamw<double>;
  vec_model<> a{1, 2, 3}, b{1, 2, 3};
  opt_type opt_a(a, {.lr = 0.1}), opt_b(b, {.lr = 0.1});
  set_grad(a.p, {0.5, -1, 2});
  opt_a.step();
  std::vector<opt_type::state_type> states;
  opt_a.for_each_state([&](const opt_type::view_type& p, const opt_type::state_type& s) {
    CHECK(p.name == "p");
    opt_type::state_type copy{s.step, {}};
    for (const auto& buf : s.buffers) copy.buffers.push_back(buf.clone());
    states.push_back(std::move(copy));
  });
  REQUIRE(states.size() == 1);

  // Wrong number of states, or a buffer of another size: nothing changes.
  REQUIRE_THROWS_AS(opt_b.restore_state(1, {}), value_error);
  REQUIRE_THROWS_WITH(opt_b.restore_state(1, {}), Catch::Contains("adamw: restore_state"));
  opt_type::state_type wrong{1, {zeros<double>(shape<dyn>{2})}};
  REQUIRE_THROWS_AS(opt_b.restore_state(1, {wrong}), shape_error);
  REQUIRE_THROWS_WITH(opt_b.restore_state(1, {wrong}), Catch::Contains("'p'"));
  CHECK(opt_b.steps() == 0);
  CHECK(opt_b.state(0, 0).buffers.empty());

  // The restored optimizer takes the next step exactly as the original.
  opt_b.restore_state(opt_a.steps(), std::move(states));
  CHECK(opt_b.steps() == 1);
  CHECK(opt_b.state(0, 0).step == 1);
  b.p.value()[0] = a.p.value()[0];
  b.p.value()[1] = a.p.value()[1];
  b.p.value()[2] = a.p.value()[2];
  set_grad(a.p, {-1, 0.25, 1});
  set_grad(b.p, {-1, 0.25, 1});
  opt_a.step();
  opt_b.step();
  for (std::size_t i = 0; i < 3; ++i) CHECK(b.p.value()[i] == a.p.value()[i]);
}

TEST_CASE("optimizer: parameter groups with their own options", "[optim][groups]") {
  matrix_model m;
  auto [vectors, matrices] = optim::split_groups(parameter_views<double>(m), [](const auto& p) { return p.extents.size() < 2; });
  REQUIRE(vectors.size() == 1);
  REQUIRE(vectors[0].name == "bias");
  REQUIRE(matrices[0].name == "weight");
  optim::sgd<double> opt({{matrices, {.lr = 0.1, .weight_decay = 0.5}}, {vectors, {.lr = 0.01}}});
  fill(m.weight.grad(), 1.0);
  fill(m.bias.grad(), 1.0);
  opt.step();
  CHECK(m.weight.value()(1, 1) == Approx(4 - 0.1 * (1 + 0.5 * 4)).epsilon(1e-14));  // 3.7
  CHECK(m.bias.value()[0] == Approx(-1 - 0.01).epsilon(1e-14));                    // no decay
  optim::set_lr_factor(opt, 0.5);
  CHECK(opt.lr(0) == Approx(0.05));
  CHECK(opt.lr(1) == Approx(0.005));
  CHECK(opt.base_lr(1) == 0.01);

  // add_group later; a parameter in two groups is refused.
  vec_model<> extra{1};
  opt.add_group(parameter_views<double>(extra), {.lr = 1});
  CHECK(opt.groups().size() == 3);
  opt.set_options(2, {.lr = 0.2, .momentum = 0.5});
  CHECK(opt.options(2).momentum == 0.5);
  CHECK(opt.base_lr(2) == 0.2);
  REQUIRE_THROWS_WITH(opt.set_options(2, {.momentum = -1}), Catch::Contains("sgd: momentum"));
  REQUIRE_THROWS_WITH(opt.add_group(parameter_views<double>(m), {}),
                      Catch::Contains("sgd") && Catch::Contains("weight") && Catch::Contains("more than one group"));
  // A refused group leaves nothing behind: a fresh parameter can still join.
  vec_model<> late{2};
  auto with_dup = parameter_views<double>(late);
  with_dup.push_back(with_dup[0]);
  REQUIRE_THROWS_WITH(opt.add_group(with_dup, {}), Catch::Contains("more than one group"));
  CHECK_NOTHROW(opt.add_group(parameter_views<double>(late), {}));
  CHECK(opt.groups().size() == 4);
}

TEST_CASE("optimizer: invalid options name the optimizer", "[optim][errors]") {
  vec_model<> m{1};
  REQUIRE_THROWS_AS(optim::sgd<double>(m, {.lr = -1}), value_error);
  REQUIRE_THROWS_WITH(optim::sgd<double>(m, {.lr = -1}), Catch::Contains("sgd: lr"));
  REQUIRE_THROWS_WITH(optim::sgd<double>(m, {.lr = 0.1, .nesterov = true}), Catch::Contains("sgd") && Catch::Contains("Nesterov"));
  REQUIRE_THROWS_WITH(optim::sgd<double>(m, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                      Catch::Contains("Nesterov"));
  REQUIRE_THROWS_WITH(optim::adam<double>(m, {.betas = {0.9, 1.0}}), Catch::Contains("adam: betas.second"));
  REQUIRE_THROWS_WITH(optim::adamw<double>(m, {.eps = -1}), Catch::Contains("adamw: eps"));
  REQUIRE_THROWS_WITH(optim::lion<double>(m, {.betas = {-0.1, 0.99}}), Catch::Contains("lion: betas.first"));
  REQUIRE_THROWS_WITH(optim::lion<double>(m, {.weight_decay = std::nan("")}), Catch::Contains("lion: weight_decay"));
  REQUIRE_THROWS_WITH(optim::sgd<double>(std::vector<parameter_view<double>>{}, {}), Catch::Contains("sgd: empty"));
  optim::sgd<double> opt(m, {.lr = 0.1});
  REQUIRE_THROWS_WITH(opt.set_lr(0, -0.5), Catch::Contains("sgd: lr"));
  CHECK(opt.lr(0) == 0.1);  // unchanged after the refused value
}

// ---- schedules -------------------------------------------------------------

TEST_CASE("schedules: values at key steps", "[optim][schedule]") {
  CHECK(optim::constant_schedule{}(12345) == 1.0);

  optim::linear_warmup warm(4);
  CHECK(warm(0) == 0.0);
  CHECK(warm(2) == 0.5);
  CHECK(warm(4) == 1.0);
  CHECK(warm(100) == 1.0);
  CHECK(optim::linear_warmup(4, 0.2)(2) == Approx(0.6));  // 0.2 + 0.8·2/4

  optim::cosine_schedule cos({.total_steps = 110, .warmup_steps = 10, .min_factor = 0.1});
  CHECK(cos(0) == 0.0);
  CHECK(cos(5) == Approx(0.5));
  CHECK(cos(10) == Approx(1.0));
  CHECK(cos(35) == Approx(0.1 + 0.9 * (1 + std::cos(std::numbers::pi / 4)) / 2));  // a quarter down
  CHECK(cos(60) == Approx(0.55));                                                    // halfway: the mean
  CHECK(cos(110) == Approx(0.1));
  CHECK(cos(1000) == Approx(0.1));

  // OneCycleLR(max_lr, total_steps=1000): up for 0.3·1000 - 1 = 299 steps, down to 999.
  optim::one_cycle oc({.total_steps = 1000});
  const double initial = 1.0 / 25, final = initial / 1e4;
  CHECK(oc(0) == Approx(initial));
  CHECK(oc(150) == Approx(1 + (initial - 1) / 2 * (std::cos(std::numbers::pi * 150 / 299) + 1)));
  CHECK(oc(299) == Approx(1.0));
  CHECK(oc(649) == Approx(final + (1 - final) / 2));  // halfway down
  CHECK(oc(999) == Approx(final).epsilon(1e-9));
  CHECK_NOTHROW(oc(1000));  // as torch, one past the last step is still accepted
  REQUIRE_THROWS_WITH(oc(1001), Catch::Contains("one_cycle") && Catch::Contains("1001"));
}

TEST_CASE("schedules: invalid arguments", "[optim][schedule][errors]") {
  REQUIRE_THROWS_AS(optim::cosine_schedule({.total_steps = 0}), value_error);
  REQUIRE_THROWS_WITH(optim::cosine_schedule({.total_steps = 0}), Catch::Contains("cosine_schedule: total_steps"));
  REQUIRE_THROWS_WITH(optim::cosine_schedule({.total_steps = 10, .warmup_steps = 11}),
                      Catch::Contains("cosine_schedule") && Catch::Contains("warmup_steps = 11"));
  REQUIRE_THROWS_WITH(optim::cosine_schedule({.total_steps = 10, .min_factor = 2}), Catch::Contains("min_factor"));
  REQUIRE_THROWS_WITH(optim::one_cycle({.total_steps = 0}), Catch::Contains("one_cycle: total_steps"));
  REQUIRE_THROWS_WITH(optim::one_cycle({.total_steps = 10, .pct_start = 1.5}), Catch::Contains("one_cycle: pct_start"));
  REQUIRE_THROWS_WITH(optim::linear_warmup(10, -1), Catch::Contains("linear_warmup: start_factor"));
  CHECK_NOTHROW(optim::cosine_schedule({.total_steps = 10, .warmup_steps = 10}));
}

TEST_CASE("scheduler: scales each group's base lr, as torch's LRScheduler", "[optim][schedule]") {
  vec_model<> a{1}, b{1};
  optim::sgd<double> opt({{parameter_views<double>(a), {.lr = 0.1}}, {parameter_views<double>(b), {.lr = 0.01}}});
  optim::scheduler sched(opt, optim::linear_warmup(2));
  CHECK(opt.lr(0) == 0.0);  // factor(0) applied at construction
  sched.step();
  CHECK(opt.lr(0) == Approx(0.05));
  CHECK(opt.lr(1) == Approx(0.005));
  sched.step();
  CHECK(opt.lr(0) == Approx(0.1));
  CHECK(opt.lr(1) == Approx(0.01));
  CHECK(sched.last_step() == 2);
}

// ---- clipping --------------------------------------------------------------

TEST_CASE("clip_grad_norm: returns the norm and scales above the threshold", "[optim][clip]") {
  matrix_model m;
  set_grad(m.weight, {3, 0, 0, 4});
  set_grad(m.bias, {0, 12});  // total norm √(9 + 16 + 144) = 13
  optim::sgd<double> opt(m, {.lr = 0.1});

  SECTION("below the threshold: untouched") {
    CHECK(optim::clip_grad_norm(opt, 20.0) == Approx(13).epsilon(1e-15));
    CHECK(m.weight.grad()[0] == 3);
    CHECK(m.bias.grad()[1] == 12);
  }
  SECTION("above: scaled by max_norm / (norm + 1e-6)") {
    const double coef = 6.5 / (13 + 1e-6);
    CHECK(optim::clip_grad_norm(opt, 6.5) == Approx(13).epsilon(1e-15));
    CHECK(m.weight.grad()[0] == Approx(3 * coef).epsilon(1e-15));
    CHECK(m.weight.grad()[3] == Approx(4 * coef).epsilon(1e-15));
    CHECK(m.bias.grad()[1] == Approx(12 * coef).epsilon(1e-15));
    // The new norm is max_norm (up to the 1e-6).
    CHECK(optim::clip_grad_norm<double>(m, 100.0) == Approx(6.5).epsilon(1e-6));
  }
  SECTION("at exactly max_norm: torch's + 1e-6 still scales, slightly") {
    CHECK(optim::clip_grad_norm(opt, 13.0) == Approx(13).epsilon(1e-15));
    CHECK(m.bias.grad()[1] == Approx(12 * 13 / (13 + 1e-6)).epsilon(1e-15));
    CHECK(m.bias.grad()[1] < 12);
  }
  SECTION("views and models give the same norm") {
    CHECK(optim::clip_grad_norm(parameter_views<double>(m), 100.0) == Approx(13).epsilon(1e-15));
    CHECK(optim::clip_grad_norm<double>(m, 100.0) == Approx(13).epsilon(1e-15));
  }
  SECTION("non-finite norms") {
    m.bias.grad()[0] = std::numeric_limits<double>::infinity();
    REQUIRE_THROWS_WITH(optim::clip_grad_norm(opt, 1.0, {.error_if_nonfinite = true}),
                        Catch::Contains("clip_grad_norm") && Catch::Contains("non-finite"));
    CHECK(m.weight.grad()[0] == 3);  // nothing scaled before the throw
    CHECK(std::isinf(optim::clip_grad_norm(opt, 1.0)));
    REQUIRE_THROWS_WITH(optim::clip_grad_norm(opt, -1.0), Catch::Contains("clip_grad_norm: max_norm"));
  }
}

TEST_CASE("clip_grad_norm: the norm does not depend on the thread count", "[optim][clip]") {
  rng g(7);
  vec_model<float> m{0};
  m.p = parameter<float, shape<dyn>>(zeros<float>(shape<dyn>{300000}));
  const auto grad = normal<float>(g, shape<dyn>{300000});
  std::copy(grad.span().begin(), grad.span().end(), m.p.grad().span().begin());
  double reference = 0;
  for (float v : grad.span()) reference += double(v) * double(v);
  const int saved = num_threads();
  set_num_threads(1);
  const double one = optim::clip_grad_norm<float>(m, 1e9);
  set_num_threads(4);
  const double four = optim::clip_grad_norm<float>(m, 1e9);
  set_num_threads(saved);
  CHECK(one == four);
  CHECK(one == Approx(std::sqrt(reference)).epsilon(1e-12));
}

// ---- gradient accumulation and training -------------------------------------

namespace {
/// y = w·x + b on (N, 1) inputs.
struct line_model {
  parameter<double, shape<1>> w{from_values<double>(shape<1>{}, {0.5})};
  parameter<double, shape<1>> b{from_values<double>(shape<1>{}, {-0.3})};
  void parameters(auto&& visit) {
    visit("w", w);
    visit("b", b);
  }
};
/// Backpropagates mean((w·x + b − y)²) over the given rows into the parameter grads.
template <class M, class T>
T backward_mse(M& m, std::initializer_list<T> xs, std::initializer_list<T> ys) {
  tape t;
  auto x = t.input(from_values<T>(shape<dyn, 1>{xs.size()}, xs));
  auto y = t.input(from_values<T>(shape<dyn, 1>{ys.size()}, ys));
  auto err = add_rows(mul_rows(x, m.w), m.b) - y;  // (N, 1)
  auto loss = mean(err * err);
  t.backward(loss);
  return loss.value()[0];
}
/// The same in float, starting from zero.
struct float_line {
  parameter<float, shape<1>> w{zeros<float>(shape<1>{})};
  parameter<float, shape<1>> b{zeros<float>(shape<1>{})};
  void parameters(auto&& visit) {
    visit("w", w);
    visit("b", b);
  }
};
}  // namespace

TEST_CASE("gradient accumulation: two half-batches, scaled by 1/2, equal one full batch", "[optim][accumulation]") {
  line_model full, acc;
  optim::sgd<double> opt_full(full, {.lr = 0.1, .momentum = 0.9});
  optim::sgd<double> opt_acc(acc, {.lr = 0.1, .momentum = 0.9});
  for (int step = 0; step < 3; ++step) {
    opt_full.zero_grad();
    backward_mse(full, {1.0, 2.0, 3.0, 4.0}, {3.0, 4.0, 8.0, 9.0});
    opt_full.step();

    opt_acc.zero_grad();
    backward_mse(acc, {1.0, 2.0}, {3.0, 4.0});
    backward_mse(acc, {3.0, 4.0}, {8.0, 9.0});
    optim::scale_grads(opt_acc, 0.5);
    CHECK(acc.w.grad()[0] == Approx(full.w.grad()[0]).epsilon(1e-13));
    CHECK(acc.b.grad()[0] == Approx(full.b.grad()[0]).epsilon(1e-13));
    opt_acc.step();
    CHECK(acc.w.value()[0] == Approx(full.w.value()[0]).epsilon(1e-13));
    CHECK(acc.b.value()[0] == Approx(full.b.value()[0]).epsilon(1e-13));
  }
  CHECK(full.w.value()[0] != 0.5);  // it did move
}

TEST_CASE("adamw: fits y = 2x + 1 through the tape", "[optim][train]") {
  float_line m;
  optim::adamw<float> opt(m, {.lr = 0.05, .weight_decay = 1e-4});
  optim::scheduler sched(opt, optim::cosine_schedule({.total_steps = 400, .warmup_steps = 20, .min_factor = 0.01}));
  const std::initializer_list<float> xs{-1.0f, -0.5f, 0.0f, 0.25f, 0.5f, 1.0f};
  const std::initializer_list<float> ys{-1.0f, 0.0f, 1.0f, 1.5f, 2.0f, 3.0f};
  float first = 0, last = 0;
  for (int step = 0; step < 400; ++step) {
    opt.zero_grad();
    last = backward_mse(m, xs, ys);
    if (step == 0) first = last;
    opt.step();
    sched.step();
  }
  INFO("loss " << first << " -> " << last << ", w = " << m.w.value()[0] << ", b = " << m.b.value()[0]);
  CHECK(first > 1);
  CHECK(last < 1e-3f);
  CHECK(m.w.value()[0] == Approx(2).margin(0.05));
  CHECK(m.b.value()[0] == Approx(1).margin(0.05));
}
