// Behaviour of the nn layers batch_norm1d, dropout, embedding and
// multi_head_attention (with RoPE, causal and key-padding masks), and linear on
// rank-3 inputs, against statistics and reference loops written out here.
#include <catch2/catch.hpp>

#include <moekit/autograd/ops/reduce.hpp>
#include <moekit/backend/cpu/parallel.hpp>
#include <moekit/nn/attention.hpp>
#include <moekit/nn/batch_norm.hpp>
#include <moekit/nn/dropout.hpp>
#include <moekit/nn/embedding.hpp>
#include <moekit/nn/layer.hpp>
#include <moekit/nn/linear.hpp>
#include <moekit/nn/sequential.hpp>
#include <moekit/tensor/ops/creation.hpp>
#include <moekit/tensor/ops/rope.hpp>

#include <cmath>
#include <cstddef>
#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

using namespace moekit;

// ---- the layer concept -----------------------------------------------------------

static_assert(layer<nn::batch_norm1d<4>, var<float, shape<dyn, 4>>>);
static_assert(layer<nn::batch_norm1d<dyn, double>, var<double, shape<dyn, dyn>>>);
static_assert(layer<nn::dropout, var<float, shape<dyn, 16>>>);
static_assert(layer<nn::embedding<100, 8>, tensor<index_t, shape<dyn>>>);
static_assert(layer<nn::embedding<100, 8>, tensor<index_t, shape<dyn, dyn>>>);
static_assert(layer<nn::multi_head_attention<8, 2>, var<float, shape<dyn, dyn, 8>>>);
static_assert(layer<nn::multi_head_attention<dyn, dyn, double>, var<double, shape<dyn, dyn, dyn>>>);
static_assert(buffered<nn::batch_norm1d<4>> && !buffered<nn::dropout>);
// Attention keeps the input's shape type, so it nests in residual<> and repeat<>.
static_assert(std::is_same_v<decltype(std::declval<nn::multi_head_attention<8, 2>&>()(
                                 std::declval<const var<float, shape<2, 5, 8>>&>())),
                             var<float, shape<2, 5, 8>>>);

namespace {

/// Mean and biased variance of column c of a (rows, cols) tensor, in double.
template <class X>
std::pair<double, double> column_moments(const X& x, std::size_t c) {
  const std::size_t n = x.extent(0);
  double mean = 0, var = 0;
  for (std::size_t r = 0; r < n; ++r) mean += x(r, c);
  mean /= static_cast<double>(n);
  for (std::size_t r = 0; r < n; ++r) var += (x(r, c) - mean) * (x(r, c) - mean);
  return {mean, var / static_cast<double>(n)};
}

template <class T, class S>
var<T, S> layers_constant(tensor<T, S> t) {
  return var<T, S>(std::move(t), nullptr, nullptr);
}

/// Sets a projection to the identity with zero bias.
template <class L>
void set_identity(L& lin) {
  auto& w = lin.weight().value();
  fill(w, 0.0);
  for (std::size_t i = 0; i < w.extent(0); ++i) w(i, i) = 1.0;
  fill(lin.bias().value(), 0.0);
}

/// Softmax attention with identity projections, the textbook way: for every
/// batch row, head and query, weights = softmax(q·k/√d_head over keys), out = Σ weights·v.
std::vector<double> reference_attention(const tensor<double, shape<dyn, dyn, dyn>>& x, std::size_t heads) {
  const std::size_t batch = x.extent(0), seq = x.extent(1), d = x.extent(2), dh = d / heads;
  std::vector<double> out(x.size(), 0.0);
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t q = 0; q < seq; ++q) {
        std::vector<double> s(seq);
        double m = -INFINITY, sum = 0;
        for (std::size_t k = 0; k < seq; ++k) {
          s[k] = 0;
          for (std::size_t j = 0; j < dh; ++j) s[k] += x(b, q, h * dh + j) * x(b, k, h * dh + j);
          s[k] /= std::sqrt(static_cast<double>(dh));
          m = std::max(m, s[k]);
        }
        for (auto& v : s) sum += v = std::exp(v - m);
        for (std::size_t k = 0; k < seq; ++k)
          for (std::size_t j = 0; j < dh; ++j) out[(b * seq + q) * d + h * dh + j] += s[k] / sum * x(b, k, h * dh + j);
      }
  return out;
}

}  // namespace

// ---- batch_norm1d ------------------------------------------------------------------

TEST_CASE("batch_norm1d: training output has per-feature mean 0 and variance 1", "[nn][batch_norm]") {
  rng g(1);
  tape t;
  auto x = normal<double>(g, shape<dyn, 3>{32}, 2.0, 3.0);  // (32, 3)
  nn::batch_norm1d<3, double> bn;
  REQUIRE(bn.training());
  auto y = bn(t.input(x)).value();
  for (std::size_t c = 0; c < 3; ++c) {
    const auto [xm, xv] = column_moments(x, c);
    const auto [m, v] = column_moments(y, c);
    CHECK(m == Approx(0).margin(1e-12));
    CHECK(v == Approx(xv / (xv + 1e-5)).epsilon(1e-12));  // 1 up to eps
    CHECK(v == Approx(1).epsilon(1e-4));
  }
}

TEST_CASE("batch_norm1d: affine weights scale and shift each feature", "[nn][batch_norm]") {
  rng g(2);
  tape t;
  auto x = normal<double>(g, shape<dyn, 2>{40});  // (40, 2)
  nn::batch_norm1d<2, double> bn;
  bn.weight().value()(0) = 2.0, bn.weight().value()(1) = 0.5;
  bn.bias().value()(0) = 3.0, bn.bias().value()(1) = -1.0;
  auto y = bn(t.input(x)).value();
  const auto [m0, v0] = column_moments(y, 0);
  const auto [m1, v1] = column_moments(y, 1);
  CHECK(m0 == Approx(3.0));
  CHECK(v0 == Approx(4.0).epsilon(1e-3));
  CHECK(m1 == Approx(-1.0));
  CHECK(v1 == Approx(0.25).epsilon(1e-3));
}

TEST_CASE("batch_norm1d: one step moves running stats by momentum 0.1 with the unbiased variance",
          "[nn][batch_norm]") {
  rng g(3);
  tape t;
  auto x = normal<double>(g, shape<dyn, dyn>{8, 4}, 1.0, 2.0);  // (8, 4)
  nn::batch_norm1d<dyn, double> bn(4);
  (void)bn(t.input(x));
  for (std::size_t c = 0; c < 4; ++c) {
    const auto [m, v] = column_moments(x, c);
    const double unbiased = v * 8.0 / 7.0;
    CHECK(bn.running_mean()(c) == Approx(0.9 * 0.0 + 0.1 * m).epsilon(1e-12));
    CHECK(bn.running_var()(c) == Approx(0.9 * 1.0 + 0.1 * unbiased).epsilon(1e-12));
  }

  SECTION("eval mode normalises with the running stats and leaves them alone") {
    const auto rm = bn.running_mean().clone(), rv = bn.running_var().clone();
    bn.eval();
    auto z = normal<double>(g, shape<dyn, dyn>{5, 4});  // (5, 4)
    auto y = bn(t.input(z)).value();
    for (std::size_t r = 0; r < 5; ++r)
      for (std::size_t c = 0; c < 4; ++c) CHECK(y(r, c) == Approx((z(r, c) - rm(c)) / std::sqrt(rv(c) + 1e-5)));
    for (std::size_t c = 0; c < 4; ++c) {
      CHECK(bn.running_mean()(c) == rm(c));
      CHECK(bn.running_var()(c) == rv(c));
    }
    // A single sample is fine in eval mode (it is not in training).
    REQUIRE_NOTHROW(bn(t.input(zeros<double>(shape<dyn, dyn>{1, 4}))));
    bn.set_training(true);
    REQUIRE_THROWS_AS(bn(t.input(zeros<double>(shape<dyn, dyn>{1, 4}))), value_error);
    REQUIRE_THROWS_WITH(bn(t.input(zeros<double>(shape<dyn, dyn>{1, 4}))), Catch::Contains("batch_norm"));
  }
}

TEST_CASE("batch_norm1d: buffers are listed apart from parameters, with dotted paths", "[nn][batch_norm]") {
  nn::sequential<nn::batch_norm1d<3>, nn::batch_norm1d<3>> model(nn::batch_norm1d<3>{},
                                                                 nn::batch_norm1d<3>(3, 1e-5f, 0.1f, /*affine*/ false));
  std::vector<std::string> params, buffers;
  visit_parameters(model, [&](const std::string& name, auto&) { params.push_back(name); });
  visit_buffers(model, [&](const std::string& name, auto& b) {
    buffers.push_back(name);
    REQUIRE(b.size() == 3);
  });
  CHECK(params == std::vector<std::string>{"0.weight", "0.bias"});
  CHECK(buffers == std::vector<std::string>{"0.running_mean", "0.running_var", "1.running_mean", "1.running_var"});
}

TEST_CASE("batch_norm1d: wrong feature count and single-sample batches are errors", "[nn][batch_norm]") {
  tape t;
  nn::batch_norm1d<dyn> bn(4);
  REQUIRE_THROWS_AS(bn(t.input(zeros<float>(shape<dyn, dyn>{3, 5}))), shape_error);
  REQUIRE_THROWS_WITH(bn(t.input(zeros<float>(shape<dyn, dyn>{3, 5}))), Catch::Contains("batch_norm") &&
                                                                          Catch::Contains("(3, 5)"));
  REQUIRE_THROWS_WITH(bn(t.input(zeros<float>(shape<dyn, dyn>{1, 4}))), Catch::Contains("more than one value"));
}

TEST_CASE("batch_norm: forward and backward do not depend on the thread count", "[nn][batch_norm]") {
  struct restore {
    int saved = num_threads();
    ~restore() { set_num_threads(saved); }
  } guard;
  rng g(31);
  auto x = normal<float>(g, shape<dyn, dyn>{300, 200}, 0.5f, 2.0f);  // (300, 200): several column blocks
  auto seed = normal<float>(g, x.shape());
  auto run = [&](int threads) {
    set_num_threads(threads);
    tape t;
    nn::batch_norm1d<dyn> bn(200);
    auto xv = t.variable(x);
    auto y = bn(xv);
    t.backward(y, seed);
    return std::array{y.value().clone(), xv.grad().clone(), bn.running_var().clone().reshape(shape<dyn, dyn>{1, 200})};
  };
  const auto one = run(1), four = run(4);
  for (std::size_t k = 0; k < 3; ++k)
    for (std::size_t i = 0; i < one[k].size(); ++i) REQUIRE(one[k][i] == four[k][i]);
  for (std::size_t c = 0; c < 200; c += 37) {
    const auto [m, v] = column_moments(x, c);
    CHECK(one[0](7, c) == Approx((x(7, c) - m) / std::sqrt(v + 1e-5)).epsilon(1e-4));
  }
}

// ---- dropout -------------------------------------------------------------------------

TEST_CASE("nn::dropout: identity in eval mode, 0 or x/(1-p) in training", "[nn][dropout]") {
  rng g(4);
  tape t;
  auto x = normal<double>(g, shape<dyn>{20000}, 1.0, 1.0);
  nn::dropout d(0.25, 7);
  d.eval();
  auto same = d(t.input(x)).value();
  REQUIRE(same.data() == x.data());  // x itself
  REQUIRE(d.generator().offset() == 0);  // and nothing drawn

  d.train();
  auto y = d(t.input(x)).value();
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (y[i] == 0.0) ++dropped;
    else REQUIRE(y[i] == Approx(x[i] / 0.75));
  }
  const double frac = static_cast<double>(dropped) / static_cast<double>(x.size());
  CHECK(frac == Approx(0.25).margin(0.015));  // ~5 sigma

  // The stream advances: the next call draws another mask; the same seed repeats the first.
  auto y2 = d(t.input(x)).value();
  std::size_t differ = 0;
  for (std::size_t i = 0; i < x.size(); ++i) differ += (y[i] == 0.0) != (y2[i] == 0.0);
  CHECK(differ > 1000);
  nn::dropout again(0.25, 7);
  auto y3 = again(t.input(x)).value();
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(y3[i] == y[i]);
}

TEST_CASE("nn::dropout: p outside [0, 1) is a value_error", "[nn][dropout]") {
  REQUIRE_THROWS_AS(nn::dropout(1.0), value_error);
  REQUIRE_THROWS_WITH(nn::dropout(-0.1), Catch::Contains("dropout") && Catch::Contains("[0, 1)"));
}

// ---- embedding ---------------------------------------------------------------------------

TEST_CASE("nn::embedding: rows of the table, N(0, 1) at start, rank-1 and rank-2 ids", "[nn][embedding]") {
  rng g(5);
  tape t;
  nn::embedding<dyn, 3, double> emb(g, 2000);
  REQUIRE(emb.vocabulary() == 2000);
  const auto& table = emb.weight().value();
  double mean = 0, sq = 0;
  for (std::size_t i = 0; i < table.size(); ++i) mean += table[i], sq += table[i] * table[i];
  mean /= static_cast<double>(table.size());
  CHECK(mean == Approx(0).margin(0.05));
  CHECK(sq / static_cast<double>(table.size()) == Approx(1).epsilon(0.05));

  auto ids = from_values<index_t>(shape<dyn>{4}, {7, 0, 1999, 7});
  auto y = emb(ids);
  static_assert(std::is_same_v<decltype(y), var<double, shape<dyn, 3>>>);
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 3; ++j) REQUIRE(y.value()(i, j) == table(static_cast<std::size_t>(ids[i]), j));

  auto ids2 = from_values<index_t>(shape<2, 2>{}, {7, 0, 1999, 7});
  auto y2 = emb(ids2);  // (2, 2, 3)
  static_assert(std::is_same_v<decltype(y2), var<double, shape<2, 2, 3>>>);
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 3; ++j) REQUIRE(y2.value()(i / 2, i % 2, j) == y.value()(i, j));

  // A repeated id gets the sum of its rows' gradients.
  t.backward(sum(y));
  const auto& grad = emb.weight().grad();
  CHECK(grad(7, 1) == 2.0);
  CHECK(grad(0, 1) == 1.0);
  CHECK(grad(1, 1) == 0.0);
}

TEST_CASE("nn::embedding: ids outside the vocabulary are a value_error", "[nn][embedding]") {
  rng g(6);
  tape t;
  nn::embedding<10, 4> emb(g);
  REQUIRE_THROWS_AS(emb(from_values<index_t>(shape<dyn>{2}, {3, 10})), value_error);
  REQUIRE_THROWS_WITH(emb(from_values<index_t>(shape<dyn>{2}, {-1, 3})),
                      Catch::Contains("embedding") && Catch::Contains("-1") && Catch::Contains("[0, 10)"));
}

// ---- linear on rank 3 --------------------------------------------------------------------

TEST_CASE("nn::linear: (batch, seq, in) gives the rows of (batch·seq, in)", "[nn][linear]") {
  rng g(7);
  tape t;
  nn::linear<4, 5, double> lin(g);
  auto x = normal<double>(g, shape<2, 3, 4>{});  // (2, 3, 4)
  auto y3 = lin(t.input(x));
  static_assert(std::is_same_v<decltype(y3), var<double, shape<2, 3, 5>>>);
  auto y2 = lin(t.input(x.reshape(shape<6, 4>{}))).value();
  for (std::size_t i = 0; i < 30; ++i) REQUIRE(y3.value()[i] == y2[i]);
}

// ---- RoPE --------------------------------------------------------------------------------

TEST_CASE("rope: matches the rotate_half formula and preserves each pair's norm", "[nn][rope]") {
  rng g(8);
  auto x = normal<double>(g, shape<dyn, dyn, 6>{2, 5});  // (2, 5, 6)
  auto y = rope(x, 3, 100.0);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t p = 0; p < 5; ++p)
      for (std::size_t j = 0; j < 3; ++j) {
        const double angle = static_cast<double>(p + 3) * std::pow(100.0, -2.0 * static_cast<double>(j) / 6.0);
        const double x1 = x(b, p, j), x2 = x(b, p, j + 3);
        CHECK(y(b, p, j) == Approx(x1 * std::cos(angle) - x2 * std::sin(angle)));
        CHECK(y(b, p, j + 3) == Approx(x2 * std::cos(angle) + x1 * std::sin(angle)));
        CHECK(std::hypot(y(b, p, j), y(b, p, j + 3)) == Approx(std::hypot(x1, x2)));
      }
  // The backward is the inverse rotation.
  auto back = rope_backward(y, 3, 100.0);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(back[i] == Approx(x[i]).margin(1e-12));
}

TEST_CASE("rope: position 0 is the identity", "[nn][rope]") {
  rng g(9);
  auto x = normal<float>(g, shape<1, 8>{});  // (seq 1, dim 8)
  auto y = rope(x);
  for (std::size_t i = 0; i < 8; ++i) REQUIRE(y[i] == x[i]);
}

TEST_CASE("rope: q·k depends only on the relative position", "[nn][rope]") {
  rng g(10);
  auto q = normal<double>(g, shape<1, 8>{}), k = normal<double>(g, shape<1, 8>{});
  auto score = [&](std::size_t pq, std::size_t pk) {
    auto rq = rope(q, pq), rk = rope(k, pk);
    double s = 0;
    for (std::size_t i = 0; i < 8; ++i) s += rq[i] * rk[i];
    return s;
  };
  CHECK(score(5, 2) == Approx(score(3, 0)).epsilon(1e-10));
  CHECK(score(105, 102) == Approx(score(3, 0)).epsilon(1e-9));
  CHECK(score(2, 5) == Approx(score(10, 13)).epsilon(1e-10));
  CHECK(std::abs(score(5, 2) - score(5, 3)) > 1e-6);  // and it does depend on it
}

TEST_CASE("rope: an odd last extent is a shape_error", "[nn][rope]") {
  REQUIRE_THROWS_AS(rope(zeros<float>(shape<dyn, dyn>{2, 5})), shape_error);
  REQUIRE_THROWS_WITH(rope(zeros<float>(shape<dyn, dyn>{2, 5})), Catch::Contains("rope") && Catch::Contains("(2, 5)"));
  rng g(11);
  REQUIRE_THROWS_WITH((nn::multi_head_attention<dyn, dyn>(g, 6, 2, {.rope = true})),
                      Catch::Contains("multi_head_attention") && Catch::Contains("even"));
}

// ---- multi_head_attention ---------------------------------------------------------------------

TEST_CASE("multi_head_attention: parameter names and count", "[nn][attention]") {
  rng g(12);
  nn::multi_head_attention<8, 2> attn(g);
  std::vector<std::string> names;
  visit_parameters(attn, [&](const std::string& name, auto&) { names.push_back(name); });
  CHECK(names == std::vector<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                                          "v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"});
  CHECK(count_parameters(attn) == 4 * (8 * 8 + 8));
  nn::multi_head_attention<8, 2> no_bias(g, 8, 2, {.bias = false});
  CHECK(count_parameters(no_bias) == 4 * 8 * 8);
  CHECK(attn.head_dim() == 4);
  REQUIRE_THROWS_WITH((nn::multi_head_attention<dyn, dyn>(g, 10, 3)),
                      Catch::Contains("multi_head_attention") && Catch::Contains("multiple"));
}

TEST_CASE("multi_head_attention: identity projections give softmax(QKᵀ/√d)V", "[nn][attention]") {
  rng g(13);
  tape t;
  auto x = normal<double>(g, shape<dyn, dyn, dyn>{2, 5, 4});  // (2, 5, 4)
  for (std::size_t heads : {1u, 2u}) {
    nn::multi_head_attention<dyn, dyn, double> attn(g, 4, heads);
    set_identity(attn.q_proj()), set_identity(attn.k_proj()), set_identity(attn.v_proj()),
        set_identity(attn.out_proj());
    auto y = attn(t.input(x)).value();
    const auto ref = reference_attention(x, heads);
    INFO("heads " << heads);
    for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(y[i] == Approx(ref[i]).epsilon(1e-12));
  }
}

TEST_CASE("multi_head_attention: causal output at t ignores inputs after t", "[nn][attention]") {
  rng g(14);
  tape t;
  nn::multi_head_attention<8, 2, double> attn(g, 8, 2, {.rope = true});
  auto x = normal<double>(g, shape<dyn, dyn, 8>{2, 6});  // (2, 6, 8)
  auto x2 = x.clone();
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t p = 3; p < 6; ++p)
      for (std::size_t j = 0; j < 8; ++j) x2(b, p, j) += 5.0;
  auto y = attn(t.input(x), {.causal = true}).value();
  auto y2 = attn(t.input(x2), {.causal = true}).value();
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t p = 0; p < 3; ++p)
      for (std::size_t j = 0; j < 8; ++j) REQUIRE(y2(b, p, j) == Approx(y(b, p, j)).epsilon(1e-13));
  // Without the mask the early positions do see the change.
  auto u = attn(t.input(x)).value(), u2 = attn(t.input(x2)).value();
  CHECK(std::abs(u(0, 0, 0) - u2(0, 0, 0)) > 1e-6);
  // options.causal masks every call the same way.
  nn::multi_head_attention<8, 2, double> causal_layer(g, 8, 2, {.causal = true, .rope = true});
  causal_layer.q_proj() = attn.q_proj(), causal_layer.k_proj() = attn.k_proj();
  causal_layer.v_proj() = attn.v_proj(), causal_layer.out_proj() = attn.out_proj();
  auto c = causal_layer(t.input(x)).value();
  for (std::size_t i = 0; i < y.size(); ++i) REQUIRE(c[i] == y[i]);
}

TEST_CASE("multi_head_attention: padded keys do not change the outputs", "[nn][attention]") {
  rng g(15);
  tape t;
  nn::multi_head_attention<8, 4, double> attn(g);
  auto x = normal<double>(g, shape<2, 5, 8>{});  // (2, 5, 8)
  auto x2 = x.clone();
  for (std::size_t j = 0; j < 8; ++j) x2(0, 3, j) -= 3.0, x2(0, 4, j) += 4.0;  // batch 0's padding
  const nn::attention_mask<> by_length{.key_lengths = from_values<index_t>(shape<dyn>{2}, {3, 5})};
  const nn::attention_mask<> by_flag{
      .key_padding = from_values<std::uint8_t>(shape<dyn, dyn>{2, 5}, {0, 0, 0, 1, 1, 0, 0, 0, 0, 0})};
  auto y = attn(t.input(x), by_length).value();
  auto y2 = attn(t.input(x2), by_length).value();
  auto y3 = attn(t.input(x2), by_flag).value();
  for (std::size_t p = 0; p < 3; ++p)
    for (std::size_t j = 0; j < 8; ++j) {
      REQUIRE(y2(0, p, j) == Approx(y(0, p, j)).epsilon(1e-13));
      REQUIRE(y3(0, p, j) == Approx(y(0, p, j)).epsilon(1e-13));
    }
  for (std::size_t i = 40; i < 80; ++i) REQUIRE(y2[i] == y[i]);  // batch 1 is unpadded
  for (std::size_t i = 0; i < 80; ++i) REQUIRE(y3[i] == Approx(y2[i]).epsilon(1e-13));  // flags = lengths
  auto unmasked = attn(t.input(x2)).value();
  CHECK(std::abs(unmasked(0, 0, 0) - y(0, 0, 0)) > 1e-6);
}

TEST_CASE("multi_head_attention: a query with every key masked gives out_proj's bias, not NaN",
          "[nn][attention]") {
  rng g(16);
  tape t;
  nn::multi_head_attention<dyn, dyn> attn(g, 4, 2);
  auto x = t.variable(normal<float>(g, shape<dyn, dyn, dyn>{2, 3, 4}));  // (2, 3, 4)
  auto y = attn(x, {.causal = true, .key_lengths = from_values<index_t>(shape<dyn>{2}, {0, 2})});
  const auto& bias = attn.out_proj().bias().value();
  for (std::size_t p = 0; p < 3; ++p)
    for (std::size_t j = 0; j < 4; ++j) REQUIRE(y.value()(0, p, j) == bias(j));
  for (std::size_t i = 0; i < y.size(); ++i) REQUIRE(std::isfinite(y.value()[i]));
  // Left padding with a causal mask: query 0 of batch 1 sees no key either.
  const auto left_padded = from_values<std::uint8_t>(shape<dyn, dyn>{2, 3}, {0, 0, 0, 1, 0, 0});
  auto z = attn(x, {.causal = true, .key_padding = left_padded});
  for (std::size_t j = 0; j < 4; ++j) REQUIRE(z.value()(1, 0, j) == bias(j));
  t.backward(sum(y) + sum(z));
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(std::isfinite(x.grad()[i]));
}

TEST_CASE("multi_head_attention: bad shapes and lengths are errors naming the op", "[nn][attention]") {
  rng g(17);
  tape t;
  nn::multi_head_attention<dyn, 2> attn(g, 8);
  auto x = t.input(zeros<float>(shape<dyn, dyn, dyn>{2, 3, 8}));
  REQUIRE_THROWS_WITH(attn(t.input(zeros<float>(shape<dyn, dyn, dyn>{2, 3, 6}))),
                      Catch::Contains("multi_head_attention") && Catch::Contains("(2, 3, 6)"));
  REQUIRE_THROWS_AS(attn(x, {.key_lengths = from_values<index_t>(shape<dyn>{3}, {1, 2, 3})}), shape_error);
  REQUIRE_THROWS_AS(attn(x, {.key_lengths = from_values<index_t>(shape<dyn>{2}, {1, 4})}), value_error);
  REQUIRE_THROWS_WITH(attn(x, {.key_lengths = from_values<index_t>(shape<dyn>{2}, {-1, 2})}),
                      Catch::Contains("multi_head_attention") && Catch::Contains("[0, 3]"));
  REQUIRE_THROWS_AS(attn(x, {.key_padding = zeros<std::uint8_t>(shape<dyn, dyn>{2, 4})}), shape_error);
}
