// Forward tests of the fused MoE hot-path ops against their unfused
// compositions, the accuracy of the vectorisable float activations against
// double-precision library functions, thread-count independence, and errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include <moekit.hpp>
#include <moekit/autograd/ops/combine.hpp>
#include <moekit/autograd/ops/grouped.hpp>
#include <moekit/moe.hpp>

using namespace moekit;

namespace {

offsets_tensor offsets_of(std::initializer_list<index_t> v) { return from_values<index_t>(shape<dyn>{v.size()}, v); }

template <class S1, class S2>
double max_abs_diff(const tensor<float, S1>& a, const tensor<float, S2>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

double gelu_ref(double x) { return 0.5 * x * std::erfc(-x / std::numbers::sqrt2); }
double gelu_grad_ref(double x) {
  return 0.5 * std::erfc(-x / std::numbers::sqrt2) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi);
}
double silu_ref(double x) { return x / (1 + std::exp(-x)); }
double silu_grad_ref(double x) {
  const double s = 1 / (1 + std::exp(-x));
  return s * (1 + x * (1 - s));
}

}  // namespace

TEST_CASE("fast activations: float accuracy against double references", "[tensor][activation][fast]") {
  // Relative error where the value is not tiny, absolute error in the far tails.
  double gelu_rel = 0, gelu_abs = 0, gelu_grad = 0, silu_rel = 0, silu_grad = 0, exp_rel = 0;
  for (double xd = -20; xd <= 20; xd += 1.0 / 1024) {
    const float x = static_cast<float>(xd);
    const double X = x;  // the float input, exactly
    const double g = gelu_ref(X), s = silu_ref(X);
    const double dg = std::fabs(fn::gelu_fast{}(x) - g);
    if (std::fabs(X) <= 9) gelu_rel = std::max(gelu_rel, dg / std::max(std::fabs(g), 1e-30));
    gelu_abs = std::max(gelu_abs, dg);
    gelu_grad = std::max(gelu_grad, std::fabs(fn::gelu_fast_backward{}(x, 1.0f) - gelu_grad_ref(X)));
    silu_rel = std::max(silu_rel, std::fabs(fn::silu_fast{}(x) - s) / std::max(std::fabs(s), 1e-30));
    silu_grad = std::max(silu_grad, std::fabs(fn::silu_fast_backward{}(x, 1.0f) - silu_grad_ref(X)));
    const float e = static_cast<float>(4 * xd);  // [-80, 80]
    exp_rel = std::max(exp_rel, std::fabs(detail::exp_approx(e) - std::exp(double(e))) / std::exp(double(e)));
  }
  INFO("gelu rel " << gelu_rel << ", gelu abs " << gelu_abs << ", gelu' " << gelu_grad << ", silu rel " << silu_rel
                   << ", silu' " << silu_grad << ", exp rel " << exp_rel);
  CHECK(gelu_rel < 1e-6);   // |x| <= 9: relative accuracy holds deep into the negative tail
  CHECK(gelu_abs < 1e-6);   // everywhere (values of size 20 are near 1 ulp)
  CHECK(gelu_grad < 1e-6);
  CHECK(silu_rel < 2e-6);   // also in the tail x -> -20, where 1 - σ would cancel
  CHECK(silu_grad < 1e-6);
  CHECK(exp_rel < 5e-7);
  // Limits: no overflow to inf or nan far out.
  CHECK(fn::gelu_fast{}(-200.0f) == Approx(0.0f).margin(1e-30));
  CHECK(fn::gelu_fast{}(200.0f) == 200.0f);
  CHECK(std::isfinite(fn::silu_fast{}(-1000.0f)));
  CHECK(fn::silu_fast{}(1000.0f) == 1000.0f);
  // Double keeps the library functions.
  CHECK(fn::gelu_fast{}(0.7) == Approx(gelu_ref(0.7)).epsilon(1e-15));
}

TEST_CASE("grouped_bias_activation equals act(add_grouped_rows(h, b))", "[tensor][grouped][fused]") {
  rng g(21);
  const auto offsets = offsets_of({0, 3, 3, 7, 10});  // one empty group
  auto h = normal<float>(g, shape<dyn, dyn>{10, 37});
  auto b = normal<float>(g, shape<4, 37>{});
  auto dy = normal<float>(g, shape<dyn, dyn>{10, 37});

  auto fused = grouped_bias_activation(h, b, offsets, fn::gelu_fast{});
  auto z = add_grouped_rows(h, b, offsets);
  CHECK(max_abs_diff(fused, gelu(z)) < 2e-6);  // the fast GELU against std::erf

  auto [dz, db] = grouped_bias_activation_backward(h, b, dy, offsets, fn::gelu_fast_backward{});
  auto dz_ref = zip("ref", z, dy, fn::gelu_backward{});
  CHECK(max_abs_diff(dz, dz_ref) < 2e-6);
  auto db_ref = grouped_column_sums(dz_ref, offsets, b.shape());
  CHECK(max_abs_diff(db, db_ref) < 1e-5);
  for (std::size_t c = 0; c < 37; ++c) CHECK(db(1, c) == 0.0f);  // the empty group

  // Without db, dz is the same.
  auto [dz2, db2] = grouped_bias_activation_backward(h, b, dy, offsets, fn::gelu_fast_backward{}, false);
  CHECK(max_abs_diff(dz, dz2) == 0.0);
  CHECK(!db2.defined());

  // relu: exact, so equal to the composition bit for bit.
  CHECK(max_abs_diff(grouped_bias_activation(h, b, offsets, fn::relu{}), relu(z)) == 0.0);
}

TEST_CASE("grouped_bias_activation: results do not depend on the thread count", "[tensor][grouped][fused]") {
  rng g(22);
  const auto offsets = offsets_of({0, 200, 210, 600});
  auto h = normal<float>(g, shape<dyn, dyn>{600, 300});
  auto b = normal<float>(g, shape<dyn, dyn>{3, 300});
  auto dy = normal<float>(g, shape<dyn, dyn>{600, 300});
  const int saved = num_threads();
  set_num_threads(1);
  auto [dz1, db1] = grouped_bias_activation_backward(h, b, dy, offsets, fn::silu_fast_backward{});
  set_num_threads(2);
  auto [dz2, db2] = grouped_bias_activation_backward(h, b, dy, offsets, fn::silu_fast_backward{});
  set_num_threads(saved);
  CHECK(max_abs_diff(dz1, dz2) == 0.0);
  CHECK(max_abs_diff(db1, db2) == 0.0);
}

TEST_CASE("grouped_bias_activation: autograd matches the unfused ops", "[autograd][grouped][fused]") {
  rng g(23);
  const auto offsets = offsets_of({0, 4, 9});
  auto h0 = normal<float>(g, shape<dyn, dyn>{9, 6});
  auto b0 = normal<float>(g, shape<2, 6>{});
  auto r = normal<float>(g, shape<dyn, dyn>{9, 6});
  auto run = [&](bool fused) {
    tape t;
    auto h = t.variable(h0.clone());
    auto b = t.variable(b0.clone());
    auto y = fused ? grouped_bias_activation(h, b, offsets, fn::silu_fast{}, fn::silu_fast_backward{})
                   : silu(add_grouped_rows(h, b, offsets));
    t.backward(sum(y * t.input(r)));
    return std::tuple{y.value().clone(), h.grad().clone(), b.grad().clone()};
  };
  auto [y1, dh1, db1] = run(true);
  auto [y2, dh2, db2] = run(false);
  CHECK(max_abs_diff(y1, y2) < 2e-6);
  CHECK(max_abs_diff(dh1, dh2) < 2e-6);
  CHECK(max_abs_diff(db1, db2) < 1e-5);
}

TEST_CASE("weighted_scatter_add_rows equals scatter_add_rows(mul_cols(src, scale))", "[autograd][combine][fused]") {
  // By hand: rows 0 and 2 of src go to output row 1, row 1 to output row 0.
  {
    tape t;
    auto src = t.variable(from_values<float>(shape<3, 2>{}, {1, 2, 3, 4, 5, 6}));
    auto w = t.variable(from_values<float>(shape<3>{}, {2, -1, 0.5f}));
    const auto idx = from_values<index_t>(shape<3>{}, {1, 0, 1});
    auto out = weighted_scatter_add_rows(src, idx, 3, w);  // (3, 2)
    const float want[] = {-3, -4, 2 + 2.5f, 4 + 3, 0, 0};
    for (std::size_t i = 0; i < 6; ++i) CHECK(out.value()[i] == want[i]);
    t.backward(sum(out * t.input(from_values<float>(shape<dyn, 2>{3}, {1, 10, 100, 1000, 7, 7}))));
    // d src[i] = w[i] · dy[idx[i]]; d w[i] = <src[i], dy[idx[i]]>.
    const float dsrc[] = {200, 2000, -1, -10, 50, 500};
    for (std::size_t i = 0; i < 6; ++i) CHECK(src.grad()[i] == dsrc[i]);
    CHECK(w.grad()[0] == 1 * 100 + 2 * 1000);
    CHECK(w.grad()[1] == 3 * 1 + 4 * 10);
    CHECK(w.grad()[2] == 5 * 100 + 6 * 1000);
  }
  // Random, with collisions, against the composition of the unfused ops.
  rng g(24);
  const std::size_t m = 200, d = 33, rows = 50;
  auto idx = tensor<index_t, shape<dyn>>(shape<dyn>{m});
  for (std::size_t i = 0; i < m; ++i) idx[i] = static_cast<index_t>((i * 7919) % rows);
  auto src0 = normal<float>(g, shape<dyn, dyn>{m, d});
  auto w0 = normal<float>(g, shape<dyn>{m});
  auto r = normal<float>(g, shape<dyn, dyn>{rows, d});
  auto run = [&](bool fused) {
    tape t;
    auto src = t.variable(src0.clone());
    auto w = t.variable(w0.clone());
    auto out = fused ? weighted_scatter_add_rows(src, idx, rows, w) : scatter_add_rows(mul_cols(src, w), idx, rows);
    t.backward(sum(out * t.input(r)));
    return std::tuple{out.value().clone(), src.grad().clone(), w.grad().clone()};
  };
  auto [o1, ds1, dw1] = run(true);
  auto [o2, ds2, dw2] = run(false);
  CHECK(max_abs_diff(o1, o2) < 1e-5);
  CHECK(max_abs_diff(ds1, ds2) == 0.0);  // both are w[i] · dy[idx[i]]
  CHECK(max_abs_diff(dw1, dw2) < 1e-5);
}

TEST_CASE("row_dots equals row_sums of the product, on the CPU and the emulated device", "[tensor][combine][fused]") {
  rng g(26);
  const auto a = normal<float>(g, shape<dyn, dyn>{37, 64}), b = normal<float>(g, shape<dyn, dyn>{37, 64});
  const auto dots = row_dots(a, b, shape<dyn>{37});
  const auto sums = row_sums(a * b, shape<dyn>{37});
  CHECK(max_abs_diff(dots, sums) < 1e-5);  // the same terms, summed in another order where vectorised
  const auto on_device = row_dots(a.to<emulated_device>(), b.to<emulated_device>(), shape<dyn>{37}).to<cpu>();
  CHECK(max_abs_diff(on_device, dots) == 0.0);
  const auto c = normal<float>(g, shape<dyn, dyn>{37, 63});
  REQUIRE_THROWS_AS(row_dots(a, c, shape<dyn>{37}), shape_error);
  REQUIRE_THROWS_WITH(row_dots(a, c, shape<dyn>{37}), Catch::Contains("row_dots") && Catch::Contains("(37, 63)"));
}

TEST_CASE("moe::combine and moe::dispatch are the layer's permutation", "[moe][combine]") {
  rng g(25);
  moe::routing<float> plan;
  plan.tokens = 4, plan.experts = 2;
  plan.token = from_values<index_t>(shape<dyn>{5}, {3, 0, 3, 1, 2});
  tape t;
  plan.gate = t.input(from_values<float>(shape<dyn>{5}, {0.5f, 1, 0.25f, 2, -1}));
  auto x = t.input(normal<float>(g, shape<dyn, 3>{4}));
  auto rows = moe::dispatch(x, plan);  // (5, 3)
  for (std::size_t a = 0; a < 5; ++a)
    for (std::size_t c = 0; c < 3; ++c) CHECK(rows.value()(a, c) == x.value()(std::size_t(plan.token[a]), c));
  auto out = moe::combine(rows, plan, 4);  // (4, 3): token 3 gets (0.5 + 0.25)·x[3]
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(out.value()(3, c) == Approx(0.75f * x.value()(3, c)));
    CHECK(out.value()(0, c) == x.value()(0, c));
    CHECK(out.value()(1, c) == 2 * x.value()(1, c));
    CHECK(out.value()(2, c) == -x.value()(2, c));
  }
}

TEST_CASE("fused MoE ops: errors name the op and the shapes", "[grouped][combine][errors]") {
  rng g(26);
  tape t;
  auto src = t.variable(normal<float>(g, shape<dyn, dyn>{3, 2}));
  auto w = t.variable(normal<float>(g, shape<dyn>{3}));
  auto w_short = t.variable(normal<float>(g, shape<dyn>{2}));
  const auto bad = from_values<index_t>(shape<dyn>{3}, {0, 5, 1});
  const auto neg = from_values<index_t>(shape<dyn>{3}, {0, -1, 1});
  const auto ok = from_values<index_t>(shape<dyn>{3}, {0, 1, 1});
  REQUIRE_THROWS_AS(weighted_scatter_add_rows(src, bad, 4, w), value_error);
  REQUIRE_THROWS_WITH(weighted_scatter_add_rows(src, bad, 4, w), Catch::Contains("weighted_scatter_add_rows") &&
                                                                       Catch::Contains("index 5") &&
                                                                       Catch::Contains("[0, 4)"));
  REQUIRE_THROWS_AS(weighted_scatter_add_rows(src, neg, 4, w), value_error);
  REQUIRE_THROWS_AS(weighted_scatter_add_rows(src, ok, 4, w_short), shape_error);
  REQUIRE_THROWS_WITH(weighted_scatter_add_rows(src, ok, 4, w_short),
                      Catch::Contains("weighted_scatter_add_rows") && Catch::Contains("(2)"));

  auto h = normal<float>(g, shape<dyn, dyn>{5, 4});
  auto b = normal<float>(g, shape<dyn, dyn>{2, 4});
  auto b_wide = normal<float>(g, shape<dyn, dyn>{2, 3});
  REQUIRE_THROWS_AS(grouped_bias_activation(h, b_wide, offsets_of({0, 2, 5}), fn::relu{}), shape_error);
  REQUIRE_THROWS_WITH(grouped_bias_activation(h, b_wide, offsets_of({0, 2, 5}), fn::relu{}),
                      Catch::Contains("grouped_bias_activation") && Catch::Contains("(2, 3)"));
  REQUIRE_THROWS_AS(grouped_bias_activation(h, b, offsets_of({0, 2, 4}), fn::relu{}), value_error);
  REQUIRE_THROWS_WITH(grouped_bias_activation(h, b, offsets_of({0, 3, 2}), fn::relu{}),
                      Catch::Contains("grouped_bias_activation"));
  REQUIRE_THROWS_WITH(grouped_bias_activation(h, b, offsets_of({0, 5}), fn::relu{}),
                      Catch::Contains("grouped_bias_activation") && Catch::Contains("groups"));
  auto dy_bad = normal<float>(g, shape<dyn, dyn>{4, 4});
  REQUIRE_THROWS_AS(grouped_bias_activation_backward(h, b, dy_bad, offsets_of({0, 2, 5}), fn::relu_backward{}),
                    shape_error);
}

TEST_CASE("grouped_matmul_activation equals grouped_matmul then grouped_bias_activation, values and gradients",
          "[tensor][grouped][gemm]") {
  rng g(28);
  const auto offsets = offsets_of({0, 3, 3, 90, 161});  // a few-row group (unpacked), an empty one, two packed
  const std::size_t rows = 161, k = 70, n = 45;
  auto x = normal<float>(g, shape<dyn, dyn>{rows, k});
  auto w = normal<float>(g, shape<dyn, dyn, dyn>{4, k, n});
  auto b = normal<float>(g, shape<dyn, dyn>{4, n});
  auto G = normal<float>(g, shape<dyn, dyn>{rows, n});
  auto run = [&](bool fused) {
    tape t;
    auto xv = t.variable(x);
    auto wv = t.variable(w);
    auto bv = t.variable(b);
    auto y = fused ? grouped_matmul_activation(xv, wv, bv, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{})
                   : grouped_bias_activation(grouped_matmul(xv, wv, offsets), bv, offsets, fn::gelu_fast{},
                                             fn::gelu_fast_backward{});
    t.backward(sum(y * t.input(G)));
    return std::array{y.value().clone().reshape(shape<dyn>{rows * n}), xv.grad().clone().reshape(shape<dyn>{rows * k}),
                      wv.grad().clone().reshape(shape<dyn>{4 * k * n}), bv.grad().clone().reshape(shape<dyn>{4 * n})};
  };
  const auto fused = run(true), plain = run(false);
  CHECK(max_abs_diff(fused[0], plain[0]) == 0.0);  // the same products, bias and activation: the same bits
  CHECK(max_abs_diff(fused[1], plain[1]) < 1e-4);
  CHECK(max_abs_diff(fused[2], plain[2]) < 1e-3);
  CHECK(max_abs_diff(fused[3], plain[3]) < 1e-4);
  auto b_bad = normal<float>(g, shape<dyn, dyn>{4, n + 1});
  tape t;
  REQUIRE_THROWS_AS(grouped_matmul_activation(t.variable(x), t.variable(w), t.variable(b_bad), offsets, fn::relu{},
                                              fn::relu_backward{}),
                    shape_error);
}

TEST_CASE("grouped_ffn equals grouped_matmul_activation then grouped_matmul: the same bits, values and gradients",
          "[tensor][grouped][gemm]") {
  rng g(29);
  const auto offsets = offsets_of({0, 3, 3, 90, 161});  // a few-row group (unpacked), an empty one, two packed
  const std::size_t rows = 161, k = 70, f = 300, n = 45;  // f: two column slabs of the hidden gradient's GEMM
  auto x = normal<float>(g, shape<dyn, dyn>{rows, k});
  auto w1 = normal<float>(g, shape<dyn, dyn, dyn>{4, k, f});
  auto b1 = normal<float>(g, shape<dyn, dyn>{4, f});
  auto w2 = normal<float>(g, shape<dyn, dyn, dyn>{4, f, n});
  auto G = normal<float>(g, shape<dyn, dyn>{rows, n});
  auto run = [&](bool fused) {
    tape t;
    auto xv = t.variable(x);
    auto w1v = t.variable(w1), w2v = t.variable(w2);
    auto b1v = t.variable(b1);
    auto y = fused ? grouped_ffn(xv, w1v, b1v, w2v, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{})
                   : grouped_matmul(grouped_matmul_activation(xv, w1v, b1v, offsets, fn::gelu_fast{},
                                                              fn::gelu_fast_backward{}),
                                    w2v, offsets);
    t.backward(y, G);
    return std::array{y.value().clone().reshape(shape<dyn>{rows * n}), xv.grad().clone().reshape(shape<dyn>{rows * k}),
                      w1v.grad().clone().reshape(shape<dyn>{4 * k * f}), b1v.grad().clone().reshape(shape<dyn>{4 * f}),
                      w2v.grad().clone().reshape(shape<dyn>{4 * f * n})};
  };
  const auto fused = run(true), plain = run(false);
  for (std::size_t i = 0; i < fused.size(); ++i) {
    CAPTURE(i);  // out, dx, dw1, db1, dw2: df in the GEMM's output pass gives what a pass of its own gives
    CHECK(max_abs_diff(fused[i], plain[i]) == 0.0);
  }
  tape t;
  auto w2_bad = normal<float>(g, shape<dyn, dyn, dyn>{4, f + 1, n});
  REQUIRE_THROWS_AS(grouped_ffn(t.variable(x), t.variable(w1), t.variable(w2_bad), offsets, fn::relu{},
                                fn::relu_backward{}),
                    shape_error);
}

namespace {
/// gelu_fast_backward without its slope: grouped ops given it keep z and apply df(z, dy) in the backward.
struct gelu_backward_from_z {
  template <class T> T operator()(T x, T dy) const { return fn::gelu_fast_backward{}(x, dy); }
};
static_assert(fn::has_slope<fn::gelu_fast_backward> && fn::has_slope<fn::silu_fast_backward>);
static_assert(!fn::has_slope<gelu_backward_from_z> && !fn::has_slope<fn::relu_backward>);
}  // namespace

TEST_CASE("grouped ops that keep f'(z) give the bits of those that keep z, with and without a backward",
          "[tensor][grouped][fused]") {
  rng g(29);
  const auto offsets = offsets_of({0, 3, 3, 90, 161});
  const std::size_t rows = 161, k = 70, f = 300, n = 45;
  auto x = normal<float>(g, shape<dyn, dyn>{rows, k}, 0.0f, 2.0f);  // spread: GELU's tails as well as its bend
  auto w1 = normal<float>(g, shape<dyn, dyn, dyn>{4, k, f});
  auto b1 = normal<float>(g, shape<dyn, dyn>{4, f});
  auto w2 = normal<float>(g, shape<dyn, dyn, dyn>{4, f, n});
  auto G = normal<float>(g, shape<dyn, dyn>{rows, n});
  auto run = [&](auto df, bool ffn) {
    tape t;
    auto xv = t.variable(x);
    auto w1v = t.variable(w1), w2v = t.variable(w2);
    auto b1v = t.variable(b1);
    auto y = ffn ? grouped_ffn(xv, w1v, b1v, w2v, offsets, fn::gelu_fast{}, df)
                 : grouped_matmul(grouped_matmul_activation(xv, w1v, b1v, offsets, fn::gelu_fast{}, df), w2v, offsets);
    t.backward(y, G);
    return std::array{y.value().clone().reshape(shape<dyn>{rows * n}), xv.grad().clone().reshape(shape<dyn>{rows * k}),
                      w1v.grad().clone().reshape(shape<dyn>{4 * k * f}), b1v.grad().clone().reshape(shape<dyn>{4 * f}),
                      w2v.grad().clone().reshape(shape<dyn>{4 * f * n})};
  };
  for (const bool ffn : {true, false}) {
    CAPTURE(ffn);
    const auto kept_slope = run(fn::gelu_fast_backward{}, ffn), kept_z = run(gelu_backward_from_z{}, ffn);
    for (std::size_t i = 0; i < kept_slope.size(); ++i) {
      CAPTURE(i);  // out, dx, dw1, db1, dw2
      CHECK(max_abs_diff(kept_slope[i], kept_z[i]) == 0.0);
    }
    // With no backward to run the forward keeps z (no slope computed), and its output is the same.
    no_grad guard;
    tape t;
    auto y = ffn ? grouped_ffn(t.variable(x), t.variable(w1), t.variable(b1), t.variable(w2), offsets, fn::gelu_fast{},
                               fn::gelu_fast_backward{})
                 : grouped_matmul(grouped_matmul_activation(t.variable(x), t.variable(w1), t.variable(b1), offsets,
                                                            fn::gelu_fast{}, fn::gelu_fast_backward{}),
                                  t.variable(w2), offsets);
    CHECK(max_abs_diff(y.value().clone().reshape(shape<dyn>{rows * n}), kept_slope[0]) == 0.0);
  }
  // The tensor op's kept f'(z) is the backward functor's slope, element by element.
  const fn::slope_of<fn::gelu_fast_backward> slope{};
  auto [s, h] = grouped_matmul_activation(x, w1, &b1, offsets, fn::gelu_fast{}, slope);
  auto [z, h2] = grouped_matmul_activation(x, w1, &b1, offsets, fn::gelu_fast{});
  CHECK(max_abs_diff(h, h2) == 0.0);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < z.size(); ++i) differ += s.data()[i] != fn::gelu_fast_backward{}.slope(z.data()[i]);
  CHECK(differ == 0);
}

TEST_CASE("an activation op that keeps f'(x) gives the bits of one that keeps x", "[autograd][activation][fast]") {
  rng g(30);
  // Over 300 K elements the CPU loops fork: each thread's share runs the same loop.
  for (const std::size_t n : {std::size_t{1000}, std::size_t{300000}}) {
    CAPTURE(n);
    auto x = normal<float>(g, shape<dyn, dyn>{n / 100, 100}, 0.0f, 3.0f);
    auto G = normal<float>(g, shape<dyn, dyn>{n / 100, 100});
    auto run = [&](auto df) {
      tape t;
      auto xv = t.variable(x);
      auto y = detail::unary_from_input("gelu", xv, fn::gelu_fast{}, df);
      t.backward(y, G);
      return std::array{y.value().clone(), xv.grad().clone()};
    };
    const auto kept_slope = run(fn::gelu_fast_backward{}), kept_x = run(gelu_backward_from_z{});
    CHECK(max_abs_diff(kept_slope[0], kept_x[0]) == 0.0);
    CHECK(max_abs_diff(kept_slope[1], kept_x[1]) == 0.0);
    // And both equal dy · f'(x) element by element.
    std::size_t differ = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
      differ += kept_slope[1].data()[i] != G.data()[i] * fn::gelu_fast_backward{}.slope(x.data()[i]);
    CHECK(differ == 0);
  }
}

TEST_CASE("grouped GEMMs equal per-group matmuls at odd sizes", "[tensor][grouped][gemm]") {
  // n not a multiple of any panel width, an empty group, groups across the 96-row blocks.
  rng g(27);
  const std::size_t k = 256, n = 136;  // n not a multiple of the tile width
  const auto offsets = offsets_of({0, 50, 50, 170, 230});  // 50, 0, 120 and 60 rows
  const std::size_t rows = 230, groups = 4;
  auto x = normal<float>(g, shape<dyn, dyn>{rows, k});
  auto w = normal<float>(g, shape<dyn, dyn, dyn>{groups, k, n});
  auto wt = normal<float>(g, shape<dyn, dyn, dyn>{groups, n, k});  // read transposed
  auto dy = normal<float>(g, shape<dyn, dyn>{rows, n});
  const int saved = num_threads();
  set_num_threads(1);
  auto y = grouped_matmul(x, w, offsets);            // (rows, n)
  auto yt = grouped_matmul<true>(x, wt, offsets);    // (rows, n)
  auto dw = grouped_matmul_reduce(x, dy, offsets, w.shape());  // (groups, k, n)
  set_num_threads(saved);
  double err = 0, err_t = 0, err_w = 0;
  for (std::size_t grp = 0; grp < groups; ++grp) {
    const auto lo = std::size_t(offsets[grp]), hi = std::size_t(offsets[grp + 1]);
    for (std::size_t r = lo; r < hi; ++r)
      for (std::size_t c = 0; c < n; ++c) {
        double s = 0, st = 0;
        for (std::size_t i = 0; i < k; ++i) {
          s += double(x(r, i)) * double(w(grp, i, c));
          st += double(x(r, i)) * double(wt(grp, c, i));
        }
        err = std::max(err, std::fabs(s - y(r, c)));
        err_t = std::max(err_t, std::fabs(st - yt(r, c)));
      }
    for (std::size_t i = 0; i < k; i += 17)
      for (std::size_t c = 0; c < n; ++c) {
        double s = 0;
        for (std::size_t r = lo; r < hi; ++r) s += double(x(r, i)) * double(dy(r, c));
        err_w = std::max(err_w, std::fabs(s - dw(grp, i, c)));
      }
  }
  CHECK(err < 1e-3);  // sums of 256 products of N(0, 1) values, in float
  CHECK(err_t < 1e-3);
  CHECK(err_w < 1e-3);
  float empty_max = 0;  // the empty group's gradient
  for (std::size_t i = 0; i < k * n; ++i) empty_max = std::max(empty_max, std::fabs(dw.data()[k * n + i]));
  CHECK(empty_max == 0.0f);
}
