// moekit/optim/adamw.hpp — Adam and AdamW as torch.optim.Adam / AdamW. They
// differ only in weight decay: Adam adds wd·p to the gradient (L2, so it passes
// through the moments), AdamW shrinks the parameter directly, p ← p·(1 − lr·wd).
//
//   d = g (+ wd·p for Adam)
//   m ← β1·m + (1 − β1)·d          v ← β2·v + (1 − β2)·d²
//   v̂ = max(v̂, v) with amsgrad, else v
//   p ← p (·(1 − lr·wd) for AdamW) − lr/(1 − β1^t) · m / (√v̂ / √(1 − β2^t) + ε)
//
// t is the parameter's own step count. State buffers: 0 = exp_avg (m),
// 1 = exp_avg_sq (v), 2 = max_exp_avg_sq (amsgrad only).
#pragma once

#include <cmath>
#include <string_view>
#include <utility>

#include "optimizer.hpp"

namespace moekit::optim {

/// Options of Adam (Decoupled = false) and AdamW (true); defaults as torch's,
/// whose only difference is AdamW's weight_decay of 1e-2.
template <bool Decoupled>
struct basic_adam_options {
  static constexpr std::string_view name = Decoupled ? "adamw" : "adam";
  double lr = 1e-3;
  std::pair<double, double> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = Decoupled ? 1e-2 : 0.0;
  bool amsgrad = false;

  void validate() const {
    detail::check_lr_and_decay(name, lr, weight_decay);
    detail::check_betas(name, betas);
    detail::check_option(eps >= 0, name, "eps", eps, "must be >= 0");
  }
};
using adam_options = basic_adam_options<false>;
using adamw_options = basic_adam_options<true>;

namespace detail {

/// v ← β2·v + (1 − β2)·(g + wd·p)².
template <class T>
struct adam_second_moment {
  T beta2, wd;
  MOEKIT_HOST_DEVICE T operator()(T v, T g, T p) const {
    const T d = l2_grad(g, p, wd);
    return beta2 * v + (T(1) - beta2) * (d * d);
  }
};

/// p ← decay·p − step_size · m / (√v / √(1 − β2^t) + ε).
template <class T>
struct adam_update {
  T decay, step_size, bias_correction2_sqrt, eps;
  MOEKIT_HOST_DEVICE T operator()(T p, T m, T v) const {
    using std::sqrt;
    return decay * p - step_size * (m / (sqrt(v) / bias_correction2_sqrt + eps));
  }
};

}  // namespace detail

template <class T, bool Decoupled, backend B = cpu>
class basic_adam : public optimizer<T, basic_adam_options<Decoupled>, B> {
  using base = optimizer<T, basic_adam_options<Decoupled>, B>;
  using options = basic_adam_options<Decoupled>;

 public:
  using base::base;

  void step() {
    this->for_each_update([](const parameter_view<T, B>& p, const options& o, param_state<T, B>& s) {
      const std::size_t n = p.value.size();
      T* value = p.value.data();
      const T* grad = p.grad.data();
      const auto [beta1, beta2] = o.betas;
      const T l2 = T(Decoupled ? 0.0 : o.weight_decay);
      T* m = s.buffer(0, n).data();
      T* v = s.buffer(1, n).data();
      kernels<B>::map(n, m, detail::moment<T>{T(beta1), T(1 - beta1), l2}, m, grad, value);
      kernels<B>::map(n, v, detail::adam_second_moment<T>{T(beta2), l2}, v, grad, value);
      const T* v_hat = v;
      if (o.amsgrad) {
        T* v_max = s.buffer(2, n).data();
        kernels<B>::map(n, v_max, fn::max{}, v_max, v);
        v_hat = v_max;
      }
      // Scalars in double, as torch computes them in Python.
      const double t = static_cast<double>(s.step);
      const double bias_correction1 = 1 - std::pow(beta1, t);
      const double bias_correction2 = 1 - std::pow(beta2, t);
      const double decay = Decoupled ? 1 - o.lr * o.weight_decay : 1.0;
      const detail::adam_update<T> update{T(decay), T(o.lr / bias_correction1), T(std::sqrt(bias_correction2)),
                                          T(o.eps)};
      kernels<B>::map(n, value, update, value, m, v_hat);
    });
  }
};

/// Adam: L2 weight decay added to the gradient.
template <class T, backend B = cpu>
using adam = basic_adam<T, false, B>;
/// AdamW: decoupled weight decay, p ← p·(1 − lr·wd) before the Adam step.
template <class T, backend B = cpu>
using adamw = basic_adam<T, true, B>;

}  // namespace moekit::optim
