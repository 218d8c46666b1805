// The tape: what records, what does not, where gradients accumulate, and that
// the same seed and inputs give bitwise identical results.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <moekit.hpp>

#include "../support/blas_threads.hpp"

using namespace moekit;

TEST_CASE("tape: gradients of a small expression", "[autograd][tape]") {
  tape t;
  auto x = t.variable(from_values<double>(shape<3>{}, {1, 2, 3}));
  auto y = sum(x * x * 2.0 + x);  // dy/dx = 4x + 1
  REQUIRE(y.value()[0] == 2 * 14 + 6);
  t.backward(y);
  REQUIRE(x.grad()[0] == 5);
  REQUIRE(x.grad()[2] == 13);
}

TEST_CASE("tape: shared gradients are never written through", "[autograd][tape]") {
  // a + b hands the same dy to both; a's later accumulation must not change b's.
  tape t;
  auto a = t.variable(from_values<double>(shape<2>{}, {1, 2}));
  auto b = t.variable(from_values<double>(shape<2>{}, {3, 4}));
  auto y = sum((a + b) + a * 3.0);
  t.backward(y);
  REQUIRE(a.grad()[0] == 4);
  REQUIRE(b.grad()[0] == 1);
  REQUIRE(b.grad()[1] == 1);
}

TEST_CASE("tape: inputs and no_grad record nothing", "[autograd][tape]") {
  tape t;
  auto c = t.input(ones<float>(shape<2, 2>{}));
  auto y = relu(c * 2.0f);
  REQUIRE_FALSE(y.requires_grad());
  REQUIRE(t.size() == 0);
  auto v = t.variable(ones<float>(shape<2, 2>{}));
  {
    no_grad guard;
    REQUIRE_FALSE(grad_enabled());
    auto z = v * v;
    REQUIRE_FALSE(z.requires_grad());
  }
  REQUIRE(grad_enabled());
  REQUIRE(t.size() == 1);  // only the variable's leaf
  REQUIRE_THROWS_AS(t.backward(sum(y)), value_error);
}

TEST_CASE("tape: backward needs a scalar root or a seed", "[autograd][tape]") {
  tape t;
  auto x = t.variable(ones<double>(shape<2>{}));
  auto y = x * 3.0;
  REQUIRE_THROWS_AS(t.backward(y), shape_error);
  t.backward(y, from_values<double>(shape<2>{}, {1, 10}));
  REQUIRE(x.grad()[1] == 30);
}

TEST_CASE("parameters: accumulate across steps until zero_grad", "[autograd][parameter]") {
  parameter<double, shape<2, 2>> w(from_values<double>(shape<2, 2>{}, {1, 2, 3, 4}));
  REQUIRE(w.requires_grad());
  tape t;
  for (int step = 0; step < 2; ++step) {
    auto x = t.input(from_values<double>(shape<dyn, 2>{1}, {1, 1}));
    t.backward(sum(matmul(x, w)));
    t.reset();
  }
  REQUIRE(w.grad()(0, 0) == 2);  // 1 per step
  w.zero_grad();
  REQUIRE(w.grad()(1, 1) == 0);
  auto copy = w;  // deep copy
  copy.value()(0, 0) = 9;
  REQUIRE(w.value()(0, 0) == 1);
}

TEST_CASE("parameters: product gradients sum into the gradient in place from the second step",
          "[autograd][parameter]") {
  // matmul, bmm and the grouped FFN: step 2's weight gradient is a beta = 1
  // GEMM into step 1's (the same buffer), equal to the sum of the two steps'
  // gradients taken one at a time.
  rng g(5);
  auto check = [](auto& param, auto&& step) {
    auto fresh = param;  // a deep copy, no gradient yet
    step(param, 0);
    const float* buffer = param.grad().data();
    const auto first = param.grad().clone();
    step(param, 1);
    step(fresh, 1);
    CHECK(param.grad().data() == buffer);
    double worst = 0;
    for (std::size_t i = 0; i < first.size(); ++i) {
      const double want = double(first.data()[i]) + fresh.grad().data()[i];
      const double err = std::fabs(param.grad().data()[i] - want) / (1 + std::fabs(want));
      if (!(err <= worst)) worst = err;  // a NaN sticks
    }
    CHECK(worst < 1e-5);
  };
  // Step i's input and output gradient: x[i] (70, 48) and dy[i] (70, 40), or both as (2, 35, ·) for bmm.
  const std::vector<tensor<float, shape<dyn, dyn>>> x{normal<float>(g, shape<dyn, dyn>{70, 48}),
                                                      normal<float>(g, shape<dyn, dyn>{70, 48})};
  const std::vector<tensor<float, shape<dyn, dyn>>> dy{normal<float>(g, shape<dyn, dyn>{70, 40}),
                                                       normal<float>(g, shape<dyn, dyn>{70, 40})};
  auto batched = [](const auto& t) { return t.reshape(shape<dyn, dyn, dyn>{2, 35, t.extent(1)}); };
  SECTION("matmul") {
    parameter<float, shape<dyn, dyn>> w(normal<float>(g, shape<dyn, dyn>{48, 40}));
    check(w, [&](auto& p, std::size_t i) {
      tape t;
      t.backward(matmul(t.input(x[i]), p), dy[i]);
    });
  }
  SECTION("bmm") {
    parameter<float, shape<dyn, dyn, dyn>> w(normal<float>(g, shape<dyn, dyn, dyn>{2, 48, 40}));
    check(w, [&](auto& p, std::size_t i) {
      tape t;
      t.backward(bmm(t.input(batched(x[i])), p), batched(dy[i]));
    });
  }
  SECTION("grouped_ffn, both weights") {
    const auto offsets = from_values<index_t>(shape<dyn>{3}, {0, 20, 70});
    parameter<float, shape<dyn, dyn, dyn>> w1(normal<float>(g, shape<dyn, dyn, dyn>{2, 48, 64}));
    parameter<float, shape<dyn, dyn, dyn>> w2(normal<float>(g, shape<dyn, dyn, dyn>{2, 64, 40}));
    auto step_with = [&](auto& p1, auto& p2, std::size_t i) {
      tape t;
      t.backward(grouped_ffn(t.input(x[i]), p1, p2, offsets, fn::gelu_fast{}, fn::gelu_fast_backward{}), dy[i]);
    };
    auto w2_fixed = w2;
    check(w1, [&](auto& p, std::size_t i) { step_with(p, w2_fixed, i); });
    auto w1_fixed = w1;
    check(w2, [&](auto& p, std::size_t i) { step_with(w1_fixed, p, i); });
  }
}

TEST_CASE("parameters: ops on parameters alone use the current tape", "[autograd][parameter]") {
  parameter<double, shape<2>> p(from_values<double>(shape<2>{}, {-1, 2}));
  REQUIRE_THROWS_WITH(relu(p), Catch::Contains("relu") && Catch::Contains("no tape"));
  tape t;
  auto y = sum(relu(p));
  REQUIRE(y.tape_ptr() == &t);
  t.backward(y);
  REQUIRE(p.grad()[0] == 0);
  REQUIRE(p.grad()[1] == 1);
}

TEST_CASE("tape: reset reuses the arena and releases saved tensors", "[autograd][tape]") {
  tape t;
  auto big = ones<float>(shape<256, 256>{});
  {
    auto x = t.variable(big);
    auto y = sum(x * x);
    REQUIRE(big.use_count() > 1);  // held by the tape's nodes
    t.backward(y);
  }
  t.reset();
  REQUIRE(t.size() == 0);
  REQUIRE(big.use_count() == 1);
}

namespace {
/// A small training step with randomness everywhere: returns output and grads.
struct run_result {
  std::vector<float> out, grad_w, grad_b;
};
run_result train_step(std::uint64_t seed) {
  rng g(seed);
  parameter<float, shape<64, 32>> w(normal<float>(g, shape<64, 32>{}));
  parameter<float, shape<32>> b(normal<float>(g, shape<32>{}));
  tape t;
  auto x = t.input(normal<float>(g, shape<dyn, 64>{512}));
  auto h = gelu(add_rows(matmul(x, w), b));  // (512, 32)
  auto loss = mean(h * h);
  t.backward(loss);
  auto v = [](const auto& ten) { return std::vector<float>(ten.data(), ten.data() + ten.size()); };
  return {v(h.value()), v(w.grad()), v(b.grad())};
}
}  // namespace

TEST_CASE("determinism: same seed, bitwise identical outputs and gradients", "[autograd][determinism]") {
  const int saved = num_threads();
  moekit::testing::thread_setting(2);
  auto a = train_step(123), b = train_step(123);
  moekit::testing::thread_setting(1);
  auto c = train_step(123);
  set_num_threads(saved);
  auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
  };
  REQUIRE(same(a.out, b.out));
  REQUIRE(same(a.grad_w, b.grad_w));
  REQUIRE(same(a.grad_b, b.grad_b));
  // Thread count does not change our own reductions (bias grads, means).
  REQUIRE(same(a.grad_b, c.grad_b));
  auto d = train_step(124);
  REQUIRE_FALSE(same(a.out, d.out));
}

TEST_CASE("parameters: an unset parameter copies as unset", "[autograd][parameter]") {
  parameter<float, shape<3>> unset;  // e.g. a bias a layer was built without
  auto copy = unset;
  REQUIRE_FALSE(copy.value().defined());
  REQUIRE_FALSE(copy.requires_grad());
  rng g(1);
  nn::linear<2, 3> no_bias(g, 2, 3, {.bias = false});
  auto layer_copy = no_bias;
  REQUIRE_FALSE(layer_copy.has_bias());
}
