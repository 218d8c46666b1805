// moekit/optim/optimizer.hpp — what every optimizer shares: parameter groups
// (each with its own options and base learning rate), per-parameter state
// allocated on the first step, step counts, zero_grad and gradient scaling.
// The update rules follow torch.optim exactly; each optimizer header adds only
// its options and its step().
//
// The optimizer holds flat views of the parameters (parameter_views(model)),
// which share their storage: a step writes straight into the parameters.
//
// Gradient accumulation. Parameter gradients add up across backward passes
// until zero_grad(), so k micro-batches make one large batch:
//
//   opt.zero_grad();
//   for (auto& micro : micro_batches) {   // k of them
//     moekit::tape t;
//     t.backward(loss(model, micro));     // grads += d(loss_i)/dp
//   }
//   optim::scale_grads(opt, 1.0 / k);     // grads = d(mean_i loss_i)/dp
//   opt.step();
//
// which is one step on the mean of the k losses (equal micro-batch sizes).
//
// Saving and loading the state (step counts, buffers) in safetensors files is
// io/optimizer_state.hpp: optim/ sits below io/ and knows no file format.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../autograd/parameter_tree.hpp"
#include "../backend/functors.hpp"
#include "../core/error.hpp"
#include "../core/host_device.hpp"
#include "../tensor/ops/creation.hpp"
#include "../tensor/ops/elementwise.hpp"

namespace moekit::optim {

/// One parameter's optimizer state: its own step count (Adam's bias correction
/// uses it) and buffers (momentum, exp_avg, ...), zeros until first written.
template <class T, backend B = cpu>
struct param_state {
  std::size_t step = 0;
  std::vector<tensor<T, shape<dyn>, B>> buffers;  // each (size of the parameter)

  /// Buffer k for a parameter of n elements, allocated as zeros on first use.
  const tensor<T, shape<dyn>, B>& buffer(std::size_t k, std::size_t n) {
    if (buffers.size() <= k) buffers.resize(k + 1);
    if (!buffers[k].defined()) buffers[k] = zeros<T, B>(shape<dyn>{n});
    return buffers[k];
  }
};

/// Parameters updated with one set of options. `options.lr` is the current
/// learning rate; `base_lr` the one the group was added with, which schedules scale.
template <class T, class Options, backend B = cpu>
struct param_group {
  std::vector<parameter_view<T, B>> params;
  Options options;
  double base_lr = 0;
};

/// The shared part of sgd, adam, adamw and lion. Options is an aggregate with
/// a `double lr`, a `static constexpr std::string_view name` (for messages)
/// and `validate()`, which throws value_error naming the optimizer.
template <class T, class Options, backend B = cpu>
class optimizer {
 public:
  using value_type = T;
  using backend_type = B;
  using options_type = Options;
  using view_type = parameter_view<T, B>;
  using group_type = param_group<T, Options, B>;
  using state_type = param_state<T, B>;

  /// Parameters and options for one group, for construction from several groups.
  struct group_spec {
    std::vector<view_type> params;
    Options options;
  };

  /// One group of the given parameters.
  explicit optimizer(std::vector<view_type> params, const Options& o = {}) { add_group(std::move(params), o); }
  /// One group of every parameter of element type T under `model`.
  template <parameterized M>
  explicit optimizer(M& model, const Options& o = {}) : optimizer(parameter_views<T, B>(model), o) {}
  /// Several groups, in order.
  explicit optimizer(std::vector<group_spec> groups) {
    for (auto& g : groups) add_group(std::move(g.params), g.options);
  }

  // Copies would share state buffers with the original: not allowed.
  optimizer(const optimizer&) = delete;
  optimizer& operator=(const optimizer&) = delete;
  optimizer(optimizer&&) noexcept = default;
  optimizer& operator=(optimizer&&) noexcept = default;

  /// Adds a group; a parameter may belong to one group only (as in torch).
  void add_group(std::vector<view_type> params, const Options& o) {
    o.validate();
    if (params.empty()) throw value_error(std::string(Options::name) + ": empty parameter group");
    std::unordered_set<const T*> added;  // owned_ changes only if the whole group is accepted
    for (const auto& p : params)
      if (owned_.contains(p.value.data()) || !added.insert(p.value.data()).second)
        throw value_error(std::string(Options::name) + ": parameter '" + p.name + "' appears in more than one group");
    owned_.insert(added.begin(), added.end());
    state_.emplace_back(params.size());
    groups_.push_back({std::move(params), o, o.lr});
  }

  const std::vector<group_type>& groups() const noexcept { return groups_; }
  const Options& options(std::size_t g) const { return groups_.at(g).options; }
  /// Replaces group g's options (e.g. weight decay mid-training); their lr becomes the base lr.
  void set_options(std::size_t g, const Options& o) {
    o.validate();
    groups_.at(g).options = o;
    groups_[g].base_lr = o.lr;
  }

  double lr(std::size_t g) const { return groups_.at(g).options.lr; }
  double base_lr(std::size_t g) const { return groups_.at(g).base_lr; }
  /// Sets group g's current learning rate (its base stays).
  void set_lr(std::size_t g, double lr) {
    Options o = groups_.at(g).options;
    o.lr = lr;
    o.validate();
    groups_[g].options = o;
  }

  /// Calls f(view) for every parameter, group by group.
  template <class F>
  void for_each_param(F&& f) const {
    for (const auto& g : groups_)
      for (const auto& p : g.params) f(p);
  }

  /// Zeroes every gradient (in place: the views stay valid).
  void zero_grad() const {
    for_each_param([](const view_type& p) {
      if (p.grad.defined()) fill(p.grad, T(0));
    });
  }

  /// Calls to step() so far.
  std::size_t steps() const noexcept { return steps_; }
  /// The state of parameter i of group g (empty buffers before its first step).
  const state_type& state(std::size_t g, std::size_t i) const { return state_.at(g).at(i); }

  /// Calls f(view, state) for every parameter, group by group: the order in
  /// which restore_state() takes the states back. Checkpoints
  /// (io/optimizer_state.hpp) write the state through this.
  template <class F>
  void for_each_state(F&& f) const {
    for (std::size_t g = 0; g < groups_.size(); ++g)
      for (std::size_t i = 0; i < groups_[g].params.size(); ++i) f(groups_[g].params[i], state_[g][i]);
  }

  /// Replaces the whole state: the step count and one state per parameter, in
  /// for_each_state() order (what a checkpoint reader rebuilt). All or
  /// nothing: value_error when the number of states differs from the number
  /// of parameters, shape_error naming the parameter when a buffer's size
  /// differs from its parameter's; then nothing is changed.
  void restore_state(std::size_t steps, std::vector<state_type> states) {
    const std::string op = std::string(Options::name) + ": restore_state";
    std::size_t n = 0;
    for (const auto& g : groups_) n += g.params.size();
    if (states.size() != n)
      throw value_error(op + ": " + std::to_string(states.size()) + " parameter states for " + std::to_string(n) +
                        " parameters");
    auto next = states.begin();
    for_each_state([&](const view_type& p, const state_type&) {
      const state_type& s = *next++;
      for (std::size_t k = 0; k < s.buffers.size(); ++k)
        if (s.buffers[k].defined() && s.buffers[k].size() != p.value.size())
          throw shape_error(op + ": buffer " + std::to_string(k) + " of parameter '" + p.name + "' has " +
                            std::to_string(s.buffers[k].size()) + " elements, the parameter " +
                            std::to_string(p.value.size()));
    });
    next = states.begin();
    for (auto& group : state_)
      for (auto& s : group) s = std::move(*next++);
    steps_ = steps;
  }

  /// Takes over the state of `from`, an optimizer of the same kind on any
  /// backend (e.g. after nn::copy_state moved the model to the GPU): step
  /// counts, buffers (copied to this optimizer's backend) and each group's
  /// options and base lr, so the next step() continues `from`'s run exactly.
  /// The groups must list the same parameters (names and sizes) in the same
  /// order; value_error / shape_error naming the parameter otherwise, and then
  /// nothing is changed.
  template <backend B2>
  void copy_state_from(const optimizer<T, Options, B2>& from) {
    const std::string op = std::string(Options::name) + ": copy_state";
    if (from.groups_.size() != groups_.size())
      throw value_error(op + ": " + std::to_string(from.groups_.size()) + " parameter groups in the source, " +
                        std::to_string(groups_.size()) + " here");
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      const auto& src = from.groups_[g].params;
      const auto& dst = groups_[g].params;
      if (src.size() != dst.size())
        throw value_error(op + ": group " + std::to_string(g) + " has " + std::to_string(src.size()) +
                          " parameters in the source, " + std::to_string(dst.size()) + " here");
      for (std::size_t i = 0; i < dst.size(); ++i) {
        if (src[i].name != dst[i].name)
          throw value_error(op + ": parameter '" + dst[i].name + "' (group " + std::to_string(g) + ", position " +
                            std::to_string(i) + ") is '" + src[i].name + "' in the source");
        if (src[i].value.size() != dst[i].value.size())
          throw shape_error(op + ": parameter '" + dst[i].name + "' has " + std::to_string(src[i].value.size()) +
                            " elements in the source, " + std::to_string(dst[i].value.size()) + " here");
      }
    }
    std::vector<std::vector<state_type>> state(from.state_.size());
    for (std::size_t g = 0; g < state.size(); ++g)
      for (const auto& s : from.state_[g]) {
        state_type& c = state[g].emplace_back();
        c.step = s.step;
        for (const auto& b : s.buffers) c.buffers.push_back(b.defined() ? moekit::detail::copy_to_backend<B>(b) : tensor<T, shape<dyn>, B>{});
      }
    state_ = std::move(state);
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      groups_[g].options = from.groups_[g].options;
      groups_[g].base_lr = from.groups_[g].base_lr;
    }
    steps_ = from.steps_;
  }

 protected:
  ~optimizer() = default;

  /// The body of every step(): advances the step counts and calls
  /// update(view, options, state) for each parameter that has a gradient.
  template <class F>
  void for_each_update(F&& update) {
    ++steps_;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      for (std::size_t i = 0; i < groups_[g].params.size(); ++i) {
        const view_type& p = groups_[g].params[i];
        if (!p.grad.defined()) continue;  // torch skips parameters without .grad
        state_type& s = state_[g][i];
        ++s.step;
        update(p, groups_[g].options, s);
      }
    }
  }

 private:
  std::vector<group_type> groups_;
  std::vector<std::vector<state_type>> state_;  // [group][parameter], parallel to groups_
  std::unordered_set<const T*> owned_;          // parameters already in a group
  std::size_t steps_ = 0;

  template <class, class, backend>
  friend class optimizer;
};

/// Copies the optimizer state of `from` into `to` (same optimizer kind, same
/// parameters, any two backends): see optimizer::copy_state_from.
template <class T, class O, class BF, class BT>
void copy_state(const optimizer<T, O, BF>& from, optimizer<T, O, BT>& to) {
  to.copy_state_from(from);
}

/// Sets every group's learning rate to factor × its base learning rate.
template <class T, class O, class B>
void set_lr_factor(optimizer<T, O, B>& opt, double factor) {
  for (std::size_t g = 0; g < opt.groups().size(); ++g) opt.set_lr(g, opt.base_lr(g) * factor);
}

namespace detail {
/// grad ← factor·grad for one parameter (no-op without a gradient).
template <class T, class B>
void scale_grad(const parameter_view<T, B>& p, double factor) {
  if (p.grad.defined()) kernels<B>::map(p.grad.size(), p.grad.data(), fn::with_scalar<fn::mul, T>{T(factor)}, p.grad.data());
}
}  // namespace detail

/// Multiplies every gradient by `factor` (gradient accumulation: 1/k).
template <class T, class B>
void scale_grads(const std::vector<parameter_view<T, B>>& views, double factor) {
  for (const auto& p : views) detail::scale_grad(p, factor);
}
template <class T, class O, class B>
void scale_grads(const optimizer<T, O, B>& opt, double factor) {
  opt.for_each_param([&](const parameter_view<T, B>& p) { detail::scale_grad(p, factor); });
}

/// Splits views into (those where pred(view) holds, the rest), keeping order:
/// e.g. biases and norm weights (`p.extents.size() < 2`) into a group without weight decay.
template <class T, class B, class Pred>
std::pair<std::vector<parameter_view<T, B>>, std::vector<parameter_view<T, B>>> split_groups(
    std::vector<parameter_view<T, B>> views, Pred pred) {
  std::pair<std::vector<parameter_view<T, B>>, std::vector<parameter_view<T, B>>> out;
  for (auto& p : views) (pred(std::as_const(p)) ? out.first : out.second).push_back(std::move(p));
  return out;
}

namespace detail {

/// Throws value_error "<optimizer>: <what> = <value>: <rule>" unless ok.
inline void check_option(bool ok, std::string_view optimizer, const char* what, double value, const char* rule) {
  if (!ok)
    throw value_error(std::string(optimizer) + ": " + what + " = " + std::to_string(value) + ": " + rule);
}
/// The checks torch makes on lr and weight_decay (NaN fails them too).
inline void check_lr_and_decay(std::string_view optimizer, double lr, double weight_decay) {
  check_option(lr >= 0, optimizer, "lr", lr, "must be >= 0");
  check_option(weight_decay >= 0, optimizer, "weight_decay", weight_decay, "must be >= 0");
}
/// Betas in [0, 1), as torch requires.
inline void check_betas(std::string_view optimizer, std::pair<double, double> betas) {
  check_option(betas.first >= 0 && betas.first < 1, optimizer, "betas.first", betas.first, "must be in [0, 1)");
  check_option(betas.second >= 0 && betas.second < 1, optimizer, "betas.second", betas.second, "must be in [0, 1)");
}

/// g + wd·p: the gradient with L2 weight decay (torch's `grad.add(param, alpha=wd)`).
template <class T>
MOEKIT_HOST_DEVICE T l2_grad(T g, T p, T wd) {
  return g + wd * p;
}

/// m ← decay·m + scale·(g + wd·p): SGD's momentum buffer, Adam's first and
/// LION's momentum (the latter two with wd = 0 or Adam's L2 term).
template <class T>
struct moment {
  T decay, scale, wd;
  MOEKIT_HOST_DEVICE T operator()(T m, T g, T p) const { return decay * m + scale * l2_grad(g, p, wd); }
};

}  // namespace detail
}  // namespace moekit::optim
