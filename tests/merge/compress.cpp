// MC-SMoE compression (include/moekit/merge/{svd,low_rank_sparse,prune}.hpp).
// Pinned here: the LAPACK thin SVD reconstructs its input (full rank to ~1e-12
// in double, ~1e-5 in float) with orthonormal factors and descending values,
// a rank-r truncation errs by exactly the norm of the dropped singular values,
// and gesdd's failures surface as value_error; stable ranks of matrices with
// known spectra; a compressed bank computes what its (shared, merged) source
// computed, L·R + S = W per weight set, FFN and SwiGLU, with the parameter
// names and sizes of the layout; gradient checks (double) of the compressed
// bank inside moe::layer with respect to every L, R, S and bias and x, unpacked
// and packed; the keep-ratio schedule at its breakpoints and its errors; the
// importance EMA's value; one global threshold across two banks keeps exactly
// the highest-scoring units, zeroes the rest, and a pruned unit stays pruned;
// packed inference equals unpacked after pruning and really has fewer
// parameters and multiply-adds; a packed, merged checkpoint reloads into a
// fresh model (other rank, one weight set per slot) with identical outputs and
// is smaller than the unpacked file; on a device backend (emulated_device: the
// tensor-op paths of apply_mask, pack and the packed forward and backward) the
// compressed, pruned and packed layer matches the host.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/autograd/gradcheck.hpp>
#include <moekit/merge/low_rank_sparse.hpp>
#include <moekit/merge/prune.hpp>
#include <moekit/merge/svd.hpp>
#include <moekit/moe.hpp>
#include <moekit/optim.hpp>

#include "../support/compare.hpp"
#include "../support/temp_dir.hpp"

using namespace moekit;

namespace {

constexpr std::size_t D = 6, F = 10, E = 4, Tok = 12;

using testing::max_diff;

/// u·diag(s)·vt of an SVD (m, n) in double.
template <class T>
tensor<double, shape<dyn, dyn>> product(const merge::svd_result<T>& d, std::size_t r) {
  const std::size_t m = d.u.extent(0), n = d.vt.extent(1);
  auto out = zeros<double>(shape<dyn, dyn>{m, n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t k = 0; k < r; ++k) out(i, j) += double(d.u(i, k)) * double(d.s[k]) * double(d.vt(k, j));
  return out;
}

double frobenius_diff(const tensor<double, shape<dyn, dyn>>& a, const tensor<double, shape<dyn, dyn>>& b) {
  double acc = 0;
  for (std::size_t i = 0; i < a.size(); ++i) acc += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(acc);
}

/// A matrix (m, n) with the given singular values: Q1·diag(sigma)·Q2ᵀ from the
/// orthonormal factors of random matrices.
tensor<double, shape<dyn, dyn>> with_spectrum(rng& g, std::size_t m, std::size_t n, const std::vector<double>& sigma) {
  const auto q1 = merge::thin_svd(normal<double>(g, shape<dyn, dyn>{m, sigma.size()})).u;   // (m, k)
  const auto q2 = merge::thin_svd(normal<double>(g, shape<dyn, dyn>{sigma.size(), n})).vt;  // (k, n)
  auto out = zeros<double>(shape<dyn, dyn>{m, n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t k = 0; k < sigma.size(); ++k) out(i, j) += q1(i, k) * sigma[k] * q2(k, j);
  return out;
}

template <class R>
void spread_router(R& router, double scale, rng& g) {
  router.parameters([&](std::string_view, auto& w) {
    using P = std::remove_cvref_t<decltype(w)>;
    using V = typename P::value_type;
    w.value() = moekit::detail::to_backend<typename P::backend_type>(normal<V>(g, w.shape(), V(0), V(scale)));
  });
}

template <class Spec, class T, std::size_t K = 2, class B = cpu>
using layer_of = moe::layer<moe::top_k_router<D, E, K, T, B>, Spec, T, B>;

/// A top-2 layer over E slots whose experts share 3 weight sets (slots 0 and 2 merged).
template <class Spec, class T, class B = cpu>
layer_of<Spec, T, 2, B> merged_layer(std::uint64_t seed) {
  rng g(seed);
  moe::top_k_router<D, E, 2, T, B> router(g);
  spread_router(router, 2.0, g);
  layer_of<Spec, T, 2, B> layer(std::move(router), typename layer_of<Spec, T, 2, B>::bank_type(g));
  layer.experts().share(moe::slot_map<B>(std::vector<index_t>{0, 1, 0, 2}));
  return layer;
}

template <class L>
struct backend_of;
template <class R, class X, class T, class B>
struct backend_of<moe::layer<R, X, T, B>> {
  using type = B;
};

template <class L, class X>
auto run(L& layer, const X& x) {
  using B = typename backend_of<L>::type;
  no_grad off;
  tape t;
  return layer(t.input(x.template to<B>())).value().template to<cpu>().clone();
}

template <class M>
std::vector<std::string> parameter_names(M& model) {
  std::vector<std::string> out;
  visit_parameters(model, [&](const std::string& name, auto&) { out.push_back(name); });
  return out;
}

using ffn = moe::ffn_expert<D, F, moe::activation::gelu>;
using cmp_swiglu = moe::swiglu_expert<D, F>;

}  // namespace

TEST_CASE("thin_svd: reconstruction, orthonormal factors, descending values", "[merge][svd]") {
  rng g(1);
  for (auto [m, n] : {std::pair<std::size_t, std::size_t>{7, 5}, {5, 7}, {6, 6}, {1, 4}}) {
    const auto a = normal<double>(g, shape<dyn, dyn>{m, n});
    const auto d = merge::thin_svd(a);
    const std::size_t k = std::min(m, n);
    REQUIRE(d.u.extent(0) == m);
    REQUIRE(d.u.extent(1) == k);
    REQUIRE(d.s.size() == k);
    REQUIRE(d.vt.extent(0) == k);
    REQUIRE(d.vt.extent(1) == n);
    REQUIRE(max_diff(product(d, k), a) < 1e-12);
    for (std::size_t i = 0; i + 1 < k; ++i) REQUIRE(d.s[i] >= d.s[i + 1]);
    REQUIRE(d.s[k - 1] >= 0);
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t j = 0; j < k; ++j) {
        double uu = 0, vv = 0;
        for (std::size_t r = 0; r < m; ++r) uu += d.u(r, i) * d.u(r, j);
        for (std::size_t c = 0; c < n; ++c) vv += d.vt(i, c) * d.vt(j, c);
        REQUIRE(std::abs(uu - (i == j)) < 1e-12);
        REQUIRE(std::abs(vv - (i == j)) < 1e-12);
      }
  }
  SECTION("float") {
    const auto a = normal<float>(g, shape<dyn, dyn>{9, 4});
    const auto d = merge::thin_svd(a);
    REQUIRE(max_diff(product(d, 4), a) < 1e-5);
  }
  SECTION("an empty matrix gives empty factors") {
    const auto d = merge::thin_svd(zeros<double>(shape<dyn, dyn>{0, 3}));
    REQUIRE(d.s.size() == 0);
    REQUIRE(d.u.extent(0) == 0);
    REQUIRE(d.vt.extent(1) == 3);
  }
  SECTION("NaN input: gesdd's info surfaces as value_error") {
    auto a = normal<double>(g, shape<dyn, dyn>{4, 3});
    a(1, 1) = std::numeric_limits<double>::quiet_NaN();
    REQUIRE_THROWS_AS(merge::thin_svd(a), value_error);
  }
}

TEST_CASE("thin_svd: a rank-r truncation errs by the norm of the dropped values", "[merge][svd]") {
  rng g(2);
  const std::vector<double> sigma{5.0, 3.0, 2.0, 1.0, 0.5};
  const auto a = with_spectrum(g, 8, 6, sigma);
  const auto d = merge::thin_svd(a);
  for (std::size_t i = 0; i < sigma.size(); ++i) REQUIRE(d.s[i] == Approx(sigma[i]).epsilon(1e-12));
  REQUIRE(d.s[5] < 1e-12);  // rank 5
  for (std::size_t r = 1; r <= 5; ++r) {
    double tail = 0;
    for (std::size_t k = r; k < sigma.size(); ++k) tail += sigma[k] * sigma[k];
    REQUIRE(frobenius_diff(product(d, r), a) == Approx(std::sqrt(tail)).margin(1e-12));
  }
}

TEST_CASE("stable_rank of known spectra", "[merge][svd]") {
  rng g(3);
  // (9 + 4 + 1) / 9
  REQUIRE(merge::stable_rank(merge::thin_svd(with_spectrum(g, 7, 5, {3.0, 2.0, 1.0})).s) == Approx(14.0 / 9.0));
  // an identity: every direction equal
  auto eye = zeros<double>(shape<dyn, dyn>{5, 5});
  for (std::size_t i = 0; i < 5; ++i) eye(i, i) = 1;
  REQUIRE(merge::stable_rank(merge::thin_svd(eye).s) == Approx(5.0));
  // an outer product: rank one
  auto outer = zeros<double>(shape<dyn, dyn>{4, 6});
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 6; ++j) outer(i, j) = double(i + 1) * (double(j) - 2.5);
  REQUIRE(merge::stable_rank(merge::thin_svd(outer).s) == Approx(1.0));
  REQUIRE(merge::stable_rank(zeros<double>(shape<dyn>{3})) == 0.0);
}

TEST_CASE("compressed bank equals its merged source at init", "[merge][low_rank_sparse]") {
  rng g(4);
  SECTION("ffn, double: L·R + S = W per set, same outputs, layout names") {
    auto src = merged_layer<ffn, double>(10);
    auto comp = merge::compress(src, 3);
    auto& bank = comp.experts();
    REQUIRE(bank.experts() == E);
    REQUIRE(bank.weight_sets() == 3);
    REQUIRE(bank.slots().host() == std::vector<index_t>{0, 1, 0, 2});
    REQUIRE(bank.w1().rank() == 3);
    REQUIRE(bank.w1().l().extent(0) == 3);
    REQUIRE(bank.w1().l().extent(1) == D);
    REQUIRE(bank.w1().r().extent(2) == F);
    for (std::size_t set = 0; set < 3; ++set) {
      const auto w = src.experts().w1().value().rows(set, set + 1).reshape(shape<dyn, dyn>{D, F});
      const auto l = bank.w1().l().value().rows(set, set + 1).reshape(shape<dyn, dyn>{D, 3});
      const auto r = bank.w1().r().value().rows(set, set + 1).reshape(shape<dyn, dyn>{3, F});
      const auto s = bank.w1().s().value().rows(set, set + 1).reshape(shape<dyn, dyn>{D, F});
      auto lr = matmul(l, r);
      add_into(lr, s);
      REQUIRE(max_diff(lr, w) < 1e-13);
    }
    REQUIRE(bank.stable_ranks().size() == 2);
    for (const auto& [name, ranks] : bank.stable_ranks()) {
      REQUIRE(ranks.size() == 3);
      for (double sr : ranks) REQUIRE((sr >= 1.0 && sr <= double(D)));
    }
    const auto x = normal<double>(g, shape<dyn, D>{Tok});
    REQUIRE(max_diff(run(comp, x), run(src, x)) < 1e-12);
    const std::vector<std::string> names{"router.weight", "experts.w1.l", "experts.w1.r", "experts.w1.s", "experts.b1",
                                         "experts.w2.l",  "experts.w2.r", "experts.w2.s", "experts.b2"};
    REQUIRE(parameter_names(comp) == names);
    REQUIRE(bank.parameter_count() == 3 * (D * 3 + 3 * F + D * F + F + F * 3 + 3 * D + F * D + D));
  }
  SECTION("ffn, float") {
    auto src = merged_layer<ffn, float>(11);
    auto comp = merge::compress(src, 2);
    const auto x = normal<float>(g, shape<dyn, D>{Tok});
    REQUIRE(max_diff(run(comp, x), run(src, x)) < 1e-5);
  }
  SECTION("swiglu, double") {
    auto src = merged_layer<cmp_swiglu, double>(12);
    auto comp = merge::compress(src, 4);
    const auto x = normal<double>(g, shape<dyn, D>{Tok});
    REQUIRE(max_diff(run(comp, x), run(src, x)) < 1e-12);
    REQUIRE(parameter_names(comp.experts()) ==
            std::vector<std::string>{"w_gate.l", "w_gate.r", "w_gate.s", "w_up.l", "w_up.r", "w_up.s", "w_down.l",
                                     "w_down.r", "w_down.s"});
  }
  SECTION("ffn without biases, a shared expert, static token count; packed too") {
    using nobias = moe::ffn_expert<D, F, moe::activation::relu, false>;
    using src_t = layer_of<nobias, double, 1>;
    rng h(15);
    moe::top_k_router<D, E, 1, double> router(h);
    src_t src(std::move(router), src_t::bank_type(h), src_t::shared_type(h, 1));
    auto comp = merge::compress(src, 2);
    REQUIRE(comp.shared());
    const auto x = normal<double>(g, shape<Tok, D>{});
    REQUIRE(max_diff(run(comp, x), run(src, x)) < 1e-12);
    auto& bank = comp.experts();
    bank.sparse_matrices([](std::string_view, auto& m) {
      for (std::size_t u = 0; u < m.alive().size(); u += 2) m.alive()[u] = 0;
      m.apply_mask();
    });
    const auto pruned = run(comp, x);
    REQUIRE(max_diff(pruned, run(src, x)) > 1e-3);  // pruning changed the outputs
    bank.pack();
    REQUIRE(max_diff(run(comp, x), pruned) < 1e-12);
  }
  SECTION("full rank leaves S at rounding level") {
    auto src = merged_layer<ffn, double>(13);
    auto comp = merge::compress(src, D);
    const auto s = comp.experts().w1().s().value();
    REQUIRE(max_diff(s, zeros<double>(s.shape())) < 1e-12);
  }
  SECTION("rank out of range") {
    auto src = merged_layer<ffn, double>(14);
    REQUIRE_THROWS_AS(merge::compress(src, 0), value_error);
    REQUIRE_THROWS_WITH(merge::compress(src, D + 1), Catch::Contains("rank 7") && Catch::Contains("(6, 10)"));
  }
}

TEST_CASE("gradcheck: compressed bank inside moe::layer", "[merge][low_rank_sparse][gradcheck]") {
  rng g(5);
  const auto x = normal<double>(g, shape<dyn, D>{Tok});
  SECTION("ffn with biases, shared sets, unpacked") {
    auto comp = merge::compress(merged_layer<ffn, double>(20), 3);
    auto r = check_parameter_gradients(comp, [&](tape& t) { return comp(t.input(x)); }, "experts");
    INFO(r.message);
    REQUIRE(r.ok);
    REQUIRE(r.checked == comp.experts().parameter_count());
    auto rx = check_gradients([&](auto v) { return comp(v); }, x);
    INFO(rx.message);
    REQUIRE(rx.ok);
  }
  SECTION("swiglu, unpacked") {
    auto comp = merge::compress(merged_layer<cmp_swiglu, double>(21), 2);
    auto r = check_parameter_gradients(comp, [&](tape& t) { return comp(t.input(x)); }, "experts");
    INFO(r.message);
    REQUIRE(r.ok);
    REQUIRE(r.checked == comp.experts().parameter_count());
  }
  SECTION("ffn, packed after pruning half the units") {
    auto comp = merge::compress(merged_layer<ffn, double>(22), 3);
    comp.experts().sparse_matrices([&](std::string_view, auto& m) {
      for (std::size_t u = 0; u < m.alive().size(); ++u) m.alive()[u] = (u * 7) % 3 != 0;
    });
    comp.experts().pack();
    REQUIRE(comp.experts().packed());
    auto r = check_parameter_gradients(comp, [&](tape& t) { return comp(t.input(x)); }, "experts");
    INFO(r.message);
    REQUIRE(r.ok);
    REQUIRE(r.checked == comp.experts().parameter_count());
    auto rx = check_gradients([&](auto v) { return comp(v); }, x);
    INFO(rx.message);
    REQUIRE(rx.ok);
  }
}

TEST_CASE("keep_ratio: the cubic schedule at its breakpoints", "[merge][prune]") {
  // T = 100, w = 5, final 0.1: 1 up to 5, cubic over (5, 80], 0.1 after 80.
  REQUIRE(merge::keep_ratio(0, 100, 5, 0.1) == 1.0);
  REQUIRE(merge::keep_ratio(5, 100, 5, 0.1) == 1.0);
  const double first = 0.1 + 0.9 * std::pow(1.0 - 1.0 / 75.0, 3);
  REQUIRE(merge::keep_ratio(6, 100, 5, 0.1) == Approx(first).epsilon(1e-14));
  REQUIRE(merge::keep_ratio(6, 100, 5, 0.1) < 1.0);
  REQUIRE(merge::keep_ratio(42, 100, 5, 0.1) == Approx(0.1 + 0.9 * std::pow(1.0 - 37.0 / 75.0, 3)).epsilon(1e-14));
  REQUIRE(merge::keep_ratio(79, 100, 5, 0.1) == Approx(0.1 + 0.9 * std::pow(1.0 / 75.0, 3)).epsilon(1e-12));
  REQUIRE(merge::keep_ratio(80, 100, 5, 0.1) == Approx(0.1).epsilon(1e-14));  // the cubic meets the floor
  REQUIRE(merge::keep_ratio(81, 100, 5, 0.1) == 0.1);
  REQUIRE(merge::keep_ratio(1000, 100, 5, 0.1) == 0.1);
  for (std::size_t t = 1; t < 100; ++t) REQUIRE(merge::keep_ratio(t + 1, 100, 5, 0.1) <= merge::keep_ratio(t, 100, 5, 0.1));
  // no warm-up
  REQUIRE(merge::keep_ratio(0, 10, 0, 0.5) == 1.0);
  REQUIRE(merge::keep_ratio(10, 10, 0, 0.5) == Approx(0.5));
  REQUIRE_THROWS_AS(merge::keep_ratio(1, 25, 5, 0.1), value_error);  // T <= 5w
  REQUIRE_THROWS_AS(merge::keep_ratio(1, 100, 5, 1.5), value_error);
  REQUIRE_THROWS_AS(merge::pruner({.total_steps = 100, .warmup_steps = 5, .final_ratio = 0.1, .beta = 1.0}),
                    value_error);
}

namespace {

using small_bank = merge::low_rank_sparse<moe::ffn_expert<4, 5>>::bank<2, double, cpu>;

struct two_banks {
  small_bank a, b;
  template <class V>
  void parameters(V&& visit) {
    visit("a", a);
    visit("b", b);
  }
};

/// S = 1 everywhere and ∇S[g, i, o] = v[unit] for every i: the importance of
/// each unit is exactly v[unit]. Units are numbered in visit order.
void set_importance(two_banks& m, const std::vector<double>& v) {
  std::size_t u = 0;
  merge::visit_compressed_matrices(m, [&](const std::string&, auto& mat) {
    const std::size_t sets = mat.weight_sets(), in = mat.in(), out = mat.out();
    for (std::size_t g = 0; g < sets; ++g)
      for (std::size_t o = 0; o < out; ++o, ++u)
        for (std::size_t i = 0; i < in; ++i) {
          const std::size_t at = (g * in + i) * out + o;
          mat.s().value()[at] = mat.alive()[g * out + o] ? 1.0 : 0.0;
          mat.s().grad()[at] = v[u];
        }
  });
}

}  // namespace

TEST_CASE("pruner: one global threshold across two banks", "[merge][prune]") {
  rng g(6);
  two_banks m{small_bank(g, 2, 4, 5, 2), small_bank(g, 2, 4, 5, 2)};
  // units: per bank w1 2·5 + w2 2·4 = 18, 36 in all; distinct importances, shuffled.
  std::vector<double> v(36);
  for (std::size_t u = 0; u < v.size(); ++u) v[u] = double((u * 23 + 5) % 36 + 1);
  set_importance(m, v);
  merge::pruner p({.total_steps = 6, .warmup_steps = 1, .final_ratio = 0.5});  // ρ(1) = 1, ρ(2) = 0.5
  auto r1 = p.step(m);
  REQUIRE(r1.target == 1.0);
  REQUIRE(r1.kept == 36);
  REQUIRE(r1.units == 36);
  REQUIRE(m.a.w1().unit_scores()[0] == Approx(0.15 * v[0]));  // EMA from 0
  auto r2 = p.step(m);
  REQUIRE(r2.step == 2);
  REQUIRE(r2.target == 0.5);
  REQUIRE(r2.kept == 18);
  REQUIRE(m.a.w1().unit_scores()[0] == Approx(0.85 * 0.15 * v[0] + 0.15 * v[0]));
  // Kept: exactly the 18 largest importances, wherever they are.
  std::vector<std::uint8_t> expect(36);
  for (std::size_t u = 0; u < 36; ++u) expect[u] = v[u] > 18.0;
  std::size_t u = 0;
  std::vector<std::size_t> kept_per_matrix;
  merge::visit_compressed_matrices(m, [&](const std::string&, auto& mat) {
    std::size_t kept = 0;
    for (std::size_t k = 0; k < mat.alive().size(); ++k, ++u) {
      REQUIRE(mat.alive()[k] == expect[u]);
      kept += expect[u];
      // a pruned unit's column of S is zero, a kept one untouched
      const std::size_t set = k / mat.out(), o = k % mat.out();
      for (std::size_t i = 0; i < mat.in(); ++i)
        REQUIRE(mat.s().value()[(set * mat.in() + i) * mat.out() + o] == (expect[u] ? 1.0 : 0.0));
    }
    kept_per_matrix.push_back(kept);
  });
  REQUIRE(r2.matrices.size() == 4);
  REQUIRE(r2.matrices[0].name == "a.w1");
  REQUIRE(r2.matrices[3].name == "b.w2");
  for (std::size_t i = 0; i < 4; ++i) REQUIRE(r2.matrices[i].kept == kept_per_matrix[i]);
  REQUIRE(r2.threshold == Approx(0.85 * 0.15 * 18.0 + 0.15 * 18.0));
  // The two banks do not keep half each: the threshold is global.
  REQUIRE(kept_per_matrix[0] + kept_per_matrix[1] != 9);

  SECTION("a pruned unit stays pruned even when its weights and gradients come back") {
    // unit with importance 1 (the lowest) gets S = 1 and the highest gradient again
    std::vector<double> w = v;
    const auto lowest = std::size_t(std::min_element(v.begin(), v.end()) - v.begin());
    w[lowest] = 1000.0;
    set_importance(m, w);
    merge::visit_compressed_matrices(m, [&](const std::string&, auto& mat) {
      for (std::size_t i = 0; i < mat.s().size(); ++i) mat.s().value()[i] = 1.0;  // the optimizer moved every weight
    });
    auto r3 = p.step(m);
    REQUIRE(r3.target == 0.5);
    REQUIRE(r3.kept == 18);
    std::size_t k = 0;
    merge::visit_compressed_matrices(m, [&](const std::string&, auto& mat) {
      for (std::size_t j = 0; j < mat.alive().size(); ++j, ++k) {
        REQUIRE(mat.alive()[j] == expect[k]);
        if (!expect[k]) {
          const std::size_t set = j / mat.out(), o = j % mat.out();
          for (std::size_t i = 0; i < mat.in(); ++i) REQUIRE(mat.s().value()[(set * mat.in() + i) * mat.out() + o] == 0.0);
        }
      }
    });
  }
  SECTION("a packed bank cannot be pruned") {
    m.b.pack();
    REQUIRE_THROWS_AS(p.step(m), value_error);
  }
}

namespace {

/// A merged float FFN layer compressed at rank 3, pruned for `steps` steps of
/// sum(y²) gradients (no optimizer: values change by pruning only) to a 0.3 keep ratio.
auto pruned_layer(std::uint64_t seed, std::size_t steps = 8) {
  auto comp = merge::compress(merged_layer<ffn, float>(seed), 3);
  rng g(seed + 100);
  merge::pruner p({.total_steps = steps, .warmup_steps = 1, .final_ratio = 0.3});
  merge::prune_report last;
  for (std::size_t s = 0; s < steps; ++s) {
    visit_parameters(comp, [](const std::string&, auto& param) { param.zero_grad(); });
    tape t;
    auto y = comp(t.input(normal<float>(g, shape<dyn, D>{Tok})));
    t.backward(sum(y * y));
    last = p.step(comp);
  }
  REQUIRE(last.target == Approx(0.3));
  REQUIRE(last.kept == std::size_t(std::ceil(0.3 * double(last.units))));
  return comp;
}

}  // namespace

TEST_CASE("packed inference equals unpacked after pruning", "[merge][pack]") {
  auto comp = pruned_layer(30);
  auto& bank = comp.experts();
  rng g(31);
  const auto x = normal<float>(g, shape<dyn, D>{40});
  const auto before = run(comp, x);
  const std::size_t params_before = bank.parameter_count(), bytes_before = bank.bytes();
  const double madds_before = bank.multiply_adds_per_row();
  std::vector<std::size_t> alive;
  bank.sparse_matrices([&](std::string_view, auto& m) {
    std::size_t k = 0;
    for (auto a : m.alive()) k += a;
    alive.push_back(k);
  });
  bank.pack();
  REQUIRE(bank.packed());
  REQUIRE(max_diff(run(comp, x), before) < 1e-5);
  std::size_t i = 0, packed_units = 0;
  bank.sparse_matrices([&](std::string_view, auto& m) {
    REQUIRE(m.s_packed().extent(1) == alive[i++]);
    REQUIRE(m.s_units().size() == m.s_packed().extent(1));
    const auto per_set = m.kept_per_set();
    REQUIRE(std::accumulate(per_set.begin(), per_set.end(), std::size_t{0}) == m.s_packed().extent(1));
    packed_units += m.s_packed().extent(1);
  });
  // Memory and compute drop with the pruned units of S.
  REQUIRE(packed_units < 3 * (F + D));
  std::size_t dense_s = 3 * (D * F + F * D), packed_s = 0;
  bank.sparse_matrices([&](std::string_view, auto& m) { packed_s += m.s_packed().size(); });
  REQUIRE(bank.parameter_count() == params_before - dense_s + packed_s);
  REQUIRE(bank.bytes() < bytes_before);
  REQUIRE(bank.multiply_adds_per_row() < madds_before);
  REQUIRE(parameter_names(bank) ==
          std::vector<std::string>{"w1.l", "w1.r", "w1.s_packed", "b1", "w2.l", "w2.r", "w2.s_packed", "b2"});
  REQUIRE_THROWS_AS(bank.share(moe::slot_map<cpu>(std::vector<index_t>{0, 0, 1, 2})), value_error);
  bank.pack();  // again: a no-op
  REQUIRE(max_diff(run(comp, x), before) < 1e-5);
}

TEST_CASE("a compressed, packed, merged checkpoint reloads at its size", "[merge][checkpoint]") {
  moekit::testing::temp_dir dir("compress");
  auto comp = pruned_layer(40);
  io::save_safetensors(dir / "unpacked.safetensors", comp);
  comp.experts().pack();
  io::save_safetensors(dir / "packed.safetensors", comp);
  REQUIRE(std::filesystem::file_size(dir / "packed.safetensors") <
          std::filesystem::file_size(dir / "unpacked.safetensors"));

  using layer_t = decltype(comp);
  rng g(41);
  const auto fresh_model = [&] {  // other weights, rank 2, one weight set per slot, unpacked
    return layer_t(moe::top_k_router<D, E, 2, float>(g), layer_t::bank_type(g, E, D, F, 2));
  };
  const auto x = normal<float>(g, shape<dyn, D>{30});
  const auto want = run(comp, x);

  auto fresh = fresh_model();
  REQUIRE_THROWS_AS(io::load_safetensors(dir / "packed.safetensors", fresh), io_error);  // sizes differ
  merge::load_compressed_layout(dir / "packed.safetensors", fresh);
  REQUIRE(fresh.experts().weight_sets() == 3);
  REQUIRE(fresh.experts().packed());
  REQUIRE(fresh.experts().w1().rank() == 3);
  io::load_safetensors(dir / "packed.safetensors", fresh);
  REQUIRE(max_diff(run(fresh, x), want) == 0.0);
  REQUIRE(fresh.experts().parameter_count() == comp.experts().parameter_count());
  REQUIRE(fresh.experts().w1().kept_per_set() == comp.experts().w1().kept_per_set());

  SECTION("the unpacked file loads unpacked, into a model that was packed") {
    merge::load_compressed_layout(dir / "unpacked.safetensors", fresh);
    REQUIRE_FALSE(fresh.experts().packed());
    io::load_safetensors(dir / "unpacked.safetensors", fresh);
    REQUIRE(max_diff(run(fresh, x), want) < 1e-5);
  }
  SECTION("a training checkpoint (io::save_checkpoint) carries the packed layout too") {
    optim::sgd<float> opt(comp, {.lr = 0.1, .momentum = 0.9});
    io::save_checkpoint(dir / "run.safetensors", comp, opt, {{"step", "8"}});
    auto other = fresh_model();
    merge::load_compressed_layout(dir / "run.safetensors", other);
    optim::sgd<float> opt2(other, {.lr = 0.1, .momentum = 0.9});  // built on the resized parameters
    REQUIRE(io::load_checkpoint(dir / "run.safetensors", other, opt2).at("step") == "8");
    REQUIRE(max_diff(run(other, x), want) == 0.0);
  }
  SECTION("a file without the compressed matrices: io_error naming the tensor") {
    auto plain = merged_layer<ffn, float>(42);
    io::save_safetensors(dir / "plain.safetensors", plain);
    auto other = fresh_model();
    REQUIRE_THROWS_WITH(merge::load_compressed_layout(dir / "plain.safetensors", other),
                        Catch::Contains("experts.w1.l") && Catch::Contains("missing"));
  }
}

TEST_CASE("compress, prune and pack on a device backend (emulated) as on the host", "[merge][emulated]") {
  using dev = emulated_device;
  auto host = merge::compress(merged_layer<ffn, float>(50), 3);
  auto device = merge::compress(merged_layer<ffn, float, dev>(50), 3);
  rng g(51);
  const auto x = normal<float>(g, shape<dyn, D>{20});
  REQUIRE(max_diff(run(device, x), run(host, x)) < 1e-5);
  auto prune_some = [](auto& bank) {
    bank.sparse_matrices([](std::string_view, auto& m) {
      for (std::size_t u = 0; u < m.alive().size(); ++u) m.alive()[u] = u % 3 == 1;
      m.apply_mask();
    });
  };
  prune_some(host.experts());
  prune_some(device.experts());
  const auto pruned = run(host, x);
  REQUIRE(max_diff(run(device, x), pruned) < 1e-5);
  host.experts().pack();
  device.experts().pack();
  REQUIRE(device.experts().w2().s_packed().extent(1) == host.experts().w2().s_packed().extent(1));
  REQUIRE(max_diff(run(device, x), pruned) < 1e-5);
  // and the packed backward: the same gradient for the packed block
  auto grad_of_packed = [&](auto& layer) {
    using B = typename backend_of<std::remove_cvref_t<decltype(layer)>>::type;
    tape t;
    auto y = layer(t.input(x.template to<B>()));
    t.backward(sum(y * y));
    return layer.experts().w1().s_packed().grad().template to<cpu>().clone();
  };
  REQUIRE(max_diff(grad_of_packed(device), grad_of_packed(host)) < 1e-4);
}
