// moekit/optim/sgd.hpp — stochastic gradient descent as torch.optim.SGD:
//
//   d = g + wd·p                        (L2 weight decay, added to the gradient)
//   b = d on the first step, else μ·b + (1 − dampening)·d
//   d = d + μ·b (Nesterov)  or  d = b   (when μ ≠ 0)
//   p ← p − lr·d
#pragma once

#include <string_view>

#include "optimizer.hpp"

namespace moekit::optim {

struct sgd_options {
  static constexpr std::string_view name = "sgd";
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;

  void validate() const {
    detail::check_lr_and_decay(name, lr, weight_decay);
    detail::check_option(momentum >= 0, name, "momentum", momentum, "must be >= 0");
    detail::check_option(!nesterov || (momentum > 0 && dampening == 0), name, "momentum", momentum,
                         "Nesterov momentum needs momentum > 0 and zero dampening");
  }
};

namespace detail {

/// p ← p − lr·(d + wd·p): plain SGD (d = g), or the momentum step (d = b, wd = 0).
template <class T>
struct sgd_descend {
  T lr, wd;
  MOEKIT_HOST_DEVICE T operator()(T p, T d) const { return p - lr * l2_grad(d, p, wd); }
};

/// p ← p − lr·((g + wd·p) + μ·b): the Nesterov step.
template <class T>
struct sgd_nesterov {
  T lr, wd, momentum;
  MOEKIT_HOST_DEVICE T operator()(T p, T g, T b) const { return p - lr * (l2_grad(g, p, wd) + momentum * b); }
};

}  // namespace detail

template <class T, backend B = cpu>
class sgd : public optimizer<T, sgd_options, B> {
  using base = optimizer<T, sgd_options, B>;

 public:
  using base::base;

  void step() {
    this->for_each_update([](const parameter_view<T, B>& p, const sgd_options& o, param_state<T, B>& s) {
      const std::size_t n = p.value.size();
      T* value = p.value.data();
      const T* grad = p.grad.data();
      const T lr = T(o.lr), wd = T(o.weight_decay);
      if (o.momentum == 0) {
        kernels<B>::map(n, value, detail::sgd_descend<T>{lr, wd}, value, grad);
        return;
      }
      // The buffer starts as zeros, so the first step's μ = 0, scale = 1 makes b = d exactly.
      const bool first = s.step == 1;
      T* buf = s.buffer(0, n).data();
      const detail::moment<T> update{T(first ? 0 : o.momentum), T(first ? 1 : 1 - o.dampening), wd};
      kernels<B>::map(n, buf, update, buf, grad, value);
      if (o.nesterov) kernels<B>::map(n, value, detail::sgd_nesterov<T>{lr, wd, T(o.momentum)}, value, grad, buf);
      else kernels<B>::map(n, value, detail::sgd_descend<T>{lr, T(0)}, value, buf);
    });
  }
};

}  // namespace moekit::optim
