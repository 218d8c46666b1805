// moekit/merge/prune.hpp — structured pruning of the sparse residuals S of
// every compressed bank of a model (merge/low_rank_sparse.hpp), as MC-SMoE
// (LoSparse, PLATON sensitivity) does it:
//
//   importance = |θ ⊙ ∇θ| of S, its EMA  ema = β·ema + (1 − β)·importance  (β = 0.85),
//   score of an output unit (a column of S in moekit's (in, out) layout) = the mean of
//   its ema entries, kept as an EMA of the column means (the same number: the mean is linear),
//   keep ratio ρ(t) = keep_ratio(t, T, w, ρ_f) — cubic from 1 down to ρ_f,
//   ONE global threshold over all units of all S matrices of the model: the
//   ⌊N·(1 − ρ)⌋ lowest-scoring units are zeroed, and pruned units stay pruned.
//
//   merge::pruner prune({.total_steps = 1000, .warmup_steps = 50, .final_ratio = 0.1});
//   for (step ...) {
//     tape t; auto loss = ...; t.backward(loss);
//     opt.step();                          // then prune: ∇S still holds this step's gradient,
//     auto report = prune.step(model);     // and the zeroed units are what the next forward sees
//     opt.zero_grad();
//   }
//   model.experts().pack();                // inference on the kept units only
//
// Scores are computed on the host (one copy of S and ∇S per matrix and step on
// a device backend).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "../autograd/parameter_tree.hpp"
#include "../core/error.hpp"
#include "../moe/slot_map.hpp"
#include "low_rank_sparse.hpp"

namespace moekit::merge {

/// The fraction of S's output units kept at step t (1-based) of T, with w warm-up
/// steps and final ratio ρ_f: 1 for t <= w; ρ_f for t > T − 4w; else
/// ρ_f + (1 − ρ_f)·(1 − (t − w)/(T − 5w))³. value_error unless ρ_f in [0, 1] and T > 5w.
inline double keep_ratio(std::size_t step, std::size_t total, std::size_t warmup, double final_ratio) {
  if (!(final_ratio >= 0.0 && final_ratio <= 1.0))
    throw value_error("keep_ratio: final ratio " + std::to_string(final_ratio) + " outside [0, 1]");
  if (total <= 5 * warmup)
    throw value_error("keep_ratio: " + std::to_string(total) + " total steps need to exceed 5 × " +
                      std::to_string(warmup) + " warm-up steps");
  if (step <= warmup) return 1.0;
  if (step > total - 4 * warmup) return final_ratio;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(total - 5 * warmup);
  const double rest = 1.0 - progress;
  return final_ratio + (1.0 - final_ratio) * rest * rest * rest;
}

/// Folds one step's importance |θ ⊙ ∇θ| of m's S into its unit scores:
/// score[g, o] = β·score[g, o] + (1 − β)·mean_i |S[g, i, o] · ∇S[g, i, o]|.
/// A missing gradient counts as zero.
template <class T, backend B, std::size_t In, std::size_t Out>
void update_importance(compressed_matrix<T, B, In, Out>& m, double beta) {
  if (m.packed()) throw value_error("update_importance: the matrix is packed; prune before packing");
  const std::size_t sets = m.weight_sets(), in = m.in(), out = m.out();
  const auto theta = moekit::detail::to_backend<cpu>(m.s().value());  // (G, in, out)
  const auto& grad_b = m.s().grad();
  auto& score = m.unit_scores();
  std::vector<double> imp(sets * out, 0.0);
  if (grad_b.defined()) {
    const auto grad = moekit::detail::to_backend<cpu>(grad_b);
    for (std::size_t g = 0; g < sets; ++g)
      for (std::size_t i = 0; i < in; ++i) {
        const std::size_t row = (g * in + i) * out;
        for (std::size_t o = 0; o < out; ++o)
          imp[g * out + o] += std::abs(static_cast<double>(theta[row + o]) * static_cast<double>(grad[row + o]));
      }
  }
  for (std::size_t u = 0; u < sets * out; ++u)
    score[u] = beta * score[u] + (1.0 - beta) * imp[u] / static_cast<double>(std::max<std::size_t>(in, 1));
}

struct prune_options {
  std::size_t total_steps = 0;   // T: steps of the fine-tune
  std::size_t warmup_steps = 50;  // w: no pruning for t <= w; final ratio after T − 4w
  double final_ratio = 0.1;      // ρ_f: units of S kept in the end
  double beta = 0.85;            // importance EMA factor
};

/// Kept output units of one S matrix ("blocks.0.experts.w1").
struct matrix_keep {
  std::string name;
  std::size_t units = 0, kept = 0;  // G·out, and how many are still kept
  double ratio() const noexcept { return units ? static_cast<double>(kept) / static_cast<double>(units) : 1.0; }
};

/// What one pruning step did.
struct prune_report {
  std::size_t step = 0;       // t, 1-based
  double target = 1.0;        // ρ(t)
  double threshold = 0.0;     // the ⌊N(1 − ρ)⌋-th lowest score (-inf when nothing is pruned)
  std::size_t units = 0, kept = 0;  // over the whole model
  std::vector<matrix_keep> matrices;
  double ratio() const noexcept { return units ? static_cast<double>(kept) / static_cast<double>(units) : 1.0; }
};

/// Calls visit(path, compressed_matrix&) for every compressed matrix of every
/// bank under `model` ("blocks.0.experts.w1").
template <parameterized M, class V>
void visit_compressed_matrices(M& model, V&& visit) {
  auto each = [&](const std::string& at, auto& layer) {
    if constexpr (requires { layer.sparse_matrices([](std::string_view, auto&) {}); })
      layer.sparse_matrices([&](std::string_view name, auto& m) {
        visit(at.empty() ? std::string(name) : at + "." + std::string(name), m);
      });
  };
  moe::detail::visit_layers(model, each, "");
}

/// The global-threshold pruner of S's output units; one step() per optimizer step.
class pruner {
 public:
  explicit pruner(prune_options o) : o_(o) {
    (void)keep_ratio(1, o_.total_steps, o_.warmup_steps, o_.final_ratio);  // validates the schedule
    if (!(o_.beta >= 0.0 && o_.beta < 1.0)) throw value_error("pruner: beta " + std::to_string(o_.beta) + " outside [0, 1)");
  }

  /// Step t = steps() + 1: folds every S's importance into its scores, then
  /// prunes the lowest units model-wide down to ρ(t), zeroing them in S. Call
  /// after the optimizer step, while the gradients are still there.
  template <parameterized M>
  prune_report step(M& model) {
    const std::size_t t = ++step_;
    prune_report rep;
    rep.step = t;
    rep.target = keep_ratio(t, o_.total_steps, o_.warmup_steps, o_.final_ratio);
    struct unit {
      double score;
      std::uint8_t* alive;
    };
    std::vector<unit> all;
    visit_compressed_matrices(model, [&](const std::string&, auto& m) {
      update_importance(m, o_.beta);
      auto& score = m.unit_scores();
      auto& alive = m.alive();
      for (std::size_t u = 0; u < score.size(); ++u)
        all.push_back({alive[u] ? score[u] : -std::numeric_limits<double>::infinity(), &alive[u]});
    });
    rep.units = all.size();
    const auto n_prune = static_cast<std::size_t>(std::floor(static_cast<double>(all.size()) * (1.0 - rep.target)));
    rep.threshold = -std::numeric_limits<double>::infinity();
    if (n_prune > 0) {
      // The n_prune lowest (ties by position, so the choice is deterministic).
      std::vector<std::size_t> order(all.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      auto lower = [&](std::size_t a, std::size_t b) {
        return all[a].score < all[b].score || (all[a].score == all[b].score && a < b);
      };
      std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n_prune - 1), order.end(), lower);
      rep.threshold = all[order[n_prune - 1]].score;
      for (std::size_t i = 0; i < n_prune; ++i) *all[order[i]].alive = 0;
    }
    visit_compressed_matrices(model, [&](const std::string& name, auto& m) {
      m.apply_mask();
      std::size_t kept = 0;
      for (auto a : m.alive()) kept += a;
      rep.matrices.push_back({name, m.alive().size(), kept});
      rep.kept += kept;
    });
    return rep;
  }

  std::size_t steps() const noexcept { return step_; }
  const prune_options& options() const noexcept { return o_; }

 private:
  prune_options o_;
  std::size_t step_ = 0;
};

}  // namespace moekit::merge
