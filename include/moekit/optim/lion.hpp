// moekit/optim/lion.hpp — LION (Chen et al. 2023, "Symbolic Discovery of
// Optimization Algorithms"): the step is the sign of an interpolation between
// momentum and gradient, so every coordinate moves by exactly lr (plus decay).
//
//   u = sign(β1·m + (1 − β1)·g)       (sign(0) = 0)
//   p ← p − lr·(u + wd·p)             (decoupled weight decay)
//   m ← β2·m + (1 − β2)·g
//
// One state buffer: 0 = m. Defaults as the paper: β = (0.9, 0.99); its lr is
// typically 3-10× smaller than AdamW's, and its weight decay as much larger.
#pragma once

#include <string_view>
#include <utility>

#include "optimizer.hpp"

namespace moekit::optim {

struct lion_options {
  static constexpr std::string_view name = "lion";
  double lr = 1e-4;
  std::pair<double, double> betas{0.9, 0.99};
  double weight_decay = 0;

  void validate() const {
    detail::check_lr_and_decay(name, lr, weight_decay);
    detail::check_betas(name, betas);
  }
};

namespace detail {

/// p ← decay·p − lr·sign(β1·m + (1 − β1)·g), decay = 1 − lr·wd.
template <class T>
struct lion_update {
  T lr, decay, beta1;
  MOEKIT_HOST_DEVICE T operator()(T p, T m, T g) const {
    const T c = moment<T>{beta1, T(1) - beta1, T(0)}(m, g, T(0));
    const T sign = T(c > T(0)) - T(c < T(0));
    return decay * p - lr * sign;
  }
};

}  // namespace detail

template <class T, backend B = cpu>
class lion : public optimizer<T, lion_options, B> {
  using base = optimizer<T, lion_options, B>;

 public:
  using base::base;

  void step() {
    this->for_each_update([](const parameter_view<T, B>& p, const lion_options& o, param_state<T, B>& s) {
      const std::size_t n = p.value.size();
      T* value = p.value.data();
      const T* grad = p.grad.data();
      const auto [beta1, beta2] = o.betas;
      T* m = s.buffer(0, n).data();
      // The step reads m before its update: order matters.
      kernels<B>::map(n, value, detail::lion_update<T>{T(o.lr), T(1 - o.lr * o.weight_decay), T(beta1)}, value, m, grad);
      kernels<B>::map(n, m, detail::moment<T>{T(beta2), T(1 - beta2), T(0)}, m, grad, value);
    });
  }
};

}  // namespace moekit::optim
