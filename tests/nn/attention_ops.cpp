// The public attention ops that nn::multi_head_attention is built on and that
// attention over selected tokens (UoE's per-head selection) composes:
// split_heads / merge_heads, rope at given positions, attention_mask with
// positions (causal on original positions, lengths, padding), masked_softmax,
// mask_scores and scaled_dot_product_attention — forward values against
// reference loops written out here, error messages, and emulated_device
// against cpu forward and backward.
#include <catch2/catch.hpp>

#include <moekit/autograd/ops/attention.hpp>
#include <moekit/autograd/ops/attention_mask.hpp>
#include <moekit/autograd/ops/heads.hpp>
#include <moekit/autograd/ops/reduce.hpp>
#include <moekit/autograd/ops/rope.hpp>
#include <moekit/autograd/ops/softmax.hpp>
#include <moekit/backend/emulated.hpp>
#include <moekit/tensor/ops/creation.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

using namespace moekit;

// Static heads give static head extents.
static_assert(std::is_same_v<decltype(split_heads<2>(std::declval<const tensor<float, shape<dyn, dyn, 8>>&>())),
                             tensor<float, shape<dyn, dyn, 4>>>);
static_assert(std::is_same_v<decltype(merge_heads<2>(std::declval<const tensor<float, shape<6, 5, 4>>&>())),
                             tensor<float, shape<3, 5, 8>>>);

namespace {

using rows_t = shape<dyn, dyn, dyn>;

/// x (rows, n, d) -> (rows, m, d) with out[r, i] = x[r, pick(r, i)]: a per-row token selection.
tensor<double, rows_t> select_rows(const tensor<double, rows_t>& x, const std::vector<std::vector<index_t>>& pick) {
  const std::size_t rows = x.extent(0), m = pick[0].size(), d = x.extent(2);
  tensor<double, rows_t> out(rows_t{rows, m, d});
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < d; ++j) out(r, i, j) = x(r, static_cast<std::size_t>(pick[r][i]), j);
  return out;
}
/// The per-row selection as a positions tensor (rows, m).
tensor<index_t, shape<dyn, dyn>> positions_of(const std::vector<std::vector<index_t>>& pick) {
  tensor<index_t, shape<dyn, dyn>> p(shape<dyn, dyn>{pick.size(), pick[0].size()});
  for (std::size_t r = 0; r < pick.size(); ++r)
    for (std::size_t i = 0; i < pick[r].size(); ++i) p(r, i) = pick[r][i];
  return p;
}

template <class T, class S>
var<T, S> constant(tensor<T, S> t) {
  return var<T, S>(std::move(t), nullptr, nullptr);
}

/// A tensor of any backend copied to the host, flattened to double.
template <class T, class S, class B>
std::vector<double> host_flat(const tensor<T, S, B>& x) {
  REQUIRE(x.defined());
  const auto h = x.template to<cpu>();
  std::vector<double> out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = static_cast<double>(h[i]);
  return out;
}

}  // namespace

// ---- split_heads / merge_heads ---------------------------------------------------------

TEST_CASE("split_heads: head h of batch row b is row b·H + h; merge_heads inverts it", "[nn][attention][heads]") {
  rng g(41);
  const auto x = normal<double>(g, shape<dyn, dyn, dyn>{2, 3, 6});  // (2, 3, 6)
  const auto s = split_heads(x, 3);                                 // (6, 3, 2)
  REQUIRE(s.extent(0) == 6);
  REQUIRE(s.extent(1) == 3);
  REQUIRE(s.extent(2) == 2);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t h = 0; h < 3; ++h)
      for (std::size_t t = 0; t < 3; ++t)
        for (std::size_t j = 0; j < 2; ++j) REQUIRE(s(b * 3 + h, t, j) == x(b, t, h * 2 + j));
  const auto back = merge_heads(s, 3);
  REQUIRE(back.shape() == x.shape());
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(back[i] == x[i]);
  // Static heads: the same values, static head extent.
  const auto xs = normal<double>(g, shape<2, 4, 8>{});
  const auto ss = split_heads<4>(xs);
  static_assert(std::is_same_v<decltype(ss), const tensor<double, shape<8, 4, 2>>>);
  const auto bs = merge_heads<4>(ss);
  static_assert(std::is_same_v<decltype(bs), const tensor<double, shape<2, 4, 8>>>);
  for (std::size_t i = 0; i < xs.size(); ++i) REQUIRE(bs[i] == xs[i]);
  // On the tape the round trip passes the gradient through unchanged.
  tape t;
  auto v = t.variable(x);
  auto y = merge_heads(split_heads(v, 2), 2);
  t.backward(sum(y * constant(x)));
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(v.grad()[i] == x[i]);
}

TEST_CASE("split_heads, merge_heads: extents that do not divide are shape errors naming the op",
          "[nn][attention][heads]") {
  const auto x = zeros<float>(shape<dyn, dyn, dyn>{2, 3, 6});
  REQUIRE_THROWS_WITH(split_heads(x, 4), Catch::Contains("split_heads") && Catch::Contains("(2, 3, 6)"));
  REQUIRE_THROWS_AS(split_heads(x, 0), shape_error);
  REQUIRE_THROWS_AS(split_heads<3>(x, 2), shape_error);
  REQUIRE_THROWS_WITH(merge_heads(x, 4), Catch::Contains("merge_heads") && Catch::Contains("(2, 3, 6)"));
}

// ---- rope at positions ----------------------------------------------------------------

TEST_CASE("rope at positions 0..n-1 (shared or per row) is exactly the plain rope", "[nn][rope]") {
  rng g(42);
  const auto x = normal<double>(g, shape<dyn, dyn, dyn>{4, 5, 6});  // (4 rows, 5, 6)
  const auto plain = rope(x, 0, 500.0);
  tensor<index_t, shape<dyn>> shared(shape<dyn>{5});
  std::iota(shared.span().begin(), shared.span().end(), 0);
  tensor<index_t, shape<dyn, dyn>> per_row(shape<dyn, dyn>{4, 5});
  for (std::size_t i = 0; i < per_row.size(); ++i) per_row[i] = static_cast<index_t>(i % 5);
  const auto a = rope(x, shared, 500.0), b = rope(x, per_row, 500.0);
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE(a[i] == plain[i]);
    REQUIRE(b[i] == plain[i]);
  }
  // Offsets are positions too, and the backward rotates back.
  for (auto& p : shared.span()) p += 7;
  const auto c = rope(x, shared, 500.0), d = rope(x, 7, 500.0);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(c[i] == d[i]);
  const auto undone = rope_backward(c, shared, 500.0);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(undone[i] == Approx(x[i]).margin(1e-12));
}

TEST_CASE("rope at per-row positions rotates each selected token as at its original place", "[nn][rope]") {
  rng g(43);
  const auto x = normal<double>(g, shape<dyn, dyn, dyn>{3, 8, 4});  // (3 rows, 8 tokens, 4)
  const std::vector<std::vector<index_t>> pick{{5, 1, 6}, {0, 7, 2}, {3, 3, 4}};
  const auto full = rope(x);  // at positions 0..7
  const auto sel = rope(select_rows(x, pick), positions_of(pick));
  const auto ref = select_rows(full, pick);
  for (std::size_t i = 0; i < ref.size(); ++i) REQUIRE(sel[i] == ref[i]);
  // (R, seq) with R dividing the rows: rows 0..1 and 2..3 of (4, 3, 4) share a positions row.
  const auto y = normal<double>(g, shape<dyn, dyn, dyn>{4, 3, 4});
  const auto grouped = rope(y, from_values<index_t>(shape<dyn, dyn>{2, 3}, {4, 0, 2, 1, 1, 9}));
  const auto expanded = rope(y, from_values<index_t>(shape<dyn, dyn>{4, 3}, {4, 0, 2, 4, 0, 2, 1, 1, 9, 1, 1, 9}));
  for (std::size_t i = 0; i < y.size(); ++i) REQUIRE(grouped[i] == expanded[i]);
  REQUIRE_THROWS_WITH(rope(y, from_values<index_t>(shape<dyn, dyn>{3, 3}, {0, 1, 2, 0, 1, 2, 0, 1, 2})),
                      Catch::Contains("rope") && Catch::Contains("(3, 3)") && Catch::Contains("(4, 3, 4)"));
  REQUIRE_THROWS_AS(rope(y, from_values<index_t>(shape<dyn>{2}, {0, 1})), shape_error);
}

// ---- masks -------------------------------------------------------------------------------

TEST_CASE("attention_mask_bias and attention_row_keep: causal on positions, lengths, padding",
          "[nn][attention][mask]") {
  // 2 rows (one batch row per row), 2 queries at positions (5, 1) / (0, 2), 3 keys at (0, 3, 6) / (2, 1, 0).
  attention_mask<> m{.causal = true,
                     .key_lengths = from_values<index_t>(shape<dyn>{2}, {4, 9}),
                     .query_positions = from_values<index_t>(shape<dyn, dyn>{2, 2}, {5, 1, 0, 2}),
                     .key_positions = from_values<index_t>(shape<dyn, dyn>{2, 3}, {0, 3, 6, 2, 1, 0})};
  const auto bias = attention_mask_bias<double>(m, 2, 2, 3);
  const auto keep = attention_row_keep<double>(m, 2, 2, 3);
  const double inf = INFINITY;
  // Row 0: query 5 sees keys 0, 3 (6 is in the future); query 1 sees key 0. Length 4 hides key 6 too.
  // Row 1: query 0 sees key 0 only; query 2 sees all.
  const std::vector<double> expected{0, 0, -inf, 0, -inf, -inf, -inf, -inf, 0, 0, 0, 0};
  for (std::size_t i = 0; i < expected.size(); ++i) REQUIRE(bias[i] == expected[i]);
  for (std::size_t i = 0; i < keep.size(); ++i) REQUIRE(keep[i] == 1.0);
  // Padding flags are read at the key's position in the original sequence.
  attention_mask<> p{.key_padding = from_values<std::uint8_t>(shape<dyn, dyn>{1, 7}, {1, 0, 0, 0, 0, 0, 1}),
                     .key_positions = m.key_positions};
  const auto pb = attention_mask_bias<double>(p, 2, 2, 3);
  const std::vector<double> padded{-inf, 0, -inf, -inf, 0, -inf, 0, 0, -inf, 0, 0, -inf};
  for (std::size_t i = 0; i < padded.size(); ++i) REQUIRE(pb[i] == padded[i]);
  // A query that sees nothing: keep 0, bias 0 across its row.
  attention_mask<> none{.causal = true, .query_positions = from_values<index_t>(shape<dyn, dyn>{1, 1}, {1}),
                        .key_positions = from_values<index_t>(shape<dyn, dyn>{1, 2}, {2, 3})};
  REQUIRE(attention_row_keep<double>(none, 1, 1, 2)[0] == 0.0);
  REQUIRE(attention_mask_bias<double>(none, 1, 1, 2)[0] == 0.0);
}

TEST_CASE("masked_softmax: hidden keys weigh 0, a row that sees nothing is 0 (not NaN), no mask is softmax",
          "[nn][attention][mask]") {
  rng g(44);
  const auto s = normal<double>(g, rows_t{4, 3, 3});  // (2 batch · 2 heads, 3, 3)
  const auto plain = softmax(s);
  const auto none = masked_softmax(s, attention_mask<>{});
  for (std::size_t i = 0; i < s.size(); ++i) REQUIRE(none[i] == plain[i]);
  attention_mask<> m{.causal = true, .key_lengths = from_values<index_t>(shape<dyn>{2}, {0, 2})};
  const auto y = masked_softmax(s, m);
  for (std::size_t r = 0; r < 4; ++r)
    for (std::size_t q = 0; q < 3; ++q) {
      double total = 0;
      for (std::size_t k = 0; k < 3; ++k) {
        REQUIRE(std::isfinite(y(r, q, k)));
        const bool hidden = k > q || (r < 2 ? true : k >= 2);  // batch row 0 (rows 0, 1) has length 0
        if (hidden) REQUIRE(y(r, q, k) == 0.0);
        total += y(r, q, k);
      }
      REQUIRE(total == Approx(r < 2 ? 0.0 : 1.0).margin(1e-15));
    }
  // The same through mask_scores, softmax and the keep flags, where rows are not empty.
  const auto z = softmax(mask_scores(s, m));
  for (std::size_t i = 4 * 9 / 2; i < s.size(); ++i) REQUIRE(z[i] == Approx(y[i]).margin(1e-15));
}

TEST_CASE("attention masks: shapes that do not fit the scores and bad host values are errors",
          "[nn][attention][mask]") {
  const auto s = zeros<double>(rows_t{4, 2, 3});
  REQUIRE_THROWS_WITH(masked_softmax(s, attention_mask<>{.key_lengths = zeros<index_t>(shape<dyn>{3})}),
                      Catch::Contains("masked_softmax") && Catch::Contains("key_lengths") &&
                          Catch::Contains("(4, 2, 3)"));
  REQUIRE_THROWS_AS(masked_softmax(s, attention_mask<>{.key_padding = zeros<std::uint8_t>(shape<dyn, dyn>{2, 2})}),
                    shape_error);
  REQUIRE_THROWS_AS(masked_softmax(s, attention_mask<>{.causal = true,
                                                       .query_positions = zeros<index_t>(shape<dyn, dyn>{4, 3})}),
                    shape_error);
  REQUIRE_THROWS_WITH(
      masked_softmax(s, attention_mask<>{.causal = true,
                                         .key_positions = from_values<index_t>(shape<dyn, dyn>{1, 3}, {0, -2, 1})}),
      Catch::Contains("negative position -2"));
  REQUIRE_THROWS_AS(masked_softmax(s, attention_mask<>{.key_lengths = from_values<index_t>(shape<dyn>{2}, {1, -1})}),
                    value_error);
  REQUIRE_THROWS_WITH(
      masked_softmax(s, attention_mask<>{.key_padding = zeros<std::uint8_t>(shape<dyn, dyn>{2, 4}),
                                         .key_positions = from_values<index_t>(shape<dyn, dyn>{1, 3}, {0, 4, 1})}),
      Catch::Contains("key position 4") && Catch::Contains("(2, 4)"));
}

// ---- scaled_dot_product_attention ---------------------------------------------------------

TEST_CASE("scaled_dot_product_attention: causal at positions of a permuted subset = causal on the subset in order",
          "[nn][attention]") {
  rng g(45);
  const std::size_t rows = 4, n = 9, d = 4;
  const auto q = normal<double>(g, rows_t{rows, n, d});
  const auto k = normal<double>(g, rows_t{rows, n, d});
  const auto v = normal<double>(g, rows_t{rows, n, d});
  // Per head (row) a different subset of 5 tokens, in a scrambled order.
  const std::vector<std::vector<index_t>> pick{{7, 2, 5, 0, 3}, {1, 8, 4, 6, 2}, {3, 4, 5, 6, 7}, {8, 0, 1, 7, 4}};
  std::vector<std::vector<index_t>> sorted = pick;
  for (auto& s : sorted) std::sort(s.begin(), s.end());
  const auto pos = positions_of(pick);
  tape t;
  auto rq = rope(t.input(select_rows(q, pick)), pos), rk = rope(t.input(select_rows(k, pick)), pos);
  const auto y = scaled_dot_product_attention(rq, rk, t.input(select_rows(v, pick)),
                                              {.causal = true, .query_positions = pos, .key_positions = pos})
                     .value();
  // Reference: the subset in original order, plain causal attention, RoPE at the original positions.
  const auto sorted_pos = positions_of(sorted);
  auto sq = rope(t.input(select_rows(q, sorted)), sorted_pos), sk = rope(t.input(select_rows(k, sorted)), sorted_pos);
  const auto ref =
      scaled_dot_product_attention(sq, sk, t.input(select_rows(v, sorted)), {.causal = true}).value();
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t i = 0; i < pick[r].size(); ++i) {
      const auto at = static_cast<std::size_t>(std::find(sorted[r].begin(), sorted[r].end(), pick[r][i]) -
                                               sorted[r].begin());
      for (std::size_t j = 0; j < d; ++j) REQUIRE(y(r, i, j) == Approx(ref(r, at, j)).epsilon(1e-12));
    }
  // With RoPE at positions 0..n-1 the selection of all tokens is full causal attention with plain RoPE.
  const auto full = scaled_dot_product_attention(rope(t.input(q)), rope(t.input(k)), t.input(v), {.causal = true});
  tensor<index_t, shape<dyn>> all(shape<dyn>{n});
  std::iota(all.span().begin(), all.span().end(), 0);
  const auto all_rows = from_values<index_t>(shape<dyn, dyn>{1, n}, {0, 1, 2, 3, 4, 5, 6, 7, 8});
  const auto at_positions = scaled_dot_product_attention(
      rope(t.input(q), all), rope(t.input(k), all), t.input(v),
      {.causal = true, .query_positions = all_rows, .key_positions = all_rows});
  for (std::size_t i = 0; i < full.size(); ++i) REQUIRE(at_positions.value()[i] == full.value()[i]);
}

TEST_CASE("scaled_dot_product_attention: the textbook formula, a given scale, and bad operands",
          "[nn][attention]") {
  rng g(46);
  const auto q = normal<double>(g, rows_t{2, 3, 4});
  const auto k = normal<double>(g, rows_t{2, 5, 4});
  const auto v = normal<double>(g, rows_t{2, 5, 3});
  tape t;
  for (double scale : {0.5, 1 / std::sqrt(4.0)}) {
    const auto y = scale == 0.5 ? scaled_dot_product_attention(t.input(q), t.input(k), t.input(v), {}, 0.5).value()
                                : scaled_dot_product_attention(t.input(q), t.input(k), t.input(v)).value();
    for (std::size_t r = 0; r < 2; ++r)
      for (std::size_t i = 0; i < 3; ++i) {
        std::vector<double> w(5);
        double m = -INFINITY, total = 0;
        for (std::size_t j = 0; j < 5; ++j) {
          w[j] = 0;
          for (std::size_t c = 0; c < 4; ++c) w[j] += q(r, i, c) * k(r, j, c);
          w[j] *= scale;
          m = std::max(m, w[j]);
        }
        for (auto& x : w) total += x = std::exp(x - m);
        for (std::size_t c = 0; c < 3; ++c) {
          double out = 0;
          for (std::size_t j = 0; j < 5; ++j) out += w[j] / total * v(r, j, c);
          REQUIRE(y(r, i, c) == Approx(out).epsilon(1e-12));
        }
      }
  }
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(t.input(q), t.input(k), t.input(q)),
                      Catch::Contains("scaled_dot_product_attention") && Catch::Contains("(2, 3, 4)"));
  REQUIRE_THROWS_AS(scaled_dot_product_attention(t.input(q), t.input(v), t.input(v)), shape_error);
}

// ---- emulated_device = cpu ------------------------------------------------------------------

TEST_CASE("attention ops on emulated_device give the cpu results, forward and backward",
          "[nn][attention][emulated]") {
  auto run = []<class B>() {
    rng g(47);
    tape t;
    // (batch 2, 6 tokens, 2 heads · 4)
    auto x = t.variable(normal<double>(g, shape<dyn, dyn, dyn>{2, 6, 8}).template to<B>());
    auto wk = t.variable(normal<double>(g, shape<dyn, dyn, dyn>{2, 6, 8}).template to<B>());
    auto h = split_heads<2>(x);   // (4, 6, 4)
    auto hk = split_heads(wk, 2);  // (4, 6, 4)
    // Each head keeps 4 tokens, scrambled; RoPE and causal mask at their positions.
    const auto pick = from_values<index_t>(shape<dyn, dyn>{4, 4}, {5, 0, 3, 2, 1, 4, 0, 5, 2, 3, 4, 5, 0, 5, 1, 3});
    const auto hq_host = h.value().template to<cpu>(), hk_host = hk.value().template to<cpu>();
    tensor<double, rows_t> q_sel(rows_t{4, 4, 4}), k_sel(rows_t{4, 4, 4});
    for (std::size_t r = 0; r < 4; ++r)
      for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t j = 0; j < 4; ++j) {
          q_sel(r, i, j) = hq_host(r, static_cast<std::size_t>(pick(r, i)), j);
          k_sel(r, i, j) = hk_host(r, static_cast<std::size_t>(pick(r, i)), j);
        }
    auto qv = t.variable(q_sel.template to<B>()), kv = t.variable(k_sel.template to<B>());
    const auto pos = pick.template to<B>();
    tensor<std::uint8_t, shape<dyn, dyn>> flags(shape<dyn, dyn>{2, 6});
    for (std::size_t i = 0; i < flags.size(); ++i) flags[i] = i % 5 == 4;
    attention_mask<B> m{.causal = true,
                        .key_lengths = from_values<index_t>(shape<dyn>{2}, {6, 3}).template to<B>(),
                        .key_padding = flags.template to<B>(),
                        .query_positions = pos,
                        .key_positions = pos};
    auto rq = rope(qv, pos, 100.0), rk = rope(kv, pos, 100.0);
    auto a = scaled_dot_product_attention(rq, rk, kv, m);  // (4, 4, 4)
    // Whole-sequence attention with a host mask (checked on the host for a device backend).
    attention_mask<cpu> host_mask{.causal = true, .key_lengths = from_values<index_t>(shape<dyn>{2}, {0, 4})};
    auto b = scaled_dot_product_attention(rope(h, 0, 100.0), rope(hk, 0, 100.0), hk, host_mask);
    auto merged = merge_heads(b, 2);  // (2, 6, 8)
    auto c = mask_scores(bmm<trans::b>(h, hk), attention_mask<B>{.causal = true});
    auto loss = sum(a * a) + sum(merged * merged) + sum(softmax(c) * softmax(c));
    t.backward(loss);
    return std::vector<std::vector<double>>{host_flat(a.value()), host_flat(merged.value()),
                                            host_flat(c.value()), host_flat(x.grad()),
                                            host_flat(wk.grad()), host_flat(qv.grad()), host_flat(kv.grad())};
  };
  const auto host = run.template operator()<cpu>();
  const auto device = run.template operator()<emulated_device>();
  REQUIRE(host.size() == device.size());
  for (std::size_t k = 0; k < host.size(); ++k) {
    INFO("result " << k);
    REQUIRE(host[k].size() == device[k].size());
    for (std::size_t i = 0; i < host[k].size(); ++i) {
      INFO("element " << i);
      if (std::isinf(host[k][i])) REQUIRE(device[k][i] == host[k][i]);
      else REQUIRE(device[k][i] == Approx(host[k][i]).epsilon(1e-12).margin(1e-12));
    }
  }
}
