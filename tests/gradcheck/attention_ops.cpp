// Gradient checks of the public attention ops: split_heads / merge_heads,
// rope at given positions, mask_scores and masked_softmax (causal on positions,
// key lengths, key padding, rows with nothing visible) and
// scaled_dot_product_attention in q, k and v.
#include "check.hpp"

#include <moekit/autograd/ops/attention.hpp>
#include <moekit/autograd/ops/attention_mask.hpp>
#include <moekit/autograd/ops/heads.hpp>
#include <moekit/autograd/ops/rope.hpp>
#include <moekit/autograd/ops/softmax.hpp>
#include <moekit/tensor/ops/creation.hpp>

using namespace moekit;
using moekit::testing::randn;

namespace {
/// Positions (groups, n) from a flat list.
tensor<index_t, shape<dyn, dyn>> positions(std::size_t groups, std::size_t n, std::initializer_list<index_t> v) {
  return from_values<index_t>(shape<dyn, dyn>{groups, n}, v);
}
}  // namespace

TEST_CASE("gradcheck split_heads, merge_heads: dyn and static heads", "[gradcheck][attention][heads]") {
  rng g(301);
  const auto x = randn(g, shape<dyn, dyn, 6>{2, 3});  // (2, 3, 6)
  REQUIRE_GRADIENTS([](auto x) { return split_heads(x, 3); }, x);
  REQUIRE_GRADIENTS([](auto x) { return split_heads<2>(x); }, x);
  const auto y = randn(g, shape<dyn, dyn, dyn>{6, 3, 2});  // (2·3, 3, 2)
  REQUIRE_GRADIENTS([](auto y) { return merge_heads(y, 3); }, y);
  const auto ys = randn(g, shape<4, 3, 2>{});  // (2·2, 3, 2), static
  REQUIRE_GRADIENTS([](auto y) { return merge_heads<2>(y); }, ys);
}

TEST_CASE("gradcheck rope at positions: shared (seq), per row (rows, seq), per group", "[gradcheck][rope]") {
  rng g(302);
  const auto x = randn(g, shape<dyn, dyn, 4>{4, 3});  // (4 rows, 3, 4)
  const auto shared = from_values<index_t>(shape<dyn>{3}, {5, 0, 9});
  REQUIRE_GRADIENTS([&](auto x) { return rope(x, shared, 50.0); }, x);
  const auto per_row = positions(4, 3, {0, 1, 2, 7, 3, 1, 4, 4, 4, 0, 10, 20});
  REQUIRE_GRADIENTS([&](auto x) { return rope(x, per_row); }, x);
  const auto per_pair = positions(2, 3, {2, 5, 8, 1, 0, 6});  // rows 0, 1 read row 0; rows 2, 3 row 1
  REQUIRE_GRADIENTS([&](auto x) { return rope(x, per_pair, 100.0); }, x);
}

TEST_CASE("gradcheck masked_softmax and mask_scores: positions, lengths, padding, empty rows",
          "[gradcheck][attention][mask]") {
  rng g(303);
  const auto s = randn(g, shape<dyn, dyn, dyn>{4, 3, 3});  // (batch 2 · heads 2, 3, 3)
  // Causal on per-head positions: head rows hold selected tokens, out of order.
  const auto pos = positions(4, 3, {4, 1, 7, 0, 2, 3, 9, 5, 6, 1, 8, 2});
  attention_mask<> causal{.causal = true, .query_positions = pos, .key_positions = pos};
  REQUIRE_GRADIENTS([&](auto s) { return masked_softmax(s, causal); }, s);
  // Lengths per batch row (shared by its 2 heads) at those positions; batch row 1 sees only position < 2.
  attention_mask<> lengths{.causal = true, .key_lengths = from_values<index_t>(shape<dyn>{2}, {8, 2}),
                           .query_positions = pos, .key_positions = pos};
  REQUIRE_GRADIENTS([&](auto s) { return masked_softmax(s, lengths); }, s);
  // Padding flags on the original sequence (batch, 10), read at the key positions.
  tensor<std::uint8_t, shape<dyn, dyn>> flags(shape<dyn, dyn>{2, 10});
  for (std::size_t i = 0; i < flags.size(); ++i) flags[i] = i % 3 == 0;
  attention_mask<> padded{.key_padding = flags, .key_positions = pos};
  REQUIRE_GRADIENTS([&](auto s) { return masked_softmax(s, padded); }, s);
  // Plain causal and key_lengths with an empty batch row: rows with nothing visible give 0.
  attention_mask<> empty{.causal = true, .key_lengths = from_values<index_t>(shape<dyn>{2}, {0, 2})};
  REQUIRE_GRADIENTS([&](auto s) { return masked_softmax(s, empty); }, s);
  // mask_scores then softmax, where every query sees some key.
  REQUIRE_GRADIENTS([&](auto s) { return softmax(mask_scores(s, attention_mask<>{.causal = true})); }, s);
}

TEST_CASE("gradcheck scaled_dot_product_attention: q, k, v, masks, scale, cross lengths",
          "[gradcheck][attention]") {
  rng g(304);
  const auto q = randn(g, shape<dyn, dyn, 4>{4, 3});  // (4, 3 queries, 4)
  const auto k = randn(g, shape<dyn, dyn, 4>{4, 5});  // (4, 5 keys, 4)
  const auto v = randn(g, shape<dyn, dyn, 2>{4, 5});  // (4, 5 keys, 2)
  REQUIRE_GRADIENTS([](auto q, auto k, auto v) { return scaled_dot_product_attention(q, k, v); }, q, k, v);
  // Queries at positions 2, 4, 6 of the keys' 0..4 and 0..8 (per batch row), with lengths.
  attention_mask<> m{.causal = true,
                     .key_lengths = from_values<index_t>(shape<dyn>{2}, {5, 3}),
                     .query_positions = positions(2, 3, {2, 4, 6, 0, 1, 8}),
                     .key_positions = positions(2, 5, {0, 1, 2, 3, 4, 0, 2, 4, 6, 8})};
  REQUIRE_GRADIENTS([&](auto q, auto k, auto v) { return scaled_dot_product_attention(q, k, v, m, 0.7); }, q, k,
                    v);
  // Self-attention of selected tokens with RoPE at their positions, per head.
  const auto x = randn(g, shape<dyn, dyn, dyn>{2, 3, 4});  // (1 batch · 2 heads, 3, 4)
  const auto pos = positions(2, 3, {6, 2, 3, 1, 5, 0});
  attention_mask<> sel{.causal = true, .query_positions = pos, .key_positions = pos};
  REQUIRE_GRADIENTS([&](auto x) {
    auto r = rope(x, pos);
    return scaled_dot_product_attention(r, r, x, sel);
  }, x);
}
