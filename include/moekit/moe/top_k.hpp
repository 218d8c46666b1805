// moekit/moe/top_k.hpp — the token-choice router: each token picks its k
// highest-scoring experts (Switch: k = 1, GShard/Mixtral: k = 2).
//
//   logits = x·W (+ noise in training)            // (T, E)
//   scores = softmax(logits) or sigmoid(logits)   // (T, E)
//   gates, experts = top_k(scores, k)             // (T, k), renormalised to sum 1 if asked
//
// Assignments are ordered by expert, then slot (all first choices before
// second choices), then token; with a capacity factor each expert keeps the
// first ceil(cf · T · k / E) of its assignments and drops the rest, as Switch
// and GShard do. Dropless by default.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../autograd/ops/index.hpp"
#include "../autograd/ops/matmul.hpp"
#include "../autograd/ops/softmax.hpp"
#include "../autograd/ops/top_k.hpp"
#include "../nn/init.hpp"
#include "aux_loss.hpp"
#include "routing.hpp"

namespace moekit::moe {

enum class score_fn { softmax, sigmoid };

struct top_k_options {
  score_fn score = score_fn::softmax;
  bool renormalize = true;          // the k gates of a token sum to 1
  double capacity_factor = 0;       // 0: dropless; else keep ceil(cf · T · k / E) per expert
  double jitter = 0;                // training: x ⊙ U(1 - jitter, 1 + jitter) before the router (Switch)
  double noise = 0;                 // training: logits + N(0, noise²) (noisy top-k)
  double load_balance_weight = 0;   // Switch load-balancing loss
  double z_loss_weight = 0;         // router z-loss
  double sequence_balance_weight = 0;  // sequence-level balance (needs seq_len)
  std::size_t seq_len = 0;          // tokens per sequence, for the sequence-level loss
  std::uint64_t seed = 0x7e57;      // noise and jitter stream
};

namespace detail {

/// Builds the assignment order of a top-k choice: (expert, slot, token), then
/// applies the capacity. Fills plan.token/expert/offsets and returns, for each
/// kept assignment, its index t·k + j into the (T, k) gates.
///
/// A counting sort: one pass counts each expert's assignments, a second walks
/// them slot-major (all first choices, then all second choices, ...) and
/// writes each straight to its place, so no comparison sort and no staging copies.
template <class T, class B, class SI>
tensor<index_t, shape<dyn>, B> order_assignments(routing<T, B>& plan, const tensor<index_t, SI, B>& idx,
                                                 std::size_t capacity) {
  const std::size_t tokens = idx.extent(0), k = idx.extent(1), n = tokens * k, e = plan.experts;
  const index_t* chosen = idx.data();  // (T, k) row-major
  std::vector<std::size_t> seen(e, 0);  // per expert: its assignments counted, then placed
  for (std::size_t i = 0; i < n; ++i) {
    const auto x = static_cast<std::size_t>(chosen[i]);
    if (x >= e)
      throw value_error("top_k_router: expert index " + std::to_string(chosen[i]) + " out of range [0, " +
                        std::to_string(e) + ")");
    ++seen[x];
  }
  plan.offsets = offsets_tensor(shape<dyn>{e + 1});
  plan.offsets[0] = 0;
  for (std::size_t x = 0; x < e; ++x) {
    const std::size_t kept = capacity ? std::min(seen[x], capacity) : seen[x];
    plan.offsets[x + 1] = plan.offsets[x] + static_cast<index_t>(kept);
    seen[x] = 0;
  }
  const auto total = static_cast<std::size_t>(plan.offsets[e]);
  plan.dropped = n - total;
  plan.token = tensor<index_t, shape<dyn>, B>(shape<dyn>{total});
  plan.expert = tensor<index_t, shape<dyn>, B>(shape<dyn>{total});
  tensor<index_t, shape<dyn>, B> slot_index(shape<dyn>{total});
  for (std::size_t j = 0; j < k; ++j)
    for (std::size_t t = 0; t < tokens; ++t) {
      const auto x = static_cast<std::size_t>(chosen[t * k + j]);
      const std::size_t rank = seen[x]++;  // its position among expert x's assignments
      if (capacity && rank >= capacity) continue;
      const auto at = static_cast<std::size_t>(plan.offsets[x]) + rank;
      plan.token[at] = static_cast<index_t>(t);
      plan.expert[at] = static_cast<index_t>(x);
      slot_index[at] = static_cast<index_t>(t * k + j);
    }
  return slot_index;
}

/// Assignments per expert, and per (sequence, expert) when seq_len > 0.
template <class B, class SI>
std::vector<std::size_t> expert_counts(const tensor<index_t, SI, B>& idx, std::size_t experts,
                                       std::size_t seq_len = 0) {
  const std::size_t tokens = idx.extent(0), k = idx.extent(1);
  const std::size_t seqs = seq_len ? tokens / seq_len : 1;
  std::vector<std::size_t> counts(seqs * experts, 0);
  for (std::size_t t = 0; t < tokens; ++t)
    for (std::size_t j = 0; j < k; ++j)
      ++counts[(seq_len ? t / seq_len : 0) * experts + static_cast<std::size_t>(idx(t, j))];
  return counts;
}

}  // namespace detail

/// Routes (T, D) tokens to k of E experts. D, E, K may be dyn (sizes at construction).
template <std::size_t D, std::size_t E, std::size_t K, class T = float, backend B = cpu>
class top_k_router {
 public:
  static constexpr std::size_t experts_extent = E;

  explicit top_k_router(rng& g, top_k_options o = {}, std::size_t d = D, std::size_t e = E, std::size_t k = K)
      : w_(nn::init_weight<T, B>(g, shape<D, E>::from_extents(std::array{d, e}, "top_k_router"), d, e,
                                 nn::init::pytorch_default)),
        o_(o), k_(k), noise_(o.seed) {
    if (k == 0 || k > e)
      throw value_error("top_k_router: k = " + std::to_string(k) + " must be in [1, " + std::to_string(e) + "]");
    if (o.capacity_factor < 0) throw value_error("top_k_router: capacity_factor must be >= 0");
  }

  std::size_t experts() const noexcept { return w_.extent(1); }
  std::size_t k() const noexcept { return k_; }
  void train(bool on = true) noexcept { training_ = on; }
  bool training() const noexcept { return training_; }
  const top_k_options& options() const noexcept { return o_; }

  /// x (T, D) -> routing plan.
  template <class S>
  routing<T, B> route(const var<T, S, B>& x) {
    const std::size_t tokens = x.extent(0), e = experts();
    routing<T, B> plan;
    plan.tokens = tokens, plan.experts = e;
    auto logits = router_logits(x);  // (T, E)
    plan.logits = shape_cast<shape<dyn, dyn>>(logits.value());
    auto scores = o_.score == score_fn::softmax ? softmax(logits) : sigmoid(logits);  // (T, E)
    auto [vals, idx] = top_k(scores, k_);                                             // (T, k)
    auto gates = o_.renormalize ? div_cols(vals, sum<1>(vals)) : vals;                // (T, k)
    const std::size_t capacity =
        o_.capacity_factor > 0 ? static_cast<std::size_t>(std::ceil(o_.capacity_factor * double(tokens * k_) / double(e))) : 0;
    auto slot = detail::order_assignments(plan, idx, capacity);                        // (A)
    auto flat = reshape(gates, shape<dyn, 1>{tokens * k_});                            // (T·k, 1)
    plan.gate = reshape(gather_rows(flat, slot), shape<dyn>{slot.size()});            // (A)
    add_aux_losses(plan, logits, scores, idx);
    return plan;
  }

  template <class V>
  void parameters(V&& visit) {
    visit("weight", w_);
  }

 private:
  template <class S>
  auto router_logits(const var<T, S, B>& x) {
    if (!(training_ && o_.jitter > 0)) return add_noise(matmul(x, w_));
    auto u = uniform<T, B>(noise_, x.shape(), T(1 - o_.jitter), T(1 + o_.jitter));
    return add_noise(matmul(x * detail::constant_like(x, u), w_));
  }
  template <class V>
  V add_noise(const V& logits) {
    if (!(training_ && o_.noise > 0)) return logits;
    return logits + detail::constant_like(logits, normal<T, B>(noise_, logits.shape(), T(0), T(o_.noise)));
  }

  template <class VL, class VS, class SI>
  void add_aux_losses(routing<T, B>& plan, const VL& logits, const VS& scores, const tensor<index_t, SI, B>& idx) {
    auto add = [&](const char* name, double weight, const var<T, scalar_shape, B>& term) {
      plan.aux_terms.push_back({name, weight, static_cast<double>(term.value()[0])});
      auto weighted = term * static_cast<T>(weight);
      plan.aux_loss = plan.aux_loss.value().defined() ? plan.aux_loss + weighted : weighted;
    };
    if (o_.load_balance_weight > 0)
      add("load_balance", o_.load_balance_weight,
          load_balance_loss(scores, detail::expert_counts(idx, plan.experts), idx.size()));
    if (o_.z_loss_weight > 0) add("z_loss", o_.z_loss_weight, z_loss(logits));
    if (o_.sequence_balance_weight > 0) {
      if (o_.seq_len == 0 || plan.tokens % o_.seq_len != 0)
        throw value_error("top_k_router: sequence_balance_weight needs seq_len dividing the token count " +
                          std::to_string(plan.tokens));
      add("sequence_balance", o_.sequence_balance_weight,
          sequence_balance_loss(scores, detail::expert_counts(idx, plan.experts, o_.seq_len), o_.seq_len, k_));
    }
  }

  parameter<T, shape<D, E>, B> w_;  // (D, E)
  top_k_options o_;
  std::size_t k_;
  rng noise_;
  bool training_ = true;
};

}  // namespace moekit::moe
