// moekit/optim/schedule.hpp — learning-rate schedules: callables mapping the
// number of completed steps (0 before the first update) to a factor of each
// group's base learning rate, and a scheduler applying one to an optimizer.
//
//   optim::scheduler sched(opt, optim::cosine_schedule({.total_steps = 1000, .warmup_steps = 100}));
//   for (...) { ...; opt.step(); sched.step(); }   // as torch.optim.lr_scheduler
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <numbers>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "optimizer.hpp"

namespace moekit::optim {

/// A schedule: step -> factor of the base learning rate.
template <class S>
concept schedule = requires(const S& s, std::size_t step) {
  { s(step) } -> std::convertible_to<double>;
};

namespace detail {
/// Throws value_error "<schedule>: <message>" unless ok.
inline void check_schedule(bool ok, const char* schedule, const std::string& message) {
  if (!ok) throw value_error(std::string(schedule) + ": " + message);
}
/// Cosine interpolation from `from` (pct = 0) to `to` (pct = 1), torch's _annealing_cos.
inline double anneal_cos(double from, double to, double pct) {
  return to + (from - to) / 2 * (std::cos(std::numbers::pi * pct) + 1);
}
}  // namespace detail

/// The same factor at every step.
struct constant_schedule {
  double factor = 1.0;
  double operator()(std::size_t) const noexcept { return factor; }
};

/// Linear warm-up, then constant 1: factor(s) = start + (1 − start)·s/warmup
/// for s < warmup (torch LinearLR; with start 0 as HuggingFace's warm-up, so
/// the first update has lr 0). warmup_steps = 0 means no warm-up.
class linear_warmup {
 public:
  explicit linear_warmup(std::size_t warmup_steps, double start_factor = 0.0)
      : warmup_(warmup_steps), start_(start_factor) {
    detail::check_schedule(start_factor >= 0 && start_factor <= 1, "linear_warmup",
                           "start_factor = " + std::to_string(start_factor) + " must be in [0, 1]");
  }
  double operator()(std::size_t step) const noexcept {
    if (step >= warmup_) return 1.0;
    return start_ + (1 - start_) * static_cast<double>(step) / static_cast<double>(warmup_);
  }
  std::size_t warmup_steps() const noexcept { return warmup_; }

 private:
  std::size_t warmup_;
  double start_;
};

struct cosine_options {
  std::size_t total_steps = 0;
  std::size_t warmup_steps = 0;
  double min_factor = 0.0;    // reached at total_steps and kept after
  double start_factor = 0.0;  // of the warm-up
};

/// Linear warm-up to 1, then half a cosine down to min_factor at total_steps
/// (HuggingFace's cosine schedule with a floor): for warmup <= s < total,
/// factor = min + (1 − min)·(1 + cos(π·(s − warmup)/(total − warmup)))/2.
class cosine_schedule {
 public:
  explicit cosine_schedule(const cosine_options& o) : o_(o), warmup_(check(o).warmup_steps, o.start_factor) {}
  double operator()(std::size_t step) const noexcept {
    if (step < o_.warmup_steps) return warmup_(step);
    if (step >= o_.total_steps) return o_.min_factor;
    const double pct = static_cast<double>(step - o_.warmup_steps) / static_cast<double>(o_.total_steps - o_.warmup_steps);
    return detail::anneal_cos(1.0, o_.min_factor, pct);
  }

 private:
  static const cosine_options& check(const cosine_options& o) {
    detail::check_schedule(o.total_steps > 0, "cosine_schedule", "total_steps must be > 0");
    detail::check_schedule(o.warmup_steps <= o.total_steps, "cosine_schedule",
                           "warmup_steps = " + std::to_string(o.warmup_steps) + " exceeds total_steps = " +
                               std::to_string(o.total_steps));
    detail::check_schedule(o.min_factor >= 0 && o.min_factor <= 1, "cosine_schedule",
                           "min_factor = " + std::to_string(o.min_factor) + " must be in [0, 1]");
    return o;
  }

  cosine_options o_;
  linear_warmup warmup_;
};

struct one_cycle_options {
  std::size_t total_steps = 0;
  double pct_start = 0.3;         // fraction of the steps spent rising
  double div_factor = 25;         // initial lr = max lr / div_factor
  double final_div_factor = 1e4;  // final lr = initial lr / final_div_factor
};

/// torch.optim.lr_scheduler.OneCycleLR with anneal_strategy='cos',
/// three_phase=False, the base lr as max_lr: cosine from 1/div up to 1 at step
/// pct_start·total − 1, then down to 1/(div·final_div) at step total − 1.
/// Momentum is not cycled (cycle_momentum=False). As torch, a step beyond
/// total_steps throws.
class one_cycle {
 public:
  explicit one_cycle(const one_cycle_options& o) : o_(check(o)) {}
  double operator()(std::size_t step) const {
    detail::check_schedule(step <= o_.total_steps, "one_cycle",
                           "step " + std::to_string(step) + " is beyond total_steps = " + std::to_string(o_.total_steps));
    const double initial = 1 / o_.div_factor, final = initial / o_.final_div_factor;
    const double peak_step = o_.pct_start * static_cast<double>(o_.total_steps) - 1;
    const double last_step = static_cast<double>(o_.total_steps) - 1;
    const double s = static_cast<double>(step);
    if (s <= peak_step) return detail::anneal_cos(initial, 1.0, phase_pct(s, 0, peak_step));
    return detail::anneal_cos(1.0, final, phase_pct(s, peak_step, last_step));
  }

 private:
  // Where s lies in [begin, end] (torch's phase percentage); a phase of zero
  // length is complete (torch divides by zero there).
  static double phase_pct(double s, double begin, double end) { return end > begin ? (s - begin) / (end - begin) : 1.0; }

  static const one_cycle_options& check(const one_cycle_options& o) {
    detail::check_schedule(o.total_steps > 0, "one_cycle", "total_steps must be > 0");
    detail::check_schedule(o.pct_start >= 0 && o.pct_start <= 1, "one_cycle",
                           "pct_start = " + std::to_string(o.pct_start) + " must be in [0, 1]");
    detail::check_schedule(o.div_factor > 0 && o.final_div_factor > 0, "one_cycle",
                           "div_factor and final_div_factor must be > 0");
    return o;
  }

  one_cycle_options o_;
};

/// Applies a schedule to an optimizer as torch's LRScheduler: factor(0) at
/// construction, factor(k) after the k-th call to step() (call it after opt.step()).
template <class Opt, schedule S>
class scheduler {
 public:
  scheduler(Opt& opt, S s) : opt_(&opt), schedule_(std::move(s)) { apply(); }

  void step() {
    ++step_;
    apply();
  }
  /// Calls to step() so far: the step the current factor belongs to.
  std::size_t last_step() const noexcept { return step_; }
  double factor() const { return schedule_(step_); }

 private:
  void apply() { set_lr_factor(*opt_, factor()); }

  Opt* opt_;
  S schedule_;
  std::size_t step_ = 0;
};

}  // namespace moekit::optim
