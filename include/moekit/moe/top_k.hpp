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
// Softmax and the top-k selection run as one kernel pass (softmax_top_k_rows).
// The order is built by a counting sort where the host can read the choice
// (cpu), and on a device by a stable sort_pairs, a histogram and a scan
// (order_assignments_on_device): the same plan, and no read back to the host
// unless a capacity factor is on (then one: the number of kept assignments).
#pragma once

#include <algorithm>
#include <array>
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

/// Builds the assignment order of a top-k choice on the host: (expert, slot,
/// token), then applies the capacity. Fills plan.token/expert/offsets/dropped
/// and returns, for each kept assignment, its index t·k + j into the (T, k) gates.
///
/// A counting sort: one pass counts each expert's assignments, a second walks
/// them slot-major (all first choices, then all second choices, ...) and
/// writes each straight to its place, so no comparison sort and no staging copies.
template <class T, class B, class SI>
tensor<index_t, shape<dyn>, B> order_assignments_on_host(routing<T, B>& plan, const tensor<index_t, SI, B>& idx,
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
  plan.offsets = group_offsets<B>(shape<dyn>{e + 1});
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

/// The same plan built on the device, in the same order, without the host
/// reading anything when dropless:
///   keys  = idx transposed to (k, T): expert ids slot-major
///   stable sort of (key, j·T + t) by key     -> expert, then slot, then token
///   offsets = exclusive scan of the expert histogram (E + 1 bins, the last empty)
///   token, expert, gate index of each sorted assignment: assignment_layout.
/// With a capacity, rank = position − offsets[expert] is kept when below the
/// capacity, and kept assignments land at the scan of min(count, capacity).
/// Sizing the plan's tensors then needs the kept total on the host: the one
/// read from the device (it waits for the routing to finish). The expert ids
/// are not range-checked here (that would also read them): they come from
/// top_k over the E score columns, so they lie in [0, E) by construction.
template <class T, class B, class SI>
tensor<index_t, shape<dyn>, B> order_assignments_on_device(routing<T, B>& plan, const tensor<index_t, SI, B>& idx,
                                                           std::size_t capacity) {
  using index_tensor = tensor<index_t, shape<dyn>, B>;
  const std::size_t tokens = idx.extent(0), k = idx.extent(1), n = tokens * k, e = plan.experts;
  index_tensor keys(shape<dyn>{n}), sorted_keys(shape<dyn>{n}), sorted_slots(shape<dyn>{n});  // (T·k)
  kernels<B>::transpose_2d(tokens, k, idx.data(), keys.data());
  auto slots = arange<index_t, B>(n);  // j·T + t at slot-major position j·T + t
  kernels<B>::sort_pairs(n, keys.data(), slots.data(), sorted_keys.data(), sorted_slots.data());
  index_tensor counts(shape<dyn>{e + 1}), offsets(shape<dyn>{e + 1});  // (E + 1)
  kernels<B>::histogram(n, keys.data(), e + 1, counts.data());           // bin E: no expert, stays 0
  kernels<B>::exclusive_scan(e + 1, counts.data(), offsets.data());
  index_tensor kept_offsets = offsets;
  std::size_t total = n;
  if (capacity) {
    index_tensor kept(shape<dyn>{e + 1});  // (E + 1) min(count, capacity)
    kernels<B>::map(e + 1, kept.data(), fn::with_scalar<fn::min, index_t>{static_cast<index_t>(capacity)},
                    counts.data());
    kept_offsets = index_tensor(shape<dyn>{e + 1});
    kernels<B>::exclusive_scan(e + 1, kept.data(), kept_offsets.data());
    total = static_cast<std::size_t>(kept_offsets.rows(e, e + 1).template to<cpu>()[0]);  // the one host read
  }
  plan.offsets = kept_offsets;
  plan.dropped = n - total;
  plan.token = index_tensor(shape<dyn>{total});
  plan.expert = index_tensor(shape<dyn>{total});
  index_tensor slot_index(shape<dyn>{total});
  kernels<B>::assignment_layout(n, tokens, k, sorted_keys.data(), sorted_slots.data(), offsets.data(),
                                kept_offsets.data(), capacity, plan.token.data(), plan.expert.data(),
                                slot_index.data());
  return slot_index;
}

/// A router's scores (T, E) and their top k: values (T, k) and expert indices.
template <class VS, class VV, class I>
struct scored_choice {
  VS scores;
  VV values;
  I indices;
};

/// softmax(logits) and its top k from one kernel pass over each row
/// (softmax_top_k_rows: bit for bit the two separate kernels), recorded as the
/// same two tape nodes as softmax then top_k, so the gradients are theirs.
template <class T, class S, class B>
auto softmax_top_k(const var<T, S, B>& logits, std::size_t k) {
  using R = moekit::detail::top_k_shape_t<dyn, S>;
  moekit::detail::check_k(logits.shape(), k);
  const std::size_t rows = logits.extent(0), cols = logits.extent(1);
  const auto rs = R::from_extents(std::array{rows, k}, "top_k_router");
  tensor<T, S, B> probs(logits.shape());  // (T, E)
  tensor<T, R, B> values(rs);             // (T, k)
  tensor<index_t, R, B> indices(rs);      // (T, k)
  kernels<B>::softmax_top_k_rows(rows, cols, k, logits.value().data(), probs.data(), values.data(), indices.data());
  auto scores = record("softmax", probs, [logits, probs](const auto& dy) {
    logits.accumulate(softmax_backward(probs, dy));
  }, logits);
  auto selected = record("top_k", values, [scores, indices](const auto& dy) {
    scores.accumulate(moekit::detail::top_k_backward(scores.shape(), dy, indices));
  }, scores);
  return scored_choice<decltype(scores), decltype(selected), tensor<index_t, R, B>>{scores, selected, indices};
}

/// The assignment order on B: the host's counting sort where the host can
/// read the choice, the device algorithm elsewhere (the same plan).
template <class T, class B, class SI>
tensor<index_t, shape<dyn>, B> order_assignments(routing<T, B>& plan, const tensor<index_t, SI, B>& idx,
                                                 std::size_t capacity) {
  if constexpr (B::host_accessible) return order_assignments_on_host(plan, idx, capacity);
  else return order_assignments_on_device(plan, idx, capacity);
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
    auto [scores, vals, idx] = score_and_select(logits);                               // (T, E), (T, k), (T, k)
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
  // Scores and the top k: softmax fused with the selection, or sigmoid then top_k.
  template <class V>
  auto score_and_select(const V& logits) {
    if (o_.score == score_fn::softmax) return detail::softmax_top_k(logits, k_);
    using choice = decltype(detail::softmax_top_k(logits, k_));
    auto scores = sigmoid(logits);
    auto [vals, idx] = top_k(scores, k_);
    return choice{scores, vals, idx};
  }

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

  // The terms are kept as device scalars (aux_term::value() reads them on
  // demand): routing reads nothing back for them.
  template <class VL, class VS, class SI>
  void add_aux_losses(routing<T, B>& plan, const VL& logits, const VS& scores, const tensor<index_t, SI, B>& idx) {
    auto add = [&](const char* name, double weight, const var<T, scalar_shape, B>& term) {
      plan.aux_terms.push_back({name, weight, term.value()});
      auto weighted = term * static_cast<T>(weight);
      plan.aux_loss = plan.aux_loss.value().defined() ? plan.aux_loss + weighted : weighted;
    };
    if (o_.load_balance_weight > 0)
      add("load_balance", o_.load_balance_weight,
          load_balance_loss(scores, expert_counts(idx, plan.experts), idx.size()));
    if (o_.z_loss_weight > 0) add("z_loss", o_.z_loss_weight, z_loss(logits));
    if (o_.sequence_balance_weight > 0) {
      if (o_.seq_len == 0 || plan.tokens % o_.seq_len != 0)
        throw value_error("top_k_router: sequence_balance_weight needs seq_len dividing the token count " +
                          std::to_string(plan.tokens));
      add("sequence_balance", o_.sequence_balance_weight,
          sequence_balance_loss(scores, sequence_expert_counts(idx, plan.experts, o_.seq_len), o_.seq_len, k_));
    }
  }

  parameter<T, shape<D, E>, B> w_;  // (D, E)
  top_k_options o_;
  std::size_t k_;
  rng noise_;
  bool training_ = true;
};

}  // namespace moekit::moe
