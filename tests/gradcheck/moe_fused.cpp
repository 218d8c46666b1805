// Gradient checks (double, central differences) for the fused ops of the MoE
// hot path: grouped_bias_activation (bias + activation epilogue of a grouped
// GEMM), weighted_scatter_add_rows (gate-weighted combine) and the
// vectorisable activation functors the expert banks use.
#include <catch2/catch.hpp>

#include <moekit.hpp>
#include <moekit/autograd/ops/combine.hpp>
#include <moekit/autograd/ops/grouped.hpp>
#include <moekit/moe.hpp>

#include "check.hpp"

using namespace moekit;
using namespace moekit::testing;

namespace {
offsets_tensor offsets_of(std::initializer_list<index_t> v) {
  return from_values<index_t>(shape<dyn>{v.size()}, v);
}
}  // namespace

TEST_CASE("gradcheck: grouped_bias_activation", "[gradcheck][moe][grouped]") {
  rng g(11);
  // Groups of 2, 0 (empty) and 3 rows.
  const auto offsets = offsets_of({0, 2, 2, 5});
  auto h = randn(g, shape<dyn, dyn>{5, 4});  // (A, n), dyn
  auto b = randn(g, shape<3, 4>{});          // (G, n), static
  REQUIRE_GRADIENTS([&](auto x, auto bias) {
    return grouped_bias_activation(x, bias, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{});
  }, h, b);
  REQUIRE_GRADIENTS([&](auto x, auto bias) {
    return grouped_bias_activation(x, bias, offsets, fn::silu_fast{}, fn::silu_fast_backward{});
  }, h, b);
  REQUIRE_GRADIENTS([&](auto x, auto bias) {
    return grouped_bias_activation(x, bias, offsets, fn::relu{}, fn::relu_backward{});
  }, h, b);
  // All-static shapes, and the bias used twice (gradients add up).
  auto hs = randn(g, shape<5, 3>{});
  auto bs = randn(g, shape<dyn, 3>{3});
  REQUIRE_GRADIENTS([&](auto x, auto bias) {
    auto a = grouped_bias_activation(x, bias, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{});
    return add_grouped_rows(a, bias, offsets);
  }, hs, bs);
}

TEST_CASE("gradcheck: grouped_matmul_activation (bias and activation in the GEMM's output pass)",
          "[gradcheck][moe][grouped]") {
  rng g(13);
  const auto offsets = offsets_of({0, 2, 2, 5});  // groups of 2, 0 and 3 rows
  auto x = randn(g, shape<dyn, dyn>{5, 4});       // (A, k)
  auto w = randn(g, shape<dyn, 4, 3>{3});         // (G, k, n)
  auto b = randn(g, shape<dyn, 3>{3});            // (G, n)
  REQUIRE_GRADIENTS([&](auto xv, auto wv, auto bv) {
    return grouped_matmul_activation(xv, wv, bv, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{});
  }, x, w, b);
  REQUIRE_GRADIENTS([&](auto xv, auto wv) {
    return grouped_matmul_activation(xv, wv, offsets, fn::silu_fast{}, fn::silu_fast_backward{});
  }, x, w);
}

TEST_CASE("gradcheck: grouped_ffn (the activation's derivative in the hidden gradient's GEMM)",
          "[gradcheck][moe][grouped]") {
  rng g(17);
  const auto offsets = offsets_of({0, 2, 2, 5});  // groups of 2, 0 and 3 rows
  auto x = randn(g, shape<dyn, dyn>{5, 4});       // (A, k)
  auto w1 = randn(g, shape<dyn, 4, 3>{3});        // (G, k, F)
  auto b1 = randn(g, shape<dyn, 3>{3});           // (G, F)
  auto w2 = randn(g, shape<dyn, 3, 2>{3});        // (G, F, n)
  REQUIRE_GRADIENTS([&](auto xv, auto w1v, auto bv, auto w2v) {
    return grouped_ffn(xv, w1v, bv, w2v, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{});
  }, x, w1, b1, w2);
  REQUIRE_GRADIENTS([&](auto xv, auto w1v, auto w2v) {
    return grouped_ffn(xv, w1v, w2v, offsets, fn::silu_fast{}, fn::silu_fast_backward{});
  }, x, w1, w2);
  // w1 also used elsewhere: its gradients add up.
  REQUIRE_GRADIENTS([&](auto xv, auto w1v, auto w2v) {
    auto y = grouped_ffn(xv, w1v, w2v, offsets, fn::relu{}, fn::relu_backward{});  // (A, n)
    return concat<1>(y, grouped_matmul(xv, w1v, offsets));
  }, x, w1, w2);
}

TEST_CASE("gradcheck: weighted_scatter_add_rows", "[gradcheck][moe][combine]") {
  rng g(12);
  // Five source rows into four output rows; row 1 gets three of them, row 2 none.
  const auto idx = from_values<index_t>(shape<dyn>{5}, {1, 3, 1, 0, 1});
  auto src = randn(g, shape<dyn, 3>{5});  // (M, D), dyn rows
  auto scale = randn(g, shape<5>{});      // (M), static
  REQUIRE_GRADIENTS([&](auto s, auto w) { return weighted_scatter_add_rows(s, idx, 4, w); }, src, scale);
  // Static source shape; the scale also feeds another op.
  auto src_s = randn(g, shape<5, 2>{});
  auto scale_d = randn(g, shape<dyn>{5});
  REQUIRE_GRADIENTS([&](auto s, auto w) { return weighted_scatter_add_rows(s, idx, 4, w * w); },
                    src_s, scale_d);
}

TEST_CASE("gradcheck: the expert banks' activations", "[gradcheck][moe][activation]") {
  rng g(13);
  auto x = randn(g, shape<dyn, 6>{4});
  auto xs = randn(g, shape<3, 5>{});
  REQUIRE_GRADIENTS([](auto v) { return moe::detail::activate<moe::activation::gelu>(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return moe::detail::activate<moe::activation::silu>(v); }, x);
  REQUIRE_GRADIENTS([](auto v) { return moe::detail::activate<moe::activation::relu>(v); }, xs);
  REQUIRE_GRADIENTS([](auto v) { return moe::detail::activate(moe::activation::gelu, v); }, xs);
}

TEST_CASE("gradcheck: moe::combine and the bank with biases", "[gradcheck][moe][combine]") {
  rng g(14);
  using expert = moe::ffn_expert<dyn, dyn, moe::activation::gelu, /*Bias=*/true>;
  expert::bank<dyn, double, cpu> bank(g, 3, 4, 5);
  const auto offsets = offsets_of({0, 1, 1, 4});
  auto rows = randn(g, shape<dyn, dyn>{4, 4});
  REQUIRE_GRADIENTS([&](auto r) { return bank(r, offsets); }, rows);

  moe::routing<double> plan;
  plan.tokens = 3, plan.experts = 2;
  plan.token = from_values<index_t>(shape<dyn>{4}, {2, 0, 2, 1});
  auto y = randn(g, shape<dyn, dyn>{4, 3});
  auto gates = positive(g, shape<dyn>{4});
  REQUIRE_GRADIENTS([&](auto v, auto w) {
    plan.gate = w;
    return moe::combine(v, plan, 3);
  }, y, gates);
}
