// moe::routing_stats: counts, first choices, logit sums and Gram matrix,
// usage and router-logit similarity (MC-SMoE), load-balance summary, reset,
// and that batches add up to one pass over all tokens.
#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>
#include <vector>

#include <moekit.hpp>
#include <moekit/moe.hpp>
#include <moekit/moe/stats.hpp>

using namespace moekit;

namespace {

// A plan by hand: tokens' logits (T, E) and kept assignments (token, expert)
// listed grouped by expert.
moe::routing<float> plan_of(std::size_t experts, const std::vector<float>& logits,
                            const std::vector<std::pair<index_t, index_t>>& assignments, std::size_t dropped = 0) {
  moe::routing<float> p;
  p.experts = experts;
  p.tokens = logits.size() / experts;
  p.logits = from_values<float>(shape<dyn, dyn>{p.tokens, experts}, logits);
  p.token = tensor<index_t, shape<dyn>>(shape<dyn>{assignments.size()});
  p.expert = tensor<index_t, shape<dyn>>(shape<dyn>{assignments.size()});
  p.offsets = zeros<index_t>(shape<dyn>{experts + 1});
  for (std::size_t a = 0; a < assignments.size(); ++a) {
    p.token[a] = assignments[a].first, p.expert[a] = assignments[a].second;
    ++p.offsets[std::size_t(assignments[a].second) + 1];
  }
  for (std::size_t e = 0; e < experts; ++e) p.offsets[e + 1] += p.offsets[e];
  p.dropped = dropped;
  return p;
}

}  // namespace

TEST_CASE("routing_stats accumulates counts, first choices and logits", "[moe][stats]") {
  // Batch 1: 3 tokens, 3 experts. Token 2 ties experts 0 and 2: the first counts.
  auto b1 = plan_of(3, {2, 1, 0,    //
                        0, 3, 1,    //
                        1, -1, 1},  //
                    {{0, 0}, {2, 0}, {1, 1}}, /*dropped=*/0);
  // Batch 2: 2 tokens; one assignment dropped by capacity.
  auto b2 = plan_of(3, {0, 0, 4,  //
                        1, 2, 0},
                    {{1, 1}, {0, 2}}, /*dropped=*/1);
  moe::routing_stats s;
  s.add(b1);
  s.add(b2);
  REQUIRE(s.experts() == 3);
  REQUIRE(s.tokens() == 5);
  REQUIRE(s.assignments() == 5);
  REQUIRE(s.dropped() == 1);
  REQUIRE(s.counts() == std::vector<std::size_t>{2, 2, 1});
  REQUIRE(s.first_choice_counts() == std::vector<std::size_t>{2, 2, 1});
  REQUIRE(s.logit_sums() == std::vector<double>{4, 5, 6});
  // Gram Σ_t H[t, i] H[t, j] over the five tokens, by hand.
  const std::vector<double> gram = {6, 3, 1,   //
                                    3, 15, 2,  //
                                    1, 2, 18};
  REQUIRE(s.logit_gram() == gram);
  REQUIRE(s.usage() == std::vector<double>{0.4, 0.4, 0.2});
  REQUIRE(s.selection_frequency() == std::vector<double>{0.4, 0.4, 0.2});
  const auto mean = s.mean_logits();
  REQUIRE(mean[0] == Approx(0.8));
  REQUIRE(mean[2] == Approx(1.2));

  // (cos + 1) / 2 of the logit columns.
  const auto sim = s.logit_similarity();
  auto expected = [&](std::size_t i, std::size_t j) {
    return (gram[i * 3 + j] / std::sqrt(gram[i * 3 + i] * gram[j * 3 + j]) + 1) / 2;
  };
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 3; ++j) {
      REQUIRE(sim[i * 3 + j] == Approx(expected(i, j)));
      REQUIRE(sim[i * 3 + j] == sim[j * 3 + i]);
    }
  REQUIRE(sim[0] == 1.0);
  REQUIRE(sim[1] == Approx((3 / std::sqrt(90.0) + 1) / 2));

  // Load: counts (2, 2, 1), mean 5/3.
  const auto lb = s.load_balance();
  REQUIRE(lb.mean == Approx(5.0 / 3));
  REQUIRE(lb.max == 2);
  REQUIRE(lb.min == 1);
  REQUIRE(lb.max_over_mean == Approx(1.2));
  const double sd = std::sqrt((2 * std::pow(2 - 5.0 / 3, 2) + std::pow(1 - 5.0 / 3, 2)) / 3);
  REQUIRE(lb.cv == Approx(sd / (5.0 / 3)));

  s.reset();
  REQUIRE(s.experts() == 3);
  REQUIRE(s.tokens() == 0);
  REQUIRE(s.dropped() == 0);
  REQUIRE(s.counts() == std::vector<std::size_t>{0, 0, 0});
  REQUIRE(s.first_choice_counts() == std::vector<std::size_t>{0, 0, 0});
  REQUIRE(s.logit_gram() == std::vector<double>(9, 0.0));
  REQUIRE(s.usage() == std::vector<double>{0, 0, 0});
  REQUIRE(s.load_balance().cv == 0);
  s.add(b2);
  REQUIRE(s.tokens() == 2);
  REQUIRE(s.first_choice_counts() == std::vector<std::size_t>{0, 1, 1});
}

TEST_CASE("routing_stats: a perfectly balanced load has cv 0 and max/mean 1", "[moe][stats]") {
  moe::routing_stats s(2);
  s.add(plan_of(2, {1, 0, 0, 1}, {{0, 0}, {1, 1}}));
  const auto lb = s.load_balance();
  REQUIRE(lb.cv == 0);
  REQUIRE(lb.max_over_mean == 1);
  // Opposite logit columns: cosine -1, similarity 0.
  s.add(plan_of(2, {1, -1}, {{0, 0}}));
  REQUIRE(s.logit_similarity()[1] == Approx((-1.0 / 2 + 1) / 2));
}

TEST_CASE("routing_stats over batches equals one pass over all tokens", "[moe][stats]") {
  rng g(17);
  moe::top_k_router<6, 5, 2> router(g);
  const auto x = normal<float>(g, shape<dyn, 6>{20});
  tape t;
  moe::routing_stats whole, parts(5);
  whole.add(router.route(t.input(x)));
  for (std::size_t begin : {0, 7, 15}) {
    const std::size_t end = begin == 15 ? 20 : (begin == 0 ? 7 : 15);
    tensor<float, shape<dyn, 6>> part(shape<dyn, 6>{end - begin});
    std::copy(x.data() + begin * 6, x.data() + end * 6, part.data());
    parts.add(router.route(t.input(part)));
  }
  REQUIRE(parts.tokens() == 20);
  REQUIRE(parts.counts() == whole.counts());
  REQUIRE(parts.first_choice_counts() == whole.first_choice_counts());
  for (std::size_t i = 0; i < 25; ++i) REQUIRE(parts.logit_gram()[i] == Approx(whole.logit_gram()[i]));
  // Dropless top-2: every token counted twice; the first choices are the top-1 picks.
  REQUIRE(std::accumulate(whole.counts().begin(), whole.counts().end(), std::size_t{0}) == 40);
  const auto freq = whole.selection_frequency();
  REQUIRE(std::accumulate(freq.begin(), freq.end(), 0.0) == Approx(2.0));
  const auto usage = whole.usage();
  REQUIRE(std::accumulate(usage.begin(), usage.end(), 0.0) == Approx(1.0));
}

TEST_CASE("routing_stats first choices ignore capacity drops", "[moe][stats]") {
  // All tokens prefer expert 0; capacity keeps 1 of 4: the load shows 1,
  // the first-choice usage still shows all 4.
  rng g(2);
  moe::top_k_router<2, 2, 1> router(g, {.capacity_factor = 0.5});
  router.parameters([](std::string_view, auto& w) {
    fill(w.value(), 0.0f);
    w.value()(0, 0) = w.value()(1, 0) = 1.0f;
  });
  tape t;
  moe::routing_stats s;
  s.add(router.route(t.input(ones<float>(shape<dyn, 2>{4}))));
  REQUIRE(s.counts() == std::vector<std::size_t>{1, 0});
  REQUIRE(s.dropped() == 3);
  REQUIRE(s.first_choice_counts() == std::vector<std::size_t>{4, 0});
  REQUIRE(s.usage() == std::vector<double>{1.0, 0.0});
}

TEST_CASE("routing_stats rejects plans it cannot use", "[moe][stats][errors]") {
  moe::routing_stats s(3);
  auto two_experts = plan_of(2, {1, 0}, {{0, 0}});
  REQUIRE_THROWS_AS(s.add(two_experts), value_error);
  REQUIRE_THROWS_WITH(s.add(two_experts), Catch::Contains("routing_stats") && Catch::Contains("2 experts"));
  auto no_logits = plan_of(3, {1, 0, 0}, {{0, 0}});
  no_logits.logits = {};
  REQUIRE_THROWS_WITH(s.add(no_logits), Catch::Contains("routing_stats") && Catch::Contains("logits"));
  REQUIRE(s.tokens() == 0);  // nothing half-added
}
