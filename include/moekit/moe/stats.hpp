// moekit/moe/stats.hpp — routing statistics of one MoE layer, accumulated over
// batches (a calibration set, a whole data set): what MC-SMoE's grouping and
// merging consume, and what a load-balance log line reports.
//
//   moe::routing_stats stats;
//   for (auto& batch : calibration) { mlp(batch); stats.add(mlp.last_routing()); }
//   auto f = stats.usage();               // (E) top-1 usage frequency, MC-SMoE's f[l, e]
//   auto s = stats.logit_similarity();    // (E·E) (cos(H[:, i], H[:, j]) + 1) / 2
//   auto lb = stats.load_balance();       // max/mean and coefficient of variation of the load
//
// Everything is kept as sums (counts, Σ logits, the Gram matrix Hᵀ·H of the
// router logits), so adding batches in any split gives the same statistics as
// one pass over all tokens, without storing the (tokens, E) logits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "routing.hpp"

namespace moekit::moe {

/// How evenly the kept assignments spread over the experts.
struct load_summary {
  double mean = 0;           // assignments per expert
  double max = 0;            // of the busiest expert
  double min = 0;            // of the idlest expert
  double max_over_mean = 0;  // 1 when perfectly balanced (0 when nothing was routed)
  double cv = 0;             // coefficient of variation: population std / mean
};

class routing_stats {
 public:
  /// Statistics for `experts` experts; 0 takes the count from the first plan.
  explicit routing_stats(std::size_t experts = 0) { resize(experts); }

  /// Adds one batch's plan. Needs the plan's router logits (T, E); throws
  /// value_error when they are missing or the expert count differs. A device
  /// plan's logits and offsets are copied to the host (statistics observe a
  /// step, outside it).
  template <class T, class B>
  void add(const routing<T, B>& plan) {
    if (experts_ == 0 && tokens_ == 0) resize(plan.experts);
    const std::size_t e = experts_;
    if (e == 0) throw value_error("routing_stats: a plan with no experts");
    if (plan.experts != e)
      throw value_error("routing_stats: plan has " + std::to_string(plan.experts) + " experts, statistics have " +
                        std::to_string(e));
    if (!plan.logits.defined() || plan.logits.extent(0) != plan.tokens || plan.logits.extent(1) != e)
      throw value_error("routing_stats: the plan needs router logits (" + std::to_string(plan.tokens) + ", " +
                        std::to_string(e) + ")");
    const auto counts = plan.counts();
    for (std::size_t x = 0; x < e; ++x) counts_[x] += counts[x];
    const auto logits = plan.logits.template to<cpu>();  // (T, E), the plan's own storage on the host
    for (std::size_t t = 0; t < plan.tokens; ++t) add_token_logits(logits.data() + t * e);
    tokens_ += plan.tokens;
    assignments_ += plan.assignments();
    dropped_ += plan.dropped;
  }

  void reset() {
    tokens_ = assignments_ = dropped_ = 0;
    std::fill(counts_.begin(), counts_.end(), 0);
    std::fill(first_choice_.begin(), first_choice_.end(), 0);
    std::fill(logit_sums_.begin(), logit_sums_.end(), 0.0);
    std::fill(gram_.begin(), gram_.end(), 0.0);
  }

  std::size_t experts() const noexcept { return experts_; }
  std::size_t tokens() const noexcept { return tokens_; }
  /// Kept assignments, over all experts.
  std::size_t assignments() const noexcept { return assignments_; }
  /// Assignments dropped by a capacity limit.
  std::size_t dropped() const noexcept { return dropped_; }

  /// (E) kept assignments per expert: the load each expert actually served.
  const std::vector<std::size_t>& counts() const noexcept { return counts_; }
  /// (E) tokens whose highest router logit is expert e (the lowest index on
  /// ties): the top-1 choice, whether or not capacity later dropped it.
  const std::vector<std::size_t>& first_choice_counts() const noexcept { return first_choice_; }
  /// (E) Σ over tokens of logits[:, e].
  const std::vector<double>& logit_sums() const noexcept { return logit_sums_; }
  /// (E·E, row-major) Σ over tokens of logits[:, i] · logits[:, j].
  const std::vector<double>& logit_gram() const noexcept { return gram_; }

  /// (E) first_choice_counts / tokens: MC-SMoE's usage frequency f[e].
  std::vector<double> usage() const { return per_token(first_choice_); }
  /// (E) counts / tokens: every kept selection counted (MC-SMoE's Mixtral
  /// variant counts both top-2 choices); sums to k for a dropless top-k router.
  std::vector<double> selection_frequency() const { return per_token(counts_); }
  /// (E) mean router logit of each expert.
  std::vector<double> mean_logits() const {
    std::vector<double> m(experts_, 0.0);
    if (tokens_) std::transform(logit_sums_.begin(), logit_sums_.end(), m.begin(), [&](double s) { return s / double(tokens_); });
    return m;
  }
  /// (E·E, row-major) (cos(H[:, i], H[:, j]) + 1) / 2 over all tokens' logits
  /// H: MC-SMoE's "router-logits" similarity, in [0, 1]. A column of zeros
  /// has cosine 0 with everything (similarity 0.5), and 1 with itself.
  std::vector<double> logit_similarity() const {
    const std::size_t e = experts_;
    std::vector<double> s(e * e, 0.5);
    for (std::size_t i = 0; i < e; ++i)
      for (std::size_t j = 0; j < e; ++j) {
        const double norms = std::sqrt(gram_[i * e + i] * gram_[j * e + j]);
        if (i == j) s[i * e + j] = 1.0;
        else if (norms > 0) s[i * e + j] = (gram_[i * e + j] / norms + 1.0) / 2.0;
      }
    return s;
  }

  /// Balance of the kept assignments over the experts.
  load_summary load_balance() const {
    load_summary r;
    if (experts_ == 0) return r;
    const auto [lo, hi] = std::minmax_element(counts_.begin(), counts_.end());
    r.mean = double(assignments_) / double(experts_);
    r.max = double(*hi), r.min = double(*lo);
    if (r.mean == 0) return r;
    double var = 0;
    for (auto c : counts_) var += (double(c) - r.mean) * (double(c) - r.mean);
    r.max_over_mean = r.max / r.mean;
    r.cv = std::sqrt(var / double(experts_)) / r.mean;
    return r;
  }

 private:
  void resize(std::size_t e) {
    experts_ = e;
    counts_.assign(e, 0), first_choice_.assign(e, 0);
    logit_sums_.assign(e, 0.0), gram_.assign(e * e, 0.0);
  }

  template <class T>
  void add_token_logits(const T* row) {
    const std::size_t e = experts_;
    ++first_choice_[static_cast<std::size_t>(std::max_element(row, row + e) - row)];
    for (std::size_t i = 0; i < e; ++i) {
      const double li = static_cast<double>(row[i]);
      logit_sums_[i] += li;
      for (std::size_t j = 0; j < e; ++j) gram_[i * e + j] += li * static_cast<double>(row[j]);
    }
  }

  std::vector<double> per_token(const std::vector<std::size_t>& c) const {
    std::vector<double> f(experts_, 0.0);
    if (tokens_) std::transform(c.begin(), c.end(), f.begin(), [&](std::size_t n) { return double(n) / double(tokens_); });
    return f;
  }

  std::size_t experts_ = 0, tokens_ = 0, assignments_ = 0, dropped_ = 0;
  std::vector<std::size_t> counts_, first_choice_;
  std::vector<double> logit_sums_, gram_;
};

}  // namespace moekit::moe
