// Permutation alignment (include/moekit/merge/assignment.hpp, align.hpp).
// Pinned here:
// - linear_sum_assignment equals brute force (all 720 permutations) on 6x6
//   problems from a seed set: real costs, small integer costs full of ties,
//   negative costs, minimise and maximise; a rectangular 4x7 case against
//   every injective choice of columns; on every answer the dual certificate
//   holds (u_i + v_j <= c_ij, tight on assigned pairs, v <= 0 and 0 on free
//   columns, Σu + Σv = total; mirrored for maximise), also at 512x512;
//   its errors (empty, more rows than columns, size, NaN / inf).
// - apply_permutation is function-preserving: a moe::layer (top-2 router)
//   over FFN experts with biases, without, and SwiGLU experts gives the same
//   output, d x and router gradient after every weight set is permuted, and
//   the expert gradients equal the old ones once un-permuted; the gradient
//   a parameter already holds moves with its value.
// - the costs: weight matching against the formula written out per matrix
//   (w1ᵀw1 + b1⊗b1 + w2w2ᵀ; gate + up + down), activation matching against
//   a direct Pearson correlation.
// - planted permutations are recovered: set t = set 0 with its hidden units
//   shuffled by q plus small noise -> align_bank returns q⁻¹ and leaves set t
//   close to set 0; weight matching (FFN, SwiGLU, float and double, an
//   emulated device bank) and activation matching (FFN relu/gelu, SwiGLU,
//   rows per set through a callable, align_layer taking the activation).
// - align/permutation errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <moekit.hpp>
#include <moekit/backend/emulated.hpp>
#include <moekit/merge/align.hpp>
#include <moekit/merge/assignment.hpp>
#include <moekit/moe.hpp>

using namespace moekit;

namespace {

// ---------------------------------------------------------------- assignment

/// Checks the dual certificate of `a` for cost (n, m): proves optimality.
void require_certificate(const merge::assignment& a, const std::vector<double>& c, std::size_t n, std::size_t m,
                         merge::sense goal, double tol) {
  const double s = goal == merge::sense::minimize ? 1.0 : -1.0;  // s · (c - u - v) >= 0
  REQUIRE(a.column.size() == n);
  REQUIRE(a.u.size() == n);
  REQUIRE(a.v.size() == m);
  std::vector<int> used(m, 0);
  double total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(a.column[i] < m);
    REQUIRE(used[a.column[i]] == 0);
    used[a.column[i]] = 1;
    total += c[i * m + a.column[i]];
  }
  REQUIRE(a.total == Approx(total).margin(tol));
  double worst = 0, tight = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < m; ++j) worst = std::min(worst, s * (c[i * m + j] - a.u[i] - a.v[j]));
  for (std::size_t i = 0; i < n; ++i)
    tight = std::max(tight, std::abs(c[i * m + a.column[i]] - a.u[i] - a.v[a.column[i]]));
  INFO("most negative slack " << worst << ", largest slack on an assigned pair " << tight);
  REQUIRE(worst >= -tol);
  REQUIRE(tight <= tol);
  double duals = 0;
  for (double x : a.u) duals += x;
  for (std::size_t j = 0; j < m; ++j) {
    duals += a.v[j];
    REQUIRE(s * a.v[j] <= tol);
    if (!used[j]) REQUIRE(a.v[j] == 0.0);
  }
  REQUIRE(duals == Approx(total).margin(tol * double(n)));
}

/// The best total over every injective row -> column map (n <= m <= 8).
double brute_force(const std::vector<double>& c, std::size_t n, std::size_t m, merge::sense goal) {
  std::vector<std::size_t> cols(m);
  std::iota(cols.begin(), cols.end(), std::size_t{0});
  double best = goal == merge::sense::minimize ? std::numeric_limits<double>::infinity()
                                               : -std::numeric_limits<double>::infinity();
  do {
    double t = 0;
    for (std::size_t i = 0; i < n; ++i) t += c[i * m + cols[i]];
    best = goal == merge::sense::minimize ? std::min(best, t) : std::max(best, t);
  } while (std::next_permutation(cols.begin(), cols.end()));
  return best;
}

std::vector<double> random_costs(std::mt19937_64& g, std::size_t count, bool integer, double lo, double hi) {
  std::vector<double> c(count);
  std::uniform_real_distribution<double> u(lo, hi);
  for (auto& x : c) x = integer ? std::floor(u(g)) : u(g);
  return c;
}

TEST_CASE("linear_sum_assignment equals brute force on 6x6 problems", "[merge][assignment]") {
  int problems = 0;
  for (std::uint64_t seed = 0; seed < 60; ++seed) {
    std::mt19937_64 g(seed);
    const std::vector<std::vector<double>> costs = {
        random_costs(g, 36, false, 0, 1),     // distinct reals
        random_costs(g, 36, true, 0, 4),      // integers 0..3: many ties, many optima
        random_costs(g, 36, true, -5, 5),     // negative integers
        random_costs(g, 36, false, -1e3, 1e3)};
    for (const auto& c : costs)
      for (auto goal : {merge::sense::minimize, merge::sense::maximize}) {
        INFO("seed " << seed << (goal == merge::sense::minimize ? " minimize" : " maximize"));
        const auto a = merge::linear_sum_assignment(c, 6, 6, goal);
        REQUIRE(a.total == Approx(brute_force(c, 6, 6, goal)).margin(1e-9));
        require_certificate(a, c, 6, 6, goal, 1e-9);
        ++problems;
      }
  }
  REQUIRE(problems == 480);
  // All-equal costs: every permutation is optimal.
  const std::vector<double> flat(36, 2.5);
  REQUIRE(merge::linear_sum_assignment(flat, 6, 6).total == 15.0);
}

TEST_CASE("linear_sum_assignment on rectangular problems", "[merge][assignment]") {
  for (std::uint64_t seed = 100; seed < 120; ++seed) {
    std::mt19937_64 g(seed);
    for (bool integer : {false, true}) {
      const auto c = random_costs(g, 4 * 7, integer, -3, 3);  // (4, 7)
      for (auto goal : {merge::sense::minimize, merge::sense::maximize}) {
        INFO("seed " << seed);
        const auto a = merge::linear_sum_assignment(c, 4, 7, goal);
        REQUIRE(a.total == Approx(brute_force(c, 4, 7, goal)).margin(1e-9));
        require_certificate(a, c, 4, 7, goal, 1e-9);
      }
    }
  }
  // One row picks its best column.
  const std::vector<double> row = {3, -1, 7, 0};
  REQUIRE(merge::linear_sum_assignment(row, 1, 4).column == std::vector<std::size_t>{1});
  REQUIRE(merge::linear_sum_assignment(row, 1, 4, merge::sense::maximize).column == std::vector<std::size_t>{2});
  // The tensor overload (float costs).
  auto t = zeros<float>(shape<dyn, dyn>{2, 3});
  t(0, 0) = 1, t(0, 1) = 5, t(0, 2) = 2, t(1, 0) = 0, t(1, 1) = 6, t(1, 2) = 9;
  const auto a = merge::linear_sum_assignment(t, merge::sense::maximize);  // 5 + 9 beats 2 + 6 and 1 + 9
  REQUIRE(a.column == std::vector<std::size_t>{1, 2});
  REQUIRE(a.total == 14.0);
}

TEST_CASE("linear_sum_assignment's certificate on a 512x512 problem", "[merge][assignment]") {
  constexpr std::size_t n = 512;
  std::mt19937_64 g(512);
  const auto c = random_costs(g, n * n, false, -1, 1);
  for (auto goal : {merge::sense::minimize, merge::sense::maximize}) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto a = merge::linear_sum_assignment(c, n, n, goal);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO("512x512 solved in " << s << " s");
    require_certificate(a, c, n, n, goal, 1e-9);
  }
  // Integer costs with ties at the same size.
  const auto ci = random_costs(g, n * n, true, 0, 8);
  require_certificate(merge::linear_sum_assignment(ci, n, n), ci, n, n, merge::sense::minimize, 1e-9);
}

TEST_CASE("linear_sum_assignment's errors", "[merge][assignment]") {
  const std::vector<double> c(6, 1.0);
  using Catch::Contains;
  REQUIRE_THROWS_AS(merge::linear_sum_assignment({}, 0, 0), value_error);
  REQUIRE_THROWS_WITH(merge::linear_sum_assignment({}, 0, 3), Contains("linear_sum_assignment") && Contains("empty"));
  REQUIRE_THROWS_WITH(merge::linear_sum_assignment(c, 3, 2), Contains("(3, 2)") && Contains("more rows than columns"));
  REQUIRE_THROWS_WITH(merge::linear_sum_assignment(c, 2, 4), Contains("6 costs given") && Contains("8"));
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    auto d = c;
    d[4] = bad;
    REQUIRE_THROWS_AS(merge::linear_sum_assignment(d, 2, 3), value_error);
    REQUIRE_THROWS_WITH(merge::linear_sum_assignment(d, 2, 3), Contains("cost[1, 1]") && Contains("not finite"));
  }
}

// ---------------------------------------------------------------- banks

/// Where hidden unit j of set g sits in a named stacked matrix, written out
/// per name (independently of the banks' hidden_weights): k runs over the
/// matrix's other axis. Names with no hidden axis (b2) return false.
template <class P>
bool unit_layout(std::string_view name, const P& p, std::size_t& units, std::size_t& others) {
  if (name == "w1" || name == "w_gate" || name == "w_up") {  // (G, D, F): column j
    units = p.extent(2), others = p.extent(1);
    return true;
  }
  if (name == "b1") {  // (G, F): entry j
    units = p.extent(1), others = 1;
    return true;
  }
  if (name == "w2" || name == "w_down") {  // (G, F, D): row j
    units = p.extent(1), others = p.extent(2);
    return true;
  }
  return false;
}
template <class P>
std::size_t unit_at(std::string_view name, const P& p, std::size_t g, std::size_t j, std::size_t k) {
  if (name == "w1" || name == "w_gate" || name == "w_up") return (g * p.extent(1) + k) * p.extent(2) + j;
  if (name == "b1") return g * p.extent(1) + j;
  return (g * p.extent(1) + j) * p.extent(2) + k;
}

std::vector<std::size_t> random_perm(std::mt19937_64& g, std::size_t n) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), std::size_t{0});
  std::shuffle(p.begin(), p.end(), g);
  return p;
}
std::vector<std::size_t> inverse(const std::vector<std::size_t>& p) {
  std::vector<std::size_t> q(p.size());
  for (std::size_t j = 0; j < p.size(); ++j) q[p[j]] = j;
  return q;
}

/// Every parameter's value (or gradient) by path, on the host.
template <class M>
std::map<std::string, std::vector<double>> snapshot(M& model, bool grads) {
  std::map<std::string, std::vector<double>> out;
  visit_parameters(model, [&](const std::string& path, auto& p) {
    const auto h = (grads ? p.grad() : p.value()).template to<cpu>();
    out[path].assign(h.data(), h.data() + h.size());
  });
  return out;
}

void require_close(const std::vector<double>& a, const std::vector<double>& b, const std::string& what, double tol) {
  INFO(what);
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / (tol + tol * std::abs(b[i])));
  INFO("worst |a - b| / (tol (1 + |b|)) = " << worst);
  REQUIRE(worst <= 1.0);
}

/// One forward + backward: output, d x and every parameter's gradient.
struct step {
  std::vector<double> y, dx;
  std::map<std::string, std::vector<double>> grads;
};

std::string leaf(const std::string& path) { return path.substr(path.rfind('.') + 1); }

/// Output, d x and every gradient of a layer before and after permuting
/// every weight set's hidden units.
template <class Expert>
void require_permutation_preserves(std::size_t hidden_matrices, std::uint64_t seed) {
  constexpr std::size_t D = 8, F = 12, E = 4, T = 24;
  using router_t = moe::top_k_router<D, E, 2>;
  using layer_t = moe::layer<router_t, Expert>;
  rng g(seed);
  router_t router(g, {});
  typename layer_t::bank_type bank(g);
  layer_t layer(std::move(router), std::move(bank));
  const auto x = normal<float>(g, shape<dyn, D>{T});   // (T, D)
  const auto dy = normal<float>(g, shape<dyn, D>{T});  // (T, D)
  auto run = [&] {
    visit_parameters(layer, [](const std::string&, auto& p) { p.zero_grad(); });
    tape t;
    auto xv = t.variable(x);
    auto y = layer(xv);  // (T, D)
    t.backward(y, dy);
    std::vector<double> yv(y.value().data(), y.value().data() + y.value().size());
    std::vector<double> dx(xv.grad().data(), xv.grad().data() + xv.grad().size());
    return step{yv, dx, snapshot(layer, true)};
  };
  const step s0 = run();
  const auto& grads0 = s0.grads;
  const auto values0 = snapshot(layer, false);

  std::mt19937_64 pg(seed);
  std::vector<std::vector<std::size_t>> perms;
  for (std::size_t s = 0; s < E; ++s) {
    perms.push_back(random_perm(pg, F));
    merge::apply_permutation(layer.experts(), s, perms.back());
  }
  const auto values1 = snapshot(layer, false);
  const step s1 = run();
  const auto& grads1 = s1.grads;
  require_close(s1.y, s0.y, "output", 1e-5);
  require_close(s1.dx, s0.dx, "d x", 1e-5);

  std::size_t moved = 0;
  visit_parameters(layer, [&](const std::string& path, auto& p) {
    std::size_t units = 0, others = 0;
    const std::string name = leaf(path);
    if (path.rfind("experts.", 0) != 0 || !unit_layout(name, p, units, others)) {
      require_close(grads1.at(path), grads0.at(path), "d " + path, 1e-5);  // router, b2: untouched
      REQUIRE(values1.at(path) == values0.at(path));
      return;
    }
    // Un-permute: new unit j of set s is old unit perms[s][j].
    std::vector<double> value(p.size()), grad(p.size());
    for (std::size_t s = 0; s < E; ++s)
      for (std::size_t j = 0; j < units; ++j)
        for (std::size_t k = 0; k < others; ++k) {
          const std::size_t from = unit_at(name, p, s, j, k), to = unit_at(name, p, s, perms[s][j], k);
          value[to] = values1.at(path)[from];
          grad[to] = grads1.at(path)[from];
        }
    REQUIRE(value == values0.at(path));
    REQUIRE(values1.at(path) != values0.at(path));  // the permutation did move the weights
    require_close(grad, grads0.at(path), "d " + path + " (un-permuted)", 1e-5);
    REQUIRE(std::any_of(grad.begin(), grad.end(), [](double v) { return v != 0.0; }));
    ++moved;
  });
  REQUIRE(moved == hidden_matrices);
  // The gradient a parameter already holds moves with its value.
  auto& w = [&]() -> auto& {
    if constexpr (Expert::matrices == 3) return layer.experts().w_down();
    else return layer.experts().w2();
  }();
  const std::vector<float> before(w.grad().data(), w.grad().data() + w.grad().size());
  REQUIRE(std::any_of(before.begin(), before.end(), [](float v) { return v != 0.0f; }));
  const auto q = random_perm(pg, F);
  merge::apply_permutation(layer.experts(), 1, q);
  for (std::size_t j = 0; j < F; ++j)
    for (std::size_t k = 0; k < D; ++k) REQUIRE(w.grad()(std::size_t{1}, j, k) == before[(F + q[j]) * D + k]);
}

}  // namespace

namespace {

using relu_ffn = moe::ffn_expert<dyn, dyn, moe::activation::relu>;
using gelu_ffn = moe::ffn_expert<dyn, dyn, moe::activation::gelu>;
using gelu_ffn_nobias = moe::ffn_expert<dyn, dyn, moe::activation::gelu, false>;
using swiglu = moe::swiglu_expert<dyn, dyn>;
template <class Expert, class T = float, class B = cpu>
using bank_of = typename Expert::template bank<dyn, T, B>;

/// Set t of `bank` := set 0 with hidden unit j taken from unit q[j], plus
/// uniform noise in [-noise, noise] on every entry (b2 too).
template <class Bank>
void plant(Bank& bank, std::size_t t, const std::vector<std::size_t>& q, double noise, std::mt19937_64& g) {
  std::uniform_real_distribution<double> u(-noise, noise);
  bank.parameters([&](std::string_view name, auto& p) {
    using T = typename std::remove_cvref_t<decltype(p)>::value_type;
    T* v = p.value().data();
    std::size_t units = 0, others = 0;
    if (!unit_layout(name, p, units, others)) {
      const std::size_t inner = p.size() / p.extent(0);
      for (std::size_t i = 0; i < inner; ++i) v[t * inner + i] = v[i] + T(u(g));
      return;
    }
    for (std::size_t j = 0; j < units; ++j)
      for (std::size_t k = 0; k < others; ++k) v[unit_at(name, p, t, j, k)] = v[unit_at(name, p, 0, q[j], k)] + T(u(g));
  });
}

/// max |set t - set 0| over every hidden matrix.
template <class Bank>
double distance_to_reference(Bank& bank, std::size_t t) {
  double worst = 0;
  bank.hidden_weights([&](std::string_view, auto& p, std::size_t) {
    const auto h = p.value().template to<cpu>();
    const std::size_t inner = p.size() / p.extent(0);
    for (std::size_t i = 0; i < inner; ++i)
      worst = std::max(worst, std::abs(double(h.data()[t * inner + i]) - double(h.data()[i])));
  });
  return worst;
}

TEST_CASE("apply_permutation leaves a moe::layer's outputs and gradients unchanged", "[merge][align]") {
  using F = moe::ffn_expert<8, 12, moe::activation::gelu, true>;
  using Fn = moe::ffn_expert<8, 12, moe::activation::relu, false>;
  using S = moe::swiglu_expert<8, 12>;
  SECTION("FFN with biases") { require_permutation_preserves<F>(3, 1); }
  SECTION("FFN without biases") { require_permutation_preserves<Fn>(2, 2); }
  SECTION("SwiGLU") { require_permutation_preserves<S>(3, 3); }
}

TEST_CASE("weight_matching_costs is the sum of unit inner products", "[merge][align]") {
  constexpr std::size_t d = 3, f = 5;
  rng g(7);
  SECTION("FFN: w1 columns, b1 entries, w2 rows") {
    bank_of<gelu_ffn, double> bank(g, 2, d, f);
    const auto c = merge::weight_matching_costs(bank, 0, 1);
    const auto& w1 = bank.w1().value();
    const auto& b1 = bank.b1().value();
    const auto& w2 = bank.w2().value();
    REQUIRE(c.extent(0) == f);
    REQUIRE(c.extent(1) == f);
    for (std::size_t a = 0; a < f; ++a)
      for (std::size_t b = 0; b < f; ++b) {
        double want = b1(std::size_t{0}, a) * b1(std::size_t{1}, b);
        for (std::size_t k = 0; k < d; ++k)
          want += w1(std::size_t{0}, k, a) * w1(std::size_t{1}, k, b) + w2(std::size_t{0}, a, k) * w2(std::size_t{1}, b, k);
        REQUIRE(c(a, b) == Approx(want).margin(1e-12));
      }
    // The reverse pair is the transpose.
    const auto r = merge::weight_matching_costs(bank, 1, 0);
    for (std::size_t a = 0; a < f; ++a)
      for (std::size_t b = 0; b < f; ++b) REQUIRE(r(b, a) == Approx(c(a, b)).margin(1e-12));
  }
  SECTION("SwiGLU: gate and up columns, down rows (float)") {
    bank_of<swiglu> bank(g, 3, d, f);
    const auto c = merge::weight_matching_costs(bank, 2, 0);
    const auto& wg = bank.w_gate().value();
    const auto& wu = bank.w_up().value();
    const auto& wd = bank.w_down().value();
    for (std::size_t a = 0; a < f; ++a)
      for (std::size_t b = 0; b < f; ++b) {
        double want = 0;
        for (std::size_t k = 0; k < d; ++k)
          want += double(wg(std::size_t{2}, k, a)) * wg(std::size_t{0}, k, b) +
                  double(wu(std::size_t{2}, k, a)) * wu(std::size_t{0}, k, b) +
                  double(wd(std::size_t{2}, a, k)) * wd(std::size_t{0}, b, k);
        REQUIRE(c(a, b) == Approx(want).margin(1e-6));
      }
  }
}

TEST_CASE("activation_matching_costs is the Pearson correlation of hidden activations", "[merge][align]") {
  constexpr std::size_t d = 4, f = 6, n = 40;
  rng g(8);
  bank_of<relu_ffn, double> bank(g, 2, d, f);
  const auto x = normal<double>(g, shape<dyn, dyn>{n, d});  // (N, D)
  const auto c = merge::activation_matching_costs(bank, 0, 1, x, moe::activation::relu);
  auto hidden = [&](std::size_t s) {  // (N, F), written out
    std::vector<double> h(n * f);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < f; ++j) {
        double z = bank.b1().value()(s, j);
        for (std::size_t k = 0; k < d; ++k) z += x(i, k) * bank.w1().value()(s, k, j);
        h[i * f + j] = std::max(z, 0.0);
      }
    return h;
  };
  const auto h0 = hidden(0), h1 = hidden(1);
  auto moments = [&](const std::vector<double>& h, std::size_t j) {
    double m = 0, v = 0;
    for (std::size_t i = 0; i < n; ++i) m += h[i * f + j] / double(n);
    for (std::size_t i = 0; i < n; ++i) v += (h[i * f + j] - m) * (h[i * f + j] - m) / double(n);
    return std::pair{m, std::sqrt(v)};
  };
  for (std::size_t a = 0; a < f; ++a)
    for (std::size_t b = 0; b < f; ++b) {
      const auto [ma, sa] = moments(h0, a);
      const auto [mb, sb] = moments(h1, b);
      double cov = 0;
      for (std::size_t i = 0; i < n; ++i) cov += (h0[i * f + a] - ma) * (h1[i * f + b] - mb) / double(n);
      REQUIRE(c(a, b) == Approx(cov / (sa * sb + 1e-7)).margin(1e-9));
      REQUIRE(std::abs(c(a, b)) <= 1.0 + 1e-9);
    }
  // A set against itself: var / (var + 1e-7) on the diagonal (1 less the epsilon's share).
  const auto self = merge::activation_matching_costs(bank, 1, 1, x, moe::activation::relu);
  for (std::size_t a = 0; a < f; ++a) {
    const double s = moments(h1, a).second;
    REQUIRE(self(a, a) == Approx(s * s / (s * s + 1e-7)).margin(1e-9));
  }
}

/// Plants q_t in every set t > 0 of a (sets, d, f) bank, aligns it with
/// `align`, and requires perms[t] == q_t⁻¹ and set t back near set 0.
template <class Bank, class Align>
void require_recovers(Bank& bank, double noise, std::uint64_t seed, Align align) {
  std::mt19937_64 g(seed);
  const std::size_t sets = bank.weight_sets(), f = merge::hidden_units(bank);
  std::vector<std::vector<std::size_t>> q(sets);
  for (std::size_t t = 1; t < sets; ++t) {
    q[t] = random_perm(g, f);
    plant(bank, t, q[t], noise, g);
    REQUIRE(distance_to_reference(bank, t) > 10 * noise);
  }
  const std::vector<merge::permutation> perms = align(bank);
  REQUIRE(perms.size() == sets);
  std::vector<std::size_t> identity(f);
  std::iota(identity.begin(), identity.end(), std::size_t{0});
  REQUIRE(perms[0] == identity);
  for (std::size_t t = 1; t < sets; ++t) {
    INFO("set " << t);
    REQUIRE(perms[t] == inverse(q[t]));
    REQUIRE(distance_to_reference(bank, t) <= 2 * noise + 1e-6);
  }
}

TEST_CASE("weight matching recovers planted permutations", "[merge][align]") {
  constexpr std::size_t d = 16, f = 48;
  rng g(11);
  auto weight = [](auto& bank) { return merge::align_bank(bank); };
  SECTION("FFN with biases, float") {
    bank_of<gelu_ffn> bank(g, 4, d, f);
    require_recovers(bank, 0.01, 1, weight);
  }
  SECTION("FFN without biases, double") {
    bank_of<gelu_ffn_nobias, double> bank(g, 3, d, f);
    require_recovers(bank, 0.01, 2, weight);
  }
  SECTION("SwiGLU, float") {
    bank_of<swiglu> bank(g, 3, d, f);
    require_recovers(bank, 0.01, 3, weight);
  }
  SECTION("to a reference other than set 0") {
    bank_of<swiglu> bank(g, 3, d, f);
    std::mt19937_64 pg(4);
    const auto q = random_perm(pg, f);
    plant(bank, 2, q, 0.01, pg);  // set 2 = set 0 shuffled by q; align set 0 to set 2
    const auto perms = merge::align_bank(bank, {.reference = 2});
    REQUIRE(perms[0] == q);
    REQUIRE(distance_to_reference(bank, 2) <= 0.02 + 1e-6);
  }
  SECTION("an FFN bank on a device backend (emulated), copied through the host") {
    bank_of<gelu_ffn> host(g, 3, d, f);
    std::mt19937_64 pg(5);
    std::vector<std::vector<std::size_t>> q(3);
    for (std::size_t t = 1; t < 3; ++t) q[t] = random_perm(pg, f), plant(host, t, q[t], 0.01, pg);
    bank_of<gelu_ffn, float, emulated_device> dev(g, 3, d, f);
    host.parameters([&](std::string_view name, auto& hp) {
      dev.parameters([&](std::string_view dname, auto& dp) {
        if constexpr (std::is_same_v<decltype(hp.value().shape()), decltype(dp.value().shape())>)
          if (name == dname) dp.value() = moekit::detail::to_backend<emulated_device>(hp.value().clone());
      });
    });
    const auto perms = merge::align_bank(dev);
    for (std::size_t t = 1; t < 3; ++t) REQUIRE(perms[t] == inverse(q[t]));
    REQUIRE(distance_to_reference(dev, 1) <= 0.02 + 1e-6);
    // The device bank now holds what aligning on the host gives.
    merge::align_bank(host);
    const auto a = host.w2().value(), b = dev.w2().value().to<cpu>();
    REQUIRE(std::equal(a.data(), a.data() + a.size(), b.data()));
  }
}

TEST_CASE("activation matching recovers planted permutations", "[merge][align]") {
  constexpr std::size_t d = 16, f = 32, n = 256;
  rng g(12);
  const auto x = normal<float>(g, shape<dyn, dyn>{n, d});  // (N, D)
  SECTION("FFN relu through align_bank with the activation given") {
    bank_of<relu_ffn> bank(g, 3, d, f);
    require_recovers(bank, 0.005, 6, [&](auto& b) {
      return merge::align_bank(b, {.method = merge::align_method::activation, .activation = moe::activation::relu}, x);
    });
  }
  SECTION("SwiGLU, rows per set through a callable") {
    bank_of<swiglu> bank(g, 3, d, f);
    const auto x2 = normal<float>(g, shape<dyn, dyn>{n, d});
    require_recovers(bank, 0.005, 7, [&](auto& b) {
      return merge::align_bank(b, {.method = merge::align_method::activation},
                               [&](std::size_t t) { return t == 1 ? x : x2; });
    });
  }
  SECTION("align_layer takes the FFN's activation from the layer") {
    using router_t = moe::top_k_router<dyn, dyn, 1>;
    using layer_t = moe::layer<router_t, gelu_ffn>;
    layer_t layer(router_t(g, {}, d, 4), layer_t::bank_type(g, 4, d, f));
    require_recovers(layer.experts(), 0.005, 8, [&](auto&) {
      return merge::align_layer(layer, {.method = merge::align_method::activation}, x);
    });
    // Aligned by weights too: already aligned, so the identity everywhere.
    const auto again = merge::align_layer(layer);
    for (const auto& p : again) REQUIRE(std::is_sorted(p.begin(), p.end()));
  }
}

TEST_CASE("alignment errors", "[merge][align]") {
  using Catch::Contains;
  rng g(13);
  bank_of<relu_ffn> bank(g, 3, 4, 6);
  const std::vector<std::size_t> ok = {5, 4, 3, 2, 1, 0};
  REQUIRE_THROWS_WITH(merge::apply_permutation(bank, 3, ok),
                      Contains("merge::apply_permutation") && Contains("set 3 out of range") && Contains("3 weight sets"));
  REQUIRE_THROWS_WITH(merge::apply_permutation(bank, 1, std::vector<std::size_t>{0, 1, 2}),
                      Contains("permutation of 3 units") && Contains("6 hidden units"));
  REQUIRE_THROWS_WITH(merge::apply_permutation(bank, 1, std::vector<std::size_t>{0, 1, 2, 2, 4, 5}),
                      Contains("entry 3 is 2 (repeated)"));
  REQUIRE_THROWS_WITH(merge::apply_permutation(bank, 1, std::vector<std::size_t>{0, 1, 2, 3, 4, 6}),
                      Contains("entry 5 is 6 (out of range)"));
  const auto w1 = std::vector<float>(bank.w1().value().data(), bank.w1().value().data() + bank.w1().size());
  REQUIRE(std::equal(w1.begin(), w1.end(), bank.w1().value().data()));  // a failed call changes nothing
  REQUIRE_THROWS_WITH(merge::align_bank(bank, {.reference = 5}), Contains("merge::align_bank") && Contains("reference set 5"));
  REQUIRE_THROWS_WITH(merge::align_bank(bank, {.method = merge::align_method::activation}),
                      Contains("needs calibration rows"));
  const auto x = normal<float>(g, shape<dyn, dyn>{10, 4});
  // The FFN bank carries its activation (ReLU here): no option needed, and an option cannot contradict it.
  const auto own = merge::activation_matching_costs(bank, 0, 1, x);
  const auto told = merge::activation_matching_costs(bank, 0, 1, x, moe::activation::gelu);
  const auto relu = merge::activation_matching_costs(bank, 0, 1, x, moe::activation::relu);
  REQUIRE(std::equal(own.data(), own.data() + own.size(), relu.data()));
  REQUIRE(std::equal(own.data(), own.data() + own.size(), told.data()));
  const auto wrong = normal<float>(g, shape<dyn, dyn>{10, 5});
  REQUIRE_THROWS_AS(merge::activation_matching_costs(bank, 0, 1, wrong, moe::activation::relu), shape_error);
  REQUIRE_THROWS_WITH(merge::activation_matching_costs(bank, 0, 1, wrong, moe::activation::relu),
                      Contains("(10, 5)") && Contains("4 input features"));
  const auto one = normal<float>(g, shape<dyn, dyn>{1, 4});
  REQUIRE_THROWS_WITH(merge::activation_matching_costs(bank, 0, 1, one, moe::activation::relu),
                      Contains("at least 2 rows"));
  REQUIRE_THROWS_WITH(merge::weight_matching_costs(bank, 0, 7), Contains("set 7 out of range"));
}

}  // namespace
