// Gradient checks (double, central differences) for every loss and every
// reduction: cross_entropy (plain, smoothed, with ignored rows), MixUp, soft
// targets, nll, both kl_div forms (with temperatures, teacher gradients), mse.
// Labels and targets are constants captured by the lambdas.
#include <catch2/catch.hpp>

#include <moekit.hpp>
#include <moekit/autograd/ops/loss.hpp>

#include "check.hpp"

using namespace moekit;

namespace {

/// Runs f.template operator()<R>() for every reduction.
template <class F>
void for_each_reduction(F f) {
  SECTION("mean") { f.template operator()<reduction::mean>(); }
  SECTION("sum") { f.template operator()<reduction::sum>(); }
  SECTION("none") { f.template operator()<reduction::none>(); }
}

tensor<index_t, shape<dyn>> labels_of(std::initializer_list<index_t> y) {
  return from_values<index_t>(shape<dyn>{y.size()}, y);
}

/// Positive (N, C) weights normalised per row: class probabilities.
template <class S>
tensor<double, S> probs(rng& g, const S& s) {
  auto p = uniform<double>(g, s, 0.1, 1.0);
  for (std::size_t i = 0; i < s.extent(0); ++i) {
    double z = 0;
    for (std::size_t c = 0; c < s.extent(1); ++c) z += p(i, c);
    for (std::size_t c = 0; c < s.extent(1); ++c) p(i, c) /= z;
  }
  return p;
}

}  // namespace

TEST_CASE("gradcheck: cross_entropy with labels", "[gradcheck][loss]") {
  rng g(21);
  auto x = normal<double>(g, shape<dyn, 5>{6});
  auto y = labels_of({0, 4, -100, 2, 2, -100});
  for_each_reduction([&]<reduction R>() {
    for (double eps : {0.0, 0.15}) {
      INFO("label_smoothing " << eps);
      REQUIRE_GRADIENTS([&](auto l) { return cross_entropy<R>(l, y, {.label_smoothing = eps}); }, x);
    }
    // A custom ignore_index, and every row ignored (the gradient is zero).
    REQUIRE_GRADIENTS([&](auto l) { return cross_entropy<R>(l, labels_of({0, 2, 1, 2, 4, 3}), {.ignore_index = 2}); },
                     x);
    REQUIRE_GRADIENTS([&](auto l) { return cross_entropy<R>(l, labels_of({-100, -100, -100, -100, -100, -100}),
                                                           {.label_smoothing = 0.1}); }, x);
  });
}

TEST_CASE("gradcheck: cross_entropy with static shapes", "[gradcheck][loss]") {
  rng g(22);
  auto x = normal<double>(g, shape<3, 4>{}, 0.0, 2.0);
  auto y = from_values<index_t>(shape<3>{}, {3, 0, 1});
  for_each_reduction([&]<reduction R>() {
    REQUIRE_GRADIENTS([&](auto l) { return cross_entropy<R>(l, y, {.label_smoothing = 0.3}); }, x);
  });
}

TEST_CASE("gradcheck: cross_entropy_mix", "[gradcheck][loss]") {
  rng g(23);
  auto x = normal<double>(g, shape<dyn, 4>{5});
  auto a = labels_of({0, 3, -100, 1, 2});
  auto b = from_values<index_t>(shape<5>{}, {1, -100, -100, 1, 0});
  for_each_reduction([&]<reduction R>() {
    for (double eps : {0.0, 0.1}) {
      INFO("label_smoothing " << eps);
      REQUIRE_GRADIENTS([&](auto l) { return cross_entropy_mix<R>(l, a, b, 0.35, {.label_smoothing = eps}); }, x);
    }
  });
}

TEST_CASE("gradcheck: cross_entropy with soft targets", "[gradcheck][loss]") {
  rng g(24);
  auto x = normal<double>(g, shape<dyn, 4>{5});
  auto p = probs(g, shape<dyn, 4>{5});
  auto unnormalised = uniform<double>(g, shape<5, 4>{}, 0.0, 2.0);  // rows need not sum to 1
  for_each_reduction([&]<reduction R>() {
    for (double eps : {0.0, 0.2}) {
      INFO("label_smoothing " << eps);
      REQUIRE_GRADIENTS([&](auto l) { return cross_entropy<R>(l, p, {.label_smoothing = eps}); }, x);
      REQUIRE_GRADIENTS([&](auto l) { return cross_entropy<R>(l, unnormalised, {.label_smoothing = eps}); }, x);
    }
  });
}

TEST_CASE("gradcheck: nll", "[gradcheck][loss]") {
  rng g(25);
  auto lp = normal<double>(g, shape<dyn, 3>{4});  // any values: nll only picks entries
  auto y = labels_of({2, -100, 0, 2});
  auto x_static = normal<double>(g, shape<4, 3>{});
  auto y_static = from_values<index_t>(shape<4>{}, {1, 1, 0, 2});
  for_each_reduction([&]<reduction R>() {
    REQUIRE_GRADIENTS([&](auto l) { return nll<R>(l, y); }, lp);
    REQUIRE_GRADIENTS([&](auto l) { return nll<R>(l, y_static, {.ignore_index = 0}); }, x_static);
  });
}

TEST_CASE("gradcheck: kl_div(log_q, p)", "[gradcheck][loss]") {
  rng g(26);
  auto log_q = normal<double>(g, shape<dyn, 4>{3});
  auto p = probs(g, shape<3, 4>{});
  p(1, 2) = 0;  // 0 · log 0 := 0, and no gradient from that entry
  for_each_reduction([&]<reduction R>() {
    REQUIRE_GRADIENTS([&](auto l) { return kl_div<R>(l, p); }, log_q);
  });
}

TEST_CASE("gradcheck: distillation kl_div", "[gradcheck][loss]") {
  rng g(27);
  auto s = normal<double>(g, shape<dyn, 5>{4}, 0.0, 2.0);
  auto t = normal<double>(g, shape<dyn, 5>{4}, 0.0, 2.0);
  auto t_static = normal<double>(g, shape<4, 5>{});
  auto p = probs(g, shape<dyn, 5>{4});
  for_each_reduction([&]<reduction R>() {
    for (double tau : {1.0, 2.5}) {
      INFO("temperature " << tau);
      // Student and teacher logits both require grad.
      REQUIRE_GRADIENTS([&](auto st, auto te) { return kl_div<R>(st, te, tau); }, s, t);
      // A constant teacher (tensor), static extents.
      REQUIRE_GRADIENTS([&](auto st) { return kl_div<R>(st, t_static, tau); }, s);
      // Teacher probabilities.
      REQUIRE_GRADIENTS([&](auto st) { return kl_div<R>(st, probabilities{p}, tau); }, s);
    }
  });
}

TEST_CASE("gradcheck: mse", "[gradcheck][loss]") {
  rng g(28);
  auto a = normal<double>(g, shape<2, dyn, 3>{4});
  auto b = normal<double>(g, shape<2, 4, 3>{});
  for_each_reduction([&]<reduction R>() {
    REQUIRE_GRADIENTS([&](auto x, auto y) { return mse<R>(x, y); }, a, b);  // both arguments
    REQUIRE_GRADIENTS([&](auto x) { return mse<R>(x, b); }, a);             // constant target
    REQUIRE_GRADIENTS([&](auto x) { return mse<R>(x, x * 0.5); }, a);       // the same var on both sides
  });
}
