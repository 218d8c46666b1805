// Gradient checks of the nn layers and the ops under them: batch_norm (train
// and eval), rope, multi_head_attention (causal, key padding, RoPE), embedding
// and the dropout layer, for inputs and for the layers' own parameters.
//
// Two patterns, to be reused for every layer:
//  - Inputs, and ops whose weights are arguments: check_gradients(lambda, tensors...)
//    with the lambda calling the op on the vars it is given, e.g.
//    [](auto x, auto w, auto b) { return batch_norm(x, w, b); }. A layer with
//    internal randomness is built afresh inside the lambda from a fixed seed,
//    so every evaluation sees the same draws.
//  - A layer's own parameters: check_parameter_gradients(model, f) (autograd/gradcheck.hpp). The
//    layer reads its parameter members, whose gradients accumulate in the
//    parameters' own cells, so a var that check_gradients creates cannot stand
//    in for one (wrapping it in a fresh parameter would send the gradient to
//    that parameter, not to the var). Instead the check perturbs each parameter
//    value in place and compares with the parameter's grad after backward.
#include <catch2/catch.hpp>

#include <moekit/autograd/gradcheck.hpp>
#include <moekit/autograd/ops/batch_norm.hpp>
#include <moekit/autograd/ops/index.hpp>
#include <moekit/autograd/ops/rope.hpp>
#include <moekit/nn/attention.hpp>
#include <moekit/nn/batch_norm.hpp>
#include <moekit/nn/dropout.hpp>
#include <moekit/nn/embedding.hpp>
#include <moekit/nn/layer.hpp>
#include <moekit/tensor/ops/creation.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <string_view>

using namespace moekit;

// ---- batch_norm ------------------------------------------------------------------------

TEST_CASE("gradcheck batch_norm: training, x, gamma and beta, dyn and static", "[gradcheck][batch_norm]") {
  rng g(201);
  auto x = normal<double>(g, shape<dyn, 4>{6}, 1.0, 2.0);  // (6, 4)
  auto gamma = normal<double>(g, shape<dyn>{4}, 1.0, 0.5);
  auto beta = normal<double>(g, shape<dyn>{4});
  auto r = check_gradients([](auto x, auto w, auto b) { return batch_norm(x, w, b); }, x, gamma, beta);
  INFO(r.message);
  REQUIRE(r.ok);
  REQUIRE(r.checked == 24 + 4 + 4);

  auto xs = normal<double>(g, shape<5, 3>{});  // (5, 3)
  auto gs = normal<double>(g, shape<3>{}, 1.0, 0.5);
  auto bs = normal<double>(g, shape<3>{});
  auto rs = check_gradients([](auto x, auto w, auto b) { return batch_norm(x, w, b, 1e-3); }, xs, gs, bs);
  INFO(rs.message);
  REQUIRE(rs.ok);
}

TEST_CASE("gradcheck batch_norm: with running stats, training and eval", "[gradcheck][batch_norm]") {
  rng g(202);
  auto x = normal<double>(g, shape<dyn, dyn>{5, 3});  // (5, 3)
  auto gamma = normal<double>(g, shape<dyn>{3}, 1.0, 0.5);
  auto beta = normal<double>(g, shape<dyn>{3});
  auto running_mean = normal<double>(g, shape<dyn>{3});
  auto running_var = uniform<double>(g, shape<dyn>{3}, 0.5, 2.0);
  for (bool training : {true, false}) {
    INFO("training " << training);
    auto r = check_gradients([&](auto x, auto w, auto b) {
      return batch_norm(x, w, b, running_mean, running_var, training);
    }, x, gamma, beta);
    INFO(r.message);
    REQUIRE(r.ok);
  }
}

TEST_CASE("gradcheck batch_norm1d: the layer's input, weight and bias", "[gradcheck][batch_norm]") {
  rng g(203);
  nn::batch_norm1d<4, double> bn;
  bn.weight().value() = normal<double>(g, shape<4>{}, 1.0, 0.5);
  bn.bias().value() = normal<double>(g, shape<4>{});
  auto x = normal<double>(g, shape<dyn, 4>{7});  // (7, 4)
  auto rx = check_gradients([&](auto x) { return bn(x); }, x);
  INFO(rx.message);
  REQUIRE(rx.ok);
  auto rp = check_parameter_gradients(bn, [&](tape& t) { return bn(t.input(x)); });
  INFO(rp.message);
  REQUIRE(rp.ok);
  REQUIRE(rp.checked == 8);
}

// ---- rope ----------------------------------------------------------------------------------

TEST_CASE("gradcheck rope: dyn and static, with offsets", "[gradcheck][rope]") {
  rng g(204);
  auto x = normal<double>(g, shape<dyn, dyn, 6>{3, 4});  // (3, 4, 6)
  auto r = check_gradients([](auto x) { return rope(x); }, x);
  INFO(r.message);
  REQUIRE(r.ok);

  auto xs = normal<double>(g, shape<5, 4>{});  // (5, 4)
  auto rs = check_gradients([](auto x) { return rope(x, 11, 50.0); }, xs);
  INFO(rs.message);
  REQUIRE(rs.ok);
}

// ---- multi_head_attention -------------------------------------------------------------------

TEST_CASE("gradcheck multi_head_attention: x, with and without masks", "[gradcheck][attention]") {
  rng g(205);
  nn::multi_head_attention<4, 2, double> attn(g);
  auto x = normal<double>(g, shape<dyn, dyn, 4>{2, 3});  // (2, 3, 4)
  const auto lengths = from_values<index_t>(shape<dyn>{2}, {2, 3});
  const auto empty_row = from_values<index_t>(shape<dyn>{2}, {0, 3});

  auto plain = check_gradients([&](auto x) { return attn(x); }, x);
  INFO(plain.message);
  REQUIRE(plain.ok);
  auto causal = check_gradients([&](auto x) { return attn(x, {.causal = true}); }, x);
  INFO(causal.message);
  REQUIRE(causal.ok);
  auto padded = check_gradients([&](auto x) { return attn(x, {.key_lengths = lengths}); }, x);
  INFO(padded.message);
  REQUIRE(padded.ok);
  auto both = check_gradients([&](auto x) { return attn(x, {.causal = true, .key_lengths = empty_row}); }, x);
  INFO(both.message);
  REQUIRE(both.ok);
}

TEST_CASE("gradcheck multi_head_attention: static shapes with RoPE", "[gradcheck][attention]") {
  rng g(206);
  nn::multi_head_attention<8, 2, double> attn(g, 8, 2, {.causal = true, .rope = true});
  auto x = normal<double>(g, shape<1, 4, 8>{});  // (1, 4, 8)
  auto r = check_gradients([&](auto x) { return attn(x); }, x);
  INFO(r.message);
  REQUIRE(r.ok);
}

TEST_CASE("gradcheck multi_head_attention: projection weights", "[gradcheck][attention]") {
  rng g(207);
  nn::multi_head_attention<dyn, dyn, double> attn(g, 4, 2);
  auto x = normal<double>(g, shape<dyn, dyn, dyn>{2, 3, 4});  // (2, 3, 4)
  const auto lengths = from_values<index_t>(shape<dyn>{2}, {1, 3});

  auto q = check_parameter_gradients(attn, [&](tape& t) { return attn(t.input(x), {.causal = true}); },
                                     "q_proj.weight");
  INFO(q.message);
  REQUIRE(q.ok);
  REQUIRE(q.checked == 16);
  auto all = check_parameter_gradients(attn, [&](tape& t) { return attn(t.input(x), {.key_lengths = lengths}); });
  INFO(all.message);
  REQUIRE(all.ok);
  REQUIRE(all.checked == 4 * (16 + 4));
}

// ---- embedding ------------------------------------------------------------------------------

TEST_CASE("gradcheck embedding: the table, with repeated ids", "[gradcheck][embedding]") {
  rng g(208);
  auto ids = from_values<index_t>(shape<dyn>{5}, {2, 0, 2, 4, 2});
  auto table = normal<double>(g, shape<dyn, dyn>{6, 3});  // (6, 3)
  auto r = check_gradients([&](auto w) { return embedding(w, ids); }, table);
  INFO(r.message);
  REQUIRE(r.ok);

  nn::embedding<6, 3, double> emb(g);
  auto ids2 = from_values<index_t>(shape<2, 2>{}, {1, 5, 5, 0});
  auto rl = check_parameter_gradients(emb, [&](tape&) { return emb(ids2); });
  INFO(rl.message);
  REQUIRE(rl.ok);
  REQUIRE(rl.checked == 18);
}

// ---- dropout ----------------------------------------------------------------------------------

TEST_CASE("gradcheck nn::dropout: a fixed seed, dyn and static", "[gradcheck][dropout]") {
  rng g(209);
  auto x = normal<double>(g, shape<dyn, 5>{4});  // (4, 5)
  // A fresh layer per evaluation: every call of the lambda draws the same mask.
  auto r = check_gradients([](auto x) { return nn::dropout(0.4, 42)(x); }, x);
  INFO(r.message);
  REQUIRE(r.ok);

  auto xs = normal<double>(g, shape<3, 2, 4>{});  // (3, 2, 4)
  auto rs = check_gradients([](auto x) {
    nn::dropout d(0.5, 7);
    d.eval();
    return d(x) * 2.0;
  }, xs);
  INFO(rs.message);
  REQUIRE(rs.ok);
}
