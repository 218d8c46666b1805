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
//
// Softmax and the top-k selection run as one kernel pass (softmax_top_k);
// the plan is moe::plan_from_choice (dispatch.hpp): a stable sort by expert,
// a histogram and a scan on the router's backend, no read back to the host
// unless a capacity factor is on (then one: the number of kept assignments).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string>

#include "../autograd/ops/activation.hpp"
#include "../autograd/ops/constant.hpp"
#include "../autograd/ops/matmul.hpp"
#include "../autograd/ops/reduce.hpp"
#include "../autograd/ops/top_k.hpp"
#include "../nn/init.hpp"
#include "aux_loss.hpp"
#include "dispatch.hpp"

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

  aux_loss_options aux() const noexcept {
    return {load_balance_weight, z_loss_weight, sequence_balance_weight, seq_len};
  }
};

/// Routes (T, D) tokens to k of E experts. D, E, K may be dyn (sizes at construction).
template <std::size_t D, std::size_t E, std::size_t K, class T = float, backend B = cpu>
class top_k_router {
 public:
  static constexpr std::size_t experts_extent = E;
  using value_type = T;

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

  /// Assignments each expert keeps for a batch of `tokens` (0: dropless).
  std::size_t capacity(std::size_t tokens) const noexcept {
    if (!(o_.capacity_factor > 0)) return 0;
    return static_cast<std::size_t>(std::ceil(o_.capacity_factor * double(tokens * k_) / double(experts())));
  }

  /// x (T, D) -> routing plan.
  template <class S>
  routing<T, B> route(const var<T, S, B>& x) {
    auto logits = router_logits(x);                                          // (T, E)
    auto [scores, vals, idx] = score_and_select(logits);                     // (T, E), (T, k), (T, k)
    auto gates = o_.renormalize ? div_cols(vals, sum<1>(vals)) : vals;       // (T, k)
    auto plan = plan_from_choice(idx, gates, experts(), capacity(x.extent(0)));
    plan.logits = shape_cast<shape<dyn, dyn>>(logits.value());
    add_aux_losses(plan, logits, scores, idx, o_.aux(), "top_k_router");
    return plan;
  }

  template <class V>
  void parameters(V&& visit) {
    visit("weight", w_);
  }

 private:
  // Scores and the top k: softmax fused with the selection, or sigmoid then top_k.
  template <class V>
  auto score_and_select(const V& logits) {
    if (o_.score == score_fn::softmax) return softmax_top_k(logits, k_);
    using choice = decltype(softmax_top_k(logits, k_));
    auto scores = sigmoid(logits);
    auto [vals, idx] = top_k(scores, k_);
    return choice{scores, vals, idx};
  }

  template <class S>
  auto router_logits(const var<T, S, B>& x) {
    if (!(training_ && o_.jitter > 0)) return add_noise(matmul(x, w_));
    auto u = uniform<T, B>(noise_, x.shape(), T(1 - o_.jitter), T(1 + o_.jitter));
    return add_noise(matmul(x * constant(u), w_));
  }
  template <class V>
  V add_noise(const V& logits) {
    if (!(training_ && o_.noise > 0)) return logits;
    return logits + constant(normal<T, B>(noise_, logits.shape(), T(0), T(o_.noise)));
  }

  parameter<T, shape<D, E>, B> w_;  // (D, E)
  top_k_options o_;
  std::size_t k_;
  rng noise_;
  bool training_ = true;
};

}  // namespace moekit::moe
